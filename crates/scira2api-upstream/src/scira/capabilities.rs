//! What a Scira provider (the web endpoint and the official API alike) can honour of an OpenAI
//! chat request. Scira takes the conversation and answers in text: it has no tools the client
//! defines, no output format, no sampling knobs, one choice.
//!
//! * [`refuse`] — what the client *requires* and Scira cannot do is a 400 naming the `param`
//!   and the provider, before any request is sent: `tool_choice` `required` or a named
//!   function, `response_format` `json_schema` or `json_object` (Scira cannot be held to a
//!   format, and checking the text afterwards would turn a miss into a late failure), `n` > 1,
//!   `logprobs`, audio output.
//! * [`dropped`] — what is only offered or hinted and is therefore dropped: `tools` and
//!   `tool_choice` `auto`/`none`, `temperature`, `top_p`, `max_tokens`, `stop`, penalties, `seed`
//!   and every other field Scira does not read, for `x-dropped-params`.

use scira2api_types::{ChatRequest, Error};
use serde_json::Value;

/// Scira's search groups (`lib/search/group-config.ts` at 7215d530, with `buddy`). Any other
/// `group` gets Scira's 200 with an in-stream error, after it has spent the quota.
pub const SCIRA_GROUPS: &[&str] = &[
    "web",
    "x",
    "academic",
    "youtube",
    "spotify",
    "reddit",
    "github",
    "stocks",
    "chat",
    "extreme",
    "memory",
    "crypto",
    "code",
    "connectors",
    "mcp",
    "multi-agent",
    "prediction",
    "canvas",
    "buddy",
];

/// The models Scira serves without a signed-in session.
pub const SCIRA_ANONYMOUS_MODELS: &[&str] = &[
    "scira-default",
    "scira-qwen-32b",
    "scira-qwen-32b-thinking",
    "scira-qwen-4b",
    "scira-nemotron-3-super",
    "scira-trinity-large",
    "scira-gemini-3.1-flash-lite",
    "scira-step-3.5-flash",
];

/// Groups that need a signed-in session (Scira answers 401 to anonymous requests).
const SIGNED_IN_GROUPS: &[&str] = &["extreme", "mcp"];

/// Checks, before anything is sent, what Scira would only reject after it counted the request
/// against the anonymous quota (25 per 7 days per IP): an unknown group, and without a
/// session (`signed_in` false) a model or group that needs one.
pub(crate) fn check_session(model: &str, group: &str, signed_in: bool) -> Result<(), Error> {
    if !SCIRA_GROUPS.contains(&group) {
        return Err(Error::Internal(format!(
            "SCIRA_GROUP `{group}` is not one of Scira's groups ({}); nothing was sent",
            SCIRA_GROUPS.join(", ")
        )));
    }
    if signed_in {
        return Ok(());
    }
    let refuse = |message: String| Error::Upstream {
        status: 403,
        kind: "permission_error",
        code: "scira_sign_in_required",
        message,
        retry_after: None,
        retryable: false,
    };
    if !SCIRA_ANONYMOUS_MODELS.contains(&model) {
        return Err(refuse(format!(
            "Scira serves `{model}` only to a signed-in session (set SCIRA_COOKIE); without one the models are {}. Nothing was sent, so no quota was spent",
            SCIRA_ANONYMOUS_MODELS.join(", ")
        )));
    }
    if SIGNED_IN_GROUPS.contains(&group) {
        return Err(refuse(format!(
            "Scira's `{group}` group needs a signed-in session (set SCIRA_COOKIE). Nothing was sent, so no quota was spent"
        )));
    }
    Ok(())
}

/// The chat fields a Scira provider reads (or that cost nothing to ignore: `n: 1`,
/// `logprobs: false`, text-only `modalities`, `response_format: text`, `stream_options`).
const READ: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "web_search_options",
    "n",
    "logprobs",
    "modalities",
    "response_format",
    "mock",
];

fn unsupported(param: &str, provider: &str, what: &str) -> Error {
    Error::InvalidRequest {
        message: format!("{param}: {what} (provider `{provider}`, a Scira upstream)"),
        param: Some(param.to_owned()),
        code: Some("unsupported_parameter"),
    }
}

fn field(req: &ChatRequest, key: &str) -> Option<Value> {
    req.object()
        .get::<Value>(key)
        .and_then(Result::ok)
        .filter(|v| !v.is_null())
}

