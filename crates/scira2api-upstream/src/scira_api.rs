//! Scira's official API (`https://api.scira.ai`, `PROVIDER=scira-api`): one POST per model,
//! JSON answers, the key as `x-api-key`, a daily quota per key.
//!
//! | model          | endpoint        | body                                   | answer                 |
//! |----------------|-----------------|----------------------------------------|------------------------|
//! | `scira-search` | `/api/search`   | `{"messages":[{"role":"user",…}]}`      | `{"text","sources"}`   |
//! | `scira-x`      | `/api/xsearch`  | `{"query","username"?}`                | `{"text","sources"}`   |
//! | `scira-reddit` | `/api/reddit`   | `{"query"}`                            | `{"text","sources"}`   |
//! | `scira-people` | `/api/people`   | `{"query"}`                            | `{"profile":{…}}`      |
//!
//! The API takes one user message: a chat history is folded into it (instructions and earlier
//! turns as context before the question); the other endpoints take the last user message as
//! their `query` (and `scira-x` the request's `username` field, a documented extension). It
//! does not stream and reports no usage: a `stream: true` request gets the finished answer as a
//! proper chat stream, and usage is estimated by the gateway (and marked).

use crate::config::UpstreamConfig;
use crate::errors::describe_body;
use awc::http::header::HeaderMap;
use bytes::Bytes;
use scira2api_types::{ChunkEncoder, Completion, Content, ContentPart, Error, Message, cite};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The default model table: the four endpoints by name (`MODEL_MAPPINGS` can rename them).
pub const SCIRA_API_MAPPINGS: &[(&str, &str)] = &[
    ("scira-search", "scira-search"),
    ("scira-x", "scira-x"),
    ("scira-reddit", "scira-reddit"),
    ("scira-people", "scira-people"),
];

/// One of the API's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Search,
    X,
    Reddit,
    People,
}

impl Endpoint {
    /// The endpoint a model id names.
    pub(crate) fn of(model: &str) -> Result<Endpoint, Error> {
        Ok(match model {
            "scira-search" => Endpoint::Search,
            "scira-x" => Endpoint::X,
            "scira-reddit" => Endpoint::Reddit,
            "scira-people" => Endpoint::People,
            other => return Err(Error::ModelNotFound(other.to_owned())),
        })
    }

    /// Its path under the base URL.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::Search => "/api/search",
            Endpoint::X => "/api/xsearch",
            Endpoint::Reddit => "/api/reddit",
            Endpoint::People => "/api/people",
        }
    }
}

fn text_of(m: &Message) -> String {
    match &m.content {
        Some(Content::Text(t)) => t.clone(),
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
        None => String::new(),
    }
}

/// A chat history as the one user message `/api/search` takes: the instructions, then the
/// earlier turns as context, then the last user message; just that message when it is alone.
pub(crate) fn fold(messages: &[Message]) -> Result<String, Error> {
    let last = messages
        .iter()
        .rposition(|m| m.role == "user")
        .ok_or_else(|| Error::invalid("messages: a user message is required", Some("messages")))?;
    let question = text_of(&messages[last]);
    let mut instructions = Vec::new();
    let mut turns = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if i == last {
            continue;
        }
        let t = text_of(m);
        if t.trim().is_empty() {
            continue;
        }
        match m.role.as_str() {
            "system" | "developer" => instructions.push(t),
            "assistant" => turns.push(format!("Assistant: {t}")),
            "tool" => turns.push(format!("Tool result: {t}")),
            _ => turns.push(format!("User: {t}")),
        }
    }
    if instructions.is_empty() && turns.is_empty() {
        return Ok(question);
    }
    let mut out = String::new();
    if !instructions.is_empty() {
        out.push_str(&instructions.join("\n\n"));
        out.push_str("\n\n");
    }
    if !turns.is_empty() {
        out.push_str("Conversation so far:\n");
        out.push_str(&turns.join("\n"));
        out.push_str("\n\n");
    }
    out.push_str(&question);
    Ok(out)
}

