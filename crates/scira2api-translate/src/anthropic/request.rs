//! A chat completions request as an Anthropic Messages request.
//!
//! Mapped: `system`/`developer` messages (into `system`), `user` content (text; images as base64
//! or URL sources), `assistant` text and `tool_calls` (as `tool_use` blocks), `tool` messages (as
//! `tool_result` blocks of a user turn), consecutive same-role turns merged; `max_tokens` /
//! `max_completion_tokens` (else [`DEFAULT_MAX_TOKENS`], as Messages requires one), `stop`,
//! `temperature`, `top_p`, `user` (as `metadata.user_id`), function `tools`, `tool_choice`,
//! `parallel_tool_calls: false`, `reasoning_effort` (as `thinking` with a token budget),
//! `web_search_options` (as Anthropic's web search server tool), `stream`.
//!
//! Refused with a 400 naming the `param` (the client requires it; Messages cannot do it):
//! `response_format` `json_object`/`json_schema`, `n` > 1, `logprobs`, audio output, audio or
//! file parts, non-function tools. Accepted without effect and named in
//! [`AnthropicPlan::dropped`]: `frequency_penalty`, `presence_penalty`, `seed`, `logit_bias`,
//! `prediction`, `service_tier`, `store`, `metadata`, earlier turns' `reasoning_content`, and
//! unknown fields.

use scira2api_types::Error;
use serde_json::{Map, Value, json};

/// `max_tokens` when the chat request sets none: Messages requires one (LiteLLM and Anthropic's
/// own OpenAI compatibility layer use the same default).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// What a chat request becomes.
#[derive(Debug, Clone)]
pub struct AnthropicPlan {
    /// The Messages request body.
    pub body: Value,
    /// Request fields accepted without effect, for `x-dropped-params`.
    pub dropped: Vec<String>,
}

fn bad(message: impl Into<String>, param: &str) -> Error {
    Error::invalid(message, Some(param))
}

fn unsupported(param: &str, what: &str) -> Error {
    Error::InvalidRequest {
        message: format!("{param}: {what}"),
        param: Some(param.to_owned()),
        code: Some("unsupported_parameter"),
    }
}

/// The chat fields the translation reads (everything else is dropped and named).
const READ: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "temperature",
    "top_p",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "web_search_options",
    "response_format",
    "n",
    "logprobs",
    "top_logprobs",
    "modalities",
    "audio",
];

/// The request fields a Messages upstream ignores, of the non-null top-level `fields` of a
/// chat request: the known hints and any unknown field (`mock`, the test upstream's knobs,
/// excepted), in the request's order.
pub fn dropped_params<'a>(fields: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    fields
        .into_iter()
        .filter(|k| !READ.contains(k) && *k != "mock")
        .map(str::to_owned)
        .collect()
}

/// Translates a chat request body (parsed) for the Messages upstream model `model`.
pub fn to_messages(req: &Value, model: &str) -> Result<AnthropicPlan, Error> {
    let obj = req
        .as_object()
        .ok_or_else(|| Error::invalid("The request body must be a JSON object", None))?;
    refuse_requirements(obj)?;
    let list = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("you must provide a messages parameter", "messages"))?;
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<Value> = Vec::new();
    let mut dropped = dropped_params(
        obj.iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k.as_str()),
    );
    for (i, m) in list.iter().enumerate() {
        message(m, i, &mut system, &mut turns, &mut dropped)?;
    }
    if turns.is_empty() {
        return Err(bad(
            "messages: at least one user or assistant message is required",
            "messages",
        ));
    }
    let mut max_tokens = match obj
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| obj.get("max_tokens").filter(|v| !v.is_null()))
    {
        None => DEFAULT_MAX_TOKENS,
        Some(v) => v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            bad(
                "max_tokens: must be a whole number of at least 1",
                "max_tokens",
            )
        })?,
    };
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    body.insert("messages".into(), Value::Array(turns));
    if let Some(budget) = thinking_budget(obj.get("reasoning_effort"))? {
        // The budget is part of max_tokens and must stay below it.
        if max_tokens <= budget {
            max_tokens += budget;
        }
        body.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    }
    body.insert("max_tokens".into(), json!(max_tokens));
    match obj.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => {
            body.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) => {
            let seqs: Vec<&str> = a
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.is_empty())
                .collect();
            if !seqs.is_empty() {
                body.insert("stop_sequences".into(), json!(seqs));
            }
        }
        Some(_) => return Err(bad("stop: must be a string or a list of strings", "stop")),
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = obj.get(k).filter(|v| !v.is_null()) {
            body.insert(k.into(), v.clone());
        }
    }
    if let Some(u) = obj.get("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({"user_id": u}));
    }
    let mut tools = tools(obj.get("tools"))?;
    if obj.get("web_search_options").is_some_and(|v| !v.is_null()) {
        tools.push(json!({"type": "web_search_20250305", "name": "web_search"}));
    }
    let choice = tool_choice(obj, !tools.is_empty())?;
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(c) = choice {
        body.insert("tool_choice".into(), c);
    }
    if obj.get("stream") == Some(&Value::Bool(true)) {
        body.insert("stream".into(), json!(true));
    }
    Ok(AnthropicPlan {
        body: Value::Object(body),
        dropped,
    })
}