/// The 400 for what `req` requires and Scira cannot do (see the module docs).
pub(crate) fn refuse(req: &ChatRequest, provider: &str) -> Result<(), Error> {
    if let Some(c) = field(req, "tool_choice") {
        let forced = match &c {
            Value::String(s) => s == "required",
            Value::Object(_) => true,
            _ => false,
        };
        if forced {
            return Err(unsupported(
                "tool_choice",
                provider,
                "Scira cannot call the client's tools, so a required tool call cannot be honoured",
            ));
        }
    }
    if let Some(kind) =
        field(req, "response_format").and_then(|f| f["type"].as_str().map(str::to_owned))
    {
        if kind != "text" {
            return Err(unsupported(
                "response_format",
                provider,
                &format!("Scira answers in free text and cannot be held to `{kind}`"),
            ));
        }
    }
    if field(req, "n")
        .and_then(|n| n.as_u64())
        .is_some_and(|n| n > 1)
    {
        return Err(unsupported(
            "n",
            provider,
            "Scira answers one choice per request",
        ));
    }
    if field(req, "logprobs") == Some(Value::Bool(true)) {
        return Err(unsupported(
            "logprobs",
            provider,
            "Scira reports no log probabilities",
        ));
    }
    let audio = field(req, "modalities")
        .and_then(|m| m.as_array().map(|a| a.iter().any(|x| x == "audio")))
        .unwrap_or(false);
    if audio || field(req, "audio").is_some() {
        return Err(unsupported(
            "modalities",
            provider,
            "Scira answers in text only",
        ));
    }
    Ok(())
}

/// The fields of `req` a Scira provider accepts without effect, in the request's order.
pub(crate) fn dropped(req: &ChatRequest) -> Vec<String> {
    let obj = req.object();
    obj.keys()
        .filter(|k| !READ.contains(k) && obj.raw(k).is_some_and(|v| v != "null"))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(extra: &str) -> ChatRequest {
        ChatRequest::parse(Bytes::from(format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}]{extra}}}"#
        )))
        .unwrap()
    }

    #[test]
    fn requirements_are_refused_naming_the_param_and_the_provider() {
        for (extra, param) in [
            (
                r#","tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required""#,
                "tool_choice",
            ),
            (
                r#","tool_choice":{"type":"function","function":{"name":"f"}}"#,
                "tool_choice",
            ),
            (
                r#","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{}}}"#,
                "response_format",
            ),
            (
                r#","response_format":{"type":"json_object"}"#,
                "response_format",
            ),
            (r#","n":3"#, "n"),
            (r#","logprobs":true"#, "logprobs"),
            (r#","modalities":["text","audio"]"#, "modalities"),
        ] {
            let e = refuse(&req(extra), "scira").unwrap_err();
            assert_eq!((e.status(), e.param()), (400, Some(param)), "{extra}");
            assert!(e.to_string().contains("provider `scira`"), "{e}");
        }
        for ok in [
            r#","tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto""#,
            r#","response_format":{"type":"text"},"n":1,"logprobs":false,"tool_choice":null"#,
        ] {
            assert!(refuse(&req(ok), "scira").is_ok(), "{ok}");
        }
    }

    #[test]
    fn anonymous_requests_are_checked_before_they_spend_quota() {
        assert!(check_session("scira-default", "chat", false).is_ok());
        assert!(check_session("scira-default", "buddy", false).is_ok());
        let e = check_session("scira-grok-4", "chat", false).unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (403, Some("scira_sign_in_required"))
        );
        assert!(check_session("scira-grok-4", "chat", true).is_ok());
        let e = check_session("scira-default", "extreme", false).unwrap_err();
        assert_eq!(e.status(), 403);
        let e = check_session("scira-default", "nope", true).unwrap_err();
        assert_eq!(e.status(), 500);
    }

    #[test]
    fn hints_are_named_as_dropped() {
        let r = req(
            r#","temperature":0.2,"tools":[],"tool_choice":"auto","max_tokens":5,"stream_options":{"include_usage":true},"user":null,"n":1,"x_vendor":1"#,
        );
        assert_eq!(
            dropped(&r),
            [
                "temperature",
                "tools",
                "tool_choice",
                "max_tokens",
                "x_vendor"
            ]
        );
        assert!(dropped(&req("")).is_empty());
    }
}