/// The request body for `endpoint`.
pub(crate) fn body(
    endpoint: Endpoint,
    messages: &[Message],
    username: Option<&str>,
) -> Result<Bytes, Error> {
    let v = match endpoint {
        Endpoint::Search => json!({"messages": [{"role": "user", "content": fold(messages)?}]}),
        _ => {
            let query = messages
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .map(text_of)
                .filter(|q| !q.trim().is_empty())
                .ok_or_else(|| {
                    Error::invalid(
                        "messages: the last user message is the query and must have text",
                        Some("messages"),
                    )
                })?;
            match (endpoint, username) {
                (Endpoint::X, Some(u)) => json!({"query": query, "username": u}),
                _ => json!({"query": query}),
            }
        }
    };
    Ok(Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    sources: Vec<Value>,
    #[serde(default)]
    profile: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

/// A source as the API lists it: a URL string (or an object with `url` and `title`).
fn source(v: &Value) -> Option<(String, Option<String>)> {
    match v {
        Value::String(u) => Some((u.clone(), None)),
        Value::Object(o) => Some((
            o.get("url")?.as_str()?.to_owned(),
            o.get("title").and_then(Value::as_str).map(str::to_owned),
        )),
        _ => None,
    }
}

/// A `/api/people` profile as a short markdown answer and its links as sources.
fn profile(p: &Value) -> (String, Vec<(String, Option<String>)>) {
    let field = |k: &str| p.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let mut text = String::new();
    if let Some(name) = field("name") {
        text.push_str(&format!("**{name}**\n\n"));
    }
    if let Some(bio) = field("bio") {
        text.push_str(bio);
        text.push_str("\n\n");
    }
    let mut sources = Vec::new();
    for (k, label) in [
        ("x", "X"),
        ("linkedin", "LinkedIn"),
        ("github", "GitHub"),
        ("website", "Website"),
    ] {
        if let Some(url) = field(k) {
            text.push_str(&format!("- {label}: [{url}]({url})\n"));
            sources.push((url.to_owned(), Some(label.to_owned())));
        }
    }
    (text.trim_end().to_owned(), sources)
}

/// The API's JSON answer as one completion (citations from `sources` when `citing`).
pub(crate) fn completion(body: &[u8], citing: bool) -> Result<Completion, Error> {
    let a: Answer = serde_json::from_slice(body).map_err(|_| {
        Error::upstream(format!(
            "the Scira API answered 200 with {} instead of its JSON answer",
            describe_body(body)
        ))
    })?;
    if let Some(e) = a.error.filter(|e| !e.is_null()) {
        let text = e.as_str().map_or_else(|| e.to_string(), str::to_owned);
        return Err(Error::upstream_status(
            502,
            "upstream_error",
            format!("the Scira API could not answer: {text}"),
        ));
    }
    let (content, sources) = match (a.text, a.profile) {
        (Some(t), _) => (t, a.sources.iter().filter_map(source).collect::<Vec<_>>()),
        (None, Some(p)) => profile(&p),
        (None, None) => {
            return Err(Error::upstream(
                "the Scira API answered 200 without `text` or `profile`",
            ));
        }
    };
    Ok(Completion {
        annotations: if citing {
            cite(&content, &sources)
        } else {
            Vec::new()
        },
        content,
        reasoning_content: None,
        finish_reason: "stop".to_owned(),
        usage: None,
    })
}

/// Content chunks a finished answer is streamed in.
const STREAM_PIECES: usize = 4;

/// A finished answer as a chat stream: the role, the content in a few chunks, the finish
/// with the citations. (No usage chunk: the API reports none, and the gateway estimates it.)
pub(crate) fn frames(c: &Completion, enc: &ChunkEncoder) -> Vec<Bytes> {
    let chars: Vec<char> = c.content.chars().collect();
    let per = chars.len().div_ceil(STREAM_PIECES).max(1);
    let mut out = vec![enc.role()];
    for piece in chars.chunks(per) {
        out.push(enc.content(&piece.iter().collect::<String>()));
    }
    out.push(enc.finish_citing(&c.finish_reason, &c.annotations));
    out
}

/// Time until the API's daily quotas reset (the next 00:00 UTC).
pub(crate) fn until_reset() -> Duration {
    until_midnight_utc(SystemTime::now())
}

/// Time until the next 00:00 UTC after `now`.
fn until_midnight_utc(now: SystemTime) -> Duration {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Duration::from_secs(86_400 - secs % 86_400)
}

/// The API's error text, from whatever JSON it sent (its error bodies are not documented).
fn error_text(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return describe_body(body);
    };
    let pick = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("message").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        }
    };
    v.get("error")
        .and_then(pick)
        .or_else(|| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| describe_body(body))
}