/// What the client requires and a Messages upstream cannot do.
fn refuse_requirements(obj: &Map<String, Value>) -> Result<(), Error> {
    match obj.get("response_format").and_then(|f| f["type"].as_str()) {
        None | Some("text") => {}
        Some(kind) => {
            return Err(unsupported(
                "response_format",
                &format!(
                    "`{kind}` cannot be enforced by an Anthropic Messages upstream; the answer would silently ignore it (ask for JSON in the prompt, or use a tool with an input schema)"
                ),
            ));
        }
    }
    if obj.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(unsupported(
            "n",
            "an Anthropic Messages upstream answers one choice per request",
        ));
    }
    if obj.get("logprobs") == Some(&Value::Bool(true)) {
        return Err(unsupported(
            "logprobs",
            "an Anthropic Messages upstream reports no log probabilities",
        ));
    }
    let audio_out = obj
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|x| x == "audio"));
    if audio_out || obj.get("audio").is_some_and(|a| !a.is_null()) {
        return Err(unsupported(
            "modalities",
            "an Anthropic Messages upstream answers in text only",
        ));
    }
    Ok(())
}

/// `reasoning_effort` as a thinking budget (Anthropic's minimum is 1024 tokens).
fn thinking_budget(effort: Option<&Value>) -> Result<Option<u64>, Error> {
    Ok(match effort.filter(|v| !v.is_null()).map(Value::as_str) {
        None | Some(Some("none")) => None,
        Some(Some("minimal" | "low")) => Some(1024),
        Some(Some("medium")) => Some(4096),
        Some(Some("high" | "xhigh")) => Some(16384),
        Some(_) => {
            return Err(bad(
                "reasoning_effort: must be none, minimal, low, medium or high",
                "reasoning_effort",
            ));
        }
    })
}

/// The text of a content that must be text (a string, or `text` parts).
fn text_of(content: Option<&Value>, at: &str) -> Result<String, Error> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                match p["type"].as_str() {
                    Some("text") | Some("refusal") => {
                        let t = p["text"].as_str().or(p["refusal"].as_str()).unwrap_or("");
                        if !out.is_empty() && !t.is_empty() {
                            out.push('\n');
                        }
                        out.push_str(t);
                    }
                    other => {
                        return Err(unsupported(
                            &format!("{at}.content[{j}].type"),
                            &format!(
                                "`{}` parts are not allowed here; only text",
                                other.unwrap_or("")
                            ),
                        ));
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(bad(
            format!("{at}.content: must be a string or a list of parts"),
            &format!("{at}.content"),
        )),
    }
}