/// Maps a non-2xx answer of the official API: its 429 is the key's daily quota (429
/// `insufficient_quota` until 00:00 UTC, tried again only with another key); 401/403 reject the
/// instance's key (named by instance, never by value).
pub(crate) fn map_error(
    config: &UpstreamConfig,
    status: u16,
    _retry: Option<Duration>,
    _headers: &HeaderMap,
    body: &Bytes,
) -> Error {
    let name = &config.settings().name;
    let text = error_text(body);
    match status {
        429 => Error::Upstream {
            status: 429,
            kind: "insufficient_quota",
            code: "insufficient_quota",
            message: format!(
                "the Scira API key of provider instance `{name}` has used its daily quota ({text}); quotas reset at 00:00 UTC"
            ),
            retry_after: Some(until_reset()),
            retryable: config.keys.len() > 1,
        },
        401 | 403 => Error::upstream_status(
            403,
            "upstream_unauthorized",
            format!(
                "the Scira API rejected the key of provider instance `{name}` (HTTP {status}: {text}); the operator should check its UPSTREAM_API_KEY"
            ),
        )
        .with_kind("permission_error"),
        400 | 404 | 413 | 422 => Error::upstream_status(
            status,
            "invalid_request_error",
            format!("the Scira API rejected the request (HTTP {status}): {text}"),
        )
        .with_kind("invalid_request_error"),
        s => Error::upstream(format!("the Scira API answered HTTP {s}: {text}"))
            .retryable(scira2api_types::retryable_status(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(v: Value) -> Vec<Message> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_history_is_folded_into_one_user_message() {
        let one = msgs(json!([{"role": "user", "content": "What is Scira?"}]));
        assert_eq!(fold(&one).unwrap(), "What is Scira?");
        let many = msgs(json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Who made Scira?"},
            {"role": "assistant", "content": "Zaid Mukaddam."},
            {"role": "user", "content": [{"type": "text", "text": "Where is its code?"}]}
        ]));
        assert_eq!(
            fold(&many).unwrap(),
            "Be brief.\n\nConversation so far:\nUser: Who made Scira?\nAssistant: Zaid Mukaddam.\n\nWhere is its code?"
        );
        let b: Value =
            serde_json::from_slice(&body(Endpoint::X, &many, Some("zaidmukaddam")).unwrap())
                .unwrap();
        assert_eq!(
            b,
            json!({"query": "Where is its code?", "username": "zaidmukaddam"})
        );
        assert!(fold(&msgs(json!([{"role": "system", "content": "x"}]))).is_err());
        assert_eq!(Endpoint::of("scira-people").unwrap().path(), "/api/people");
        assert_eq!(Endpoint::of("gpt-4o").unwrap_err().status(), 404);
    }

    #[test]
    fn answers_become_completions_with_citations() {
        let c = completion(br#"{"text":"Scira ([site](https://scira.ai/)) is open source.","sources":["https://scira.ai/","https://github.com/zaidmukaddam/scira"]}"#, true).unwrap();
        assert_eq!(c.annotations.len(), 2);
        assert_eq!(
            (c.annotations[0].start_index, c.annotations[0].end_index),
            (7, 32)
        );
        assert_eq!(c.annotations[1].end_index, c.content.chars().count());
        let p = completion(br#"{"profile":{"name":"Ada","bio":"Maths.","github":"https://github.com/ada","x":""}}"#, true).unwrap();
        assert!(p.content.starts_with("**Ada**\n\nMaths."));
        assert_eq!(p.annotations[0].title.as_deref(), Some("GitHub"));
        assert_eq!(
            completion(br#"{"error":"no profile"}"#, true)
                .unwrap_err()
                .status(),
            502
        );
        assert!(completion(b"<html>", true).is_err());
        assert!(
            completion(br#"{"text":"t","sources":["https://a/"]}"#, false)
                .unwrap()
                .annotations
                .is_empty()
        );
    }

    fn fixture(name: &str) -> Bytes {
        let path = format!(
            "{}/../../tests/fixtures/scira/api/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    #[test]
    fn the_api_fixtures_map_as_documented() {
        let c = completion(&fixture("search_200.json"), true).unwrap();
        assert!(c.content.starts_with("Scira is"));
        assert_eq!(c.annotations.len(), 2);
        let chars: Vec<char> = c.content.chars().collect();
        let a = &c.annotations[0];
        assert_eq!(
            chars[a.start_index..a.end_index].iter().collect::<String>(),
            "[scira.ai](https://scira.ai/)"
        );
        let x = completion(&fixture("xsearch_200.json"), true).unwrap();
        assert_eq!(
            x.annotations[0].url,
            "https://x.com/zaidmukaddam/status/1900000000000000000"
        );
        let p = completion(&fixture("people_200.json"), true).unwrap();
        assert!(p.content.starts_with("**Zaid Mukaddam**"));
        let urls: Vec<&str> = p.annotations.iter().map(|a| a.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://x.com/zaidmukaddam",
                "https://github.com/zaidmukaddam",
                "https://zaidmukaddam.com"
            ]
        );
        let e = completion(&fixture("people_error_200.json"), true).unwrap_err();
        assert!(e.to_string().contains("No profile found"));
        let config = crate::config::tests::cfg("https://api.scira.ai");
        for (name, status, code) in [
            ("quota_429", 429, "insufficient_quota"),
            ("unauthorized_401", 403, "upstream_unauthorized"),
        ] {
            let wire: u16 = String::from_utf8_lossy(&fixture(&format!("{name}.status")))
                .trim()
                .parse()
                .unwrap();
            let e = map_error(
                &config,
                wire,
                None,
                &HeaderMap::new(),
                &fixture(&format!("{name}.json")),
            );
            assert_eq!((e.status(), e.code()), (status, Some(code)), "{name}");
        }
    }

    #[test]
    fn the_daily_quota_waits_until_midnight_utc() {
        let at = UNIX_EPOCH + Duration::from_secs(19_000 * 86_400 + 86_400 - 90);
        assert_eq!(until_midnight_utc(at), Duration::from_secs(90));
        let config = crate::config::tests::cfg("https://api.scira.ai");
        let e = map_error(
            &config,
            429,
            None,
            &HeaderMap::new(),
            &Bytes::from_static(br#"{"error":"Daily limit reached"}"#),
        );
        assert_eq!(
            (e.status(), e.code(), e.kind()),
            (429, Some("insufficient_quota"), "insufficient_quota")
        );
        assert!(e.should_retry(), "two keys: the other one is tried");
        assert!(e.retry_after().unwrap() <= Duration::from_secs(86_400));
        assert!(e.to_string().contains("Daily limit reached"));
        let e = map_error(
            &config,
            401,
            None,
            &HeaderMap::new(),
            &Bytes::from_static(br#"{"error":"Invalid API key"}"#),
        );
        assert_eq!((e.status(), e.code()), (403, Some("upstream_unauthorized")));
        assert!(e.to_string().contains("provider instance"));
    }
}