/// The content blocks of a user message.
fn user_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>, Error> {
    match content {
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let pat = format!("{at}.content[{j}]");
                match p["type"].as_str() {
                    Some("text") => {
                        out.push(json!({"type": "text", "text": p["text"].as_str().unwrap_or("")}))
                    }
                    Some("image_url") => out.push(image(p, &pat)?),
                    other => {
                        return Err(unsupported(
                            &format!("{pat}.type"),
                            &format!(
                                "`{}` parts cannot be sent to an Anthropic Messages upstream (text and images can)",
                                other.unwrap_or("")
                            ),
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(bad(
            format!("{at}.content: must be a string or a list of parts"),
            &format!("{at}.content"),
        )),
    }
}

/// An `image_url` part as an image block: a `data:` URL as a base64 source, else a URL source.
fn image(p: &Value, at: &str) -> Result<Value, Error> {
    let url = p["image_url"]["url"]
        .as_str()
        .or(p["image_url"].as_str())
        .ok_or_else(|| {
            bad(
                format!("{at}.image_url.url: Field required"),
                &format!("{at}.image_url.url"),
            )
        })?;
    if let Some(rest) = url.strip_prefix("data:") {
        let (media, data) = rest.split_once(";base64,").ok_or_else(|| {
            bad(
                format!(
                    "{at}.image_url.url: a data URL must be base64 (data:<type>;base64,<data>)"
                ),
                &format!("{at}.image_url.url"),
            )
        })?;
        return Ok(
            json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}),
        );
    }
    Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
}

/// Appends `blocks` as a turn of `role`, merged into the previous turn of the same role.
fn push_turn(turns: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut().filter(|l| l["role"] == role) {
        if let Some(a) = last["content"].as_array_mut() {
            a.extend(blocks);
            return;
        }
    }
    turns.push(json!({"role": role, "content": blocks}));
}

fn message(
    m: &Value,
    i: usize,
    system: &mut Vec<String>,
    turns: &mut Vec<Value>,
    dropped: &mut Vec<String>,
) -> Result<(), Error> {
    let at = format!("messages[{i}]");
    match m["role"].as_str() {
        Some("system" | "developer") => {
            let t = text_of(m.get("content"), &at)?;
            if !t.is_empty() {
                system.push(t);
            }
        }
        Some("user") => push_turn(turns, "user", user_blocks(m.get("content"), &at)?),
        Some("assistant") => {
            let mut blocks = Vec::new();
            let text = text_of(m.get("content"), &at)?;
            if !text.is_empty() {
                blocks.push(json!({"type": "text", "text": text}));
            }
            let reasoning = m.get("reasoning_content").is_some_and(|r| !r.is_null());
            if reasoning && !dropped.iter().any(|d| d == "reasoning_content") {
                // A thinking block needs the signature Anthropic gave it, which chat never carried.
                dropped.push("reasoning_content".to_owned());
            }
            for (j, c) in m["tool_calls"].as_array().into_iter().flatten().enumerate() {
                let cat = format!("{at}.tool_calls[{j}]");
                let name = c["function"]["name"].as_str().ok_or_else(|| {
                    bad(
                        format!("{cat}.function.name: Field required"),
                        &format!("{cat}.function.name"),
                    )
                })?;
                let args = c["function"]["arguments"].as_str().unwrap_or("");
                let input: Value = if args.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(args).map_err(|_| {
                        bad(
                            format!("{cat}.function.arguments: not a JSON object"),
                            &format!("{cat}.function.arguments"),
                        )
                    })?
                };
                if !input.is_object() {
                    return Err(bad(
                        format!("{cat}.function.arguments: not a JSON object"),
                        &format!("{cat}.function.arguments"),
                    ));
                }
                let id = c["id"].as_str().unwrap_or_default();
                blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
            }
            push_turn(turns, "assistant", blocks);
        }
        Some("tool") => {
            let id = m["tool_call_id"].as_str().ok_or_else(|| {
                bad(
                    format!("{at}.tool_call_id: Field required"),
                    &format!("{at}.tool_call_id"),
                )
            })?;
            let text = text_of(m.get("content"), &at)?;
            push_turn(
                turns,
                "user",
                vec![json!({"type": "tool_result", "tool_use_id": id, "content": text})],
            );
        }
        other => {
            return Err(bad(
                format!(
                    "{at}.role: `{}` is not supported on an Anthropic Messages upstream (system, developer, user, assistant, tool)",
                    other.unwrap_or("")
                ),
                &format!("{at}.role"),
            ));
        }
    }
    Ok(())
}

/// Function tools as Messages tools.
fn tools(tools: Option<&Value>) -> Result<Vec<Value>, Error> {
    let Some(list) = tools.filter(|t| !t.is_null()) else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| bad("tools: must be a list", "tools"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        if t["type"] != "function" {
            return Err(unsupported(
                &format!("tools[{i}].type"),
                "only function tools can be sent to an Anthropic Messages upstream",
            ));
        }
        let f = &t["function"];
        let name = f["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                bad(
                    format!("tools[{i}].function.name: Field required"),
                    &format!("tools[{i}].function.name"),
                )
            })?;
        let schema = f
            .get("parameters")
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let mut tool = json!({"name": name, "input_schema": schema});
        if let Some(d) = f.get("description").and_then(Value::as_str) {
            tool["description"] = json!(d);
        }
        out.push(tool);
    }
    Ok(out)
}

/// `tool_choice` and `parallel_tool_calls` as Messages' `tool_choice`.
fn tool_choice(obj: &Map<String, Value>, has_tools: bool) -> Result<Option<Value>, Error> {
    let mut choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            _ => {
                return Err(bad(
                    "tool_choice: must be none, auto, required or a named function",
                    "tool_choice",
                ));
            }
        }),
        Some(c) if c["type"] == "function" => {
            let name = c["function"]["name"].as_str().ok_or_else(|| {
                bad(
                    "tool_choice.function.name: Field required",
                    "tool_choice.function.name",
                )
            })?;
            Some(json!({"type": "tool", "name": name}))
        }
        Some(_) => {
            return Err(unsupported(
                "tool_choice",
                "only none, auto, required or a named function can be sent to an Anthropic Messages upstream",
            ));
        }
    };
    if !has_tools {
        return Ok(match choice {
            Some(c) if c["type"] == "any" || c["type"] == "tool" => {
                return Err(bad(
                    "tool_choice: a tool is required but no tools were given",
                    "tool_choice",
                ));
            }
            _ => None,
        });
    }
    if obj.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = json!(true);
        }
    }
    Ok(choice)
}
