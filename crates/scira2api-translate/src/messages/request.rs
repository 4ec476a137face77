//! An Anthropic Messages request (`POST /v1/messages`) as a chat completions request.
//!
//! Mapped: `system`, `messages` (text, images by base64 or URL, `tool_use`, `tool_result`,
//! text `document`s), custom `tools`, `tool_choice` (`auto`/`any`/`tool`/`none`,
//! `disable_parallel_tool_use`), `max_tokens`, `stop_sequences`, `temperature`, `top_p`,
//! `metadata.user_id`, `thinking` (as `reasoning_effort`), `stream`. Refused with a 400 naming
//! the `param` (the client requires it; chat cannot do it): a forced server tool, `any` with only
//! server tools, non-text documents. Accepted without effect (named in
//! [`MessagesPlan::dropped`]): offered server tools, `top_k`, `thinking` blocks of earlier turns,
//! `service_tier`, `container`, `mcp_servers`, `context_management` and unknown fields.
//! `cache_control` markers are accepted and ignored.

use scira2api_types::Error;
use serde_json::{Map, Value, json};

/// What a Messages request becomes.
#[derive(Debug, Clone)]
pub struct MessagesPlan {
    /// The chat completions request body.
    pub body: Map<String, Value>,
    /// Request fields accepted without effect upstream, for `x-dropped-params`.
    pub dropped: Vec<String>,
    /// The client's model name.
    pub model: String,
    /// `stream`.
    pub stream: bool,
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

/// Translates a Messages request body (parsed).
pub fn to_chat(req: &Value) -> Result<MessagesPlan, Error> {
    let obj = req
        .as_object()
        .ok_or_else(|| Error::invalid("The request body must be a JSON object", None))?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("model: Field required", "model"))?
        .to_owned();
    let max_tokens = obj
        .get("max_tokens")
        .and_then(Value::as_u64)
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            bad(
                "max_tokens: Field required (a whole number of at least 1)",
                "max_tokens",
            )
        })?;
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("stream: must be a boolean", "stream")),
    };
    let mut dropped = Vec::new();
    let mut messages = Vec::new();
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text: Vec<&str> = blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            messages.push(json!({"role": "system", "content": text.join("\n\n")}));
        }
        Some(_) => {
            return Err(bad(
                "system: must be a string or a list of text blocks",
                "system",
            ));
        }
    }
    let list = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("messages: Field required (a list)", "messages"))?;
    if list.is_empty() {
        return Err(bad(
            "messages: at least one message is required",
            "messages",
        ));
    }
    for (i, m) in list.iter().enumerate() {
        turn(m, i, &mut messages, &mut dropped)?;
    }

    let mut body = Map::new();
    body.insert("model".into(), Value::String(model.clone()));
    body.insert("messages".into(), Value::Array(messages));
    body.insert("max_completion_tokens".into(), json!(max_tokens));

    let server_tools = tools(obj.get("tools"), &mut body, &mut dropped)?;
    tool_choice(obj.get("tool_choice"), &mut body, &server_tools)?;

    let stop_sequences: Vec<String> = match obj.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(s)) => s
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(_) => {
            return Err(bad(
                "stop_sequences: must be a list of strings",
                "stop_sequences",
            ));
        }
    };
    if !stop_sequences.is_empty() {
        body.insert("stop".into(), json!(stop_sequences));
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = obj.get(k).filter(|v| !v.is_null()) {
            body.insert(k.into(), v.clone());
        }
    }
    if let Some(u) = req.pointer("/metadata/user_id").and_then(Value::as_str) {
        body.insert("user".into(), json!(u));
    }
    if let Some(t) = obj.get("thinking").filter(|t| t["type"] == "enabled") {
        // Chat completions has effort levels, not token budgets.
        let budget = t["budget_tokens"].as_u64().unwrap_or(0);
        let effort = match budget {
            0..4096 => "low",
            4096..16384 => "medium",
            _ => "high",
        };
        body.insert("reasoning_effort".into(), json!(effort));
    }
    body.insert("stream".into(), Value::Bool(stream));
    if stream {
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    for key in obj.keys() {
        let known = matches!(
            key.as_str(),
            "model"
                | "max_tokens"
                | "messages"
                | "system"
                | "stream"
                | "tools"
                | "tool_choice"
                | "stop_sequences"
                | "temperature"
                | "top_p"
                | "metadata"
                | "thinking"
        );
        if !known && !obj[key].is_null() {
            dropped.push(key.clone());
        }
    }
    dropped.sort();
    dropped.dedup();
    Ok(MessagesPlan {
        body,
        dropped,
        model,
        stream,
    })
}

/// One turn as chat messages: `tool_result` blocks become `tool` messages (first, as chat wants
/// them right after the assistant's calls), the rest one user or assistant message; a turn of
/// the same role as the one before is merged into it.
fn turn(m: &Value, i: usize, out: &mut Vec<Value>, dropped: &mut Vec<String>) -> Result<(), Error> {
    let at = format!("messages[{i}]");
    let role = match m.get("role").and_then(Value::as_str) {
        Some("user") => "user",
        Some("assistant") => "assistant",
        _ => {
            return Err(bad(
                format!("{at}.role: must be user or assistant"),
                &format!("{at}.role"),
            ));
        }
    };
    let blocks: Vec<Value> = match m.get("content") {
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(b)) => b.clone(),
        _ => {
            return Err(bad(
                format!("{at}.content: must be a string or a list of blocks"),
                &format!("{at}.content"),
            ));
        }
    };
    let mut parts: Vec<Value> = Vec::new();
    let mut calls: Vec<Value> = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bat = format!("{at}.content[{j}]");
        match b.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => parts.push(json!({"type": "text", "text": b["text"].as_str().unwrap_or("")})),
            "image" if role == "user" => parts.push(image(b, &bat)?),
            "document" => parts.push(document(b, &bat)?),
            "tool_use" if role == "assistant" => {
                let id = b["id"].as_str().ok_or_else(|| {
                    bad(format!("{bat}.id: Field required"), &format!("{bat}.id"))
                })?;
                let name = b["name"].as_str().ok_or_else(|| {
                    bad(
                        format!("{bat}.name: Field required"),
                        &format!("{bat}.name"),
                    )
                })?;
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}));
            }
            "tool_result" if role == "user" => {
                let id = b["tool_use_id"].as_str().ok_or_else(|| {
                    bad(
                        format!("{bat}.tool_use_id: Field required"),
                        &format!("{bat}.tool_use_id"),
                    )
                })?;
                let mut text = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(c)) => c
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    Some(_) => {
                        return Err(bad(
                            format!("{bat}.content: must be a string or a list of blocks"),
                            &format!("{bat}.content"),
                        ));
                    }
                };
                if b["is_error"] == true {
                    text = format!("Error: {text}");
                }
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            // Reasoning of an earlier turn: chat completions has no field to carry it back.
            "thinking" | "redacted_thinking" => {
                dropped.push(format!("{bat}:{}", b["type"].as_str().unwrap_or("")))
            }
            other => {
                return Err(bad(
                    format!(
                        "{bat}.type: `{other}` blocks cannot be sent to a chat completions upstream in a {role} turn"
                    ),
                    &format!("{bat}.type"),
                ));
            }
        }
    }
    if parts.is_empty() && calls.is_empty() {
        return Ok(());
    }
    let content = if role == "assistant" {
        let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        if text.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        }
    } else {
        Value::Array(parts)
    };
    // Merge into the previous message of the same role (chat wants turns to alternate).
    if let Some(last) = out
        .last_mut()
        .filter(|l| l["role"] == role && l.get("tool_call_id").is_none())
    {
        match (&mut last["content"], content) {
            (Value::Array(a), Value::Array(b)) => a.extend(b),
            (Value::String(a), Value::String(b)) => {
                a.push('\n');
                a.push_str(&b);
            }
            (slot @ Value::Null, c) => *slot = c,
            _ => {}
        }
        if !calls.is_empty() {
            let existing = last
                .as_object_mut()
                .map(|o| o.entry("tool_calls").or_insert_with(|| json!([])));
            if let Some(Value::Array(a)) = existing {
                a.extend(calls);
            }
        }
        return Ok(());
    }
    let mut msg = json!({"role": role, "content": content});
    if !calls.is_empty() {
        msg["tool_calls"] = Value::Array(calls);
    }
    out.push(msg);
    Ok(())
}

fn image(b: &Value, at: &str) -> Result<Value, Error> {
    let src = &b["source"];
    let url = match src["type"].as_str() {
        Some("base64") => format!(
            "data:{};base64,{}",
            src["media_type"].as_str().unwrap_or("image/png"),
            src["data"].as_str().unwrap_or("")
        ),
        Some("url") => src["url"].as_str().unwrap_or("").to_owned(),
        _ => {
            return Err(unsupported(
                &format!("{at}.source"),
                "images need a base64 or url source (file ids need the Files API)",
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn document(b: &Value, at: &str) -> Result<Value, Error> {
    let src = &b["source"];
    match src["type"].as_str() {
        Some("text") => Ok(json!({"type": "text", "text": src["data"].as_str().unwrap_or("")})),
        Some("content") => {
            let text: Vec<&str> = src["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            Ok(json!({"type": "text", "text": text.join("\n")}))
        }
        _ => Err(unsupported(
            &format!("{at}.source"),
            "only text documents can be sent to a chat completions upstream",
        )),
    }
}

/// Custom tools as function tools; server tools (a versioned `type` such as
/// `web_search_20250305`) are dropped. Returns the names of the dropped server tools.
fn tools(
    tools: Option<&Value>,
    body: &mut Map<String, Value>,
    dropped: &mut Vec<String>,
) -> Result<Vec<String>, Error> {
    let Some(list) = tools.filter(|t| !t.is_null()) else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| bad("tools: must be a list", "tools"))?;
    let mut chat = Vec::new();
    let mut server = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("custom");
        let name = t.get("name").and_then(Value::as_str).unwrap_or("");
        if kind != "custom" {
            dropped.push(format!("tools[{i}]:{kind}"));
            server.push(name.to_owned());
            continue;
        }
        if name.is_empty() {
            return Err(bad(
                format!("tools[{i}].name: Field required"),
                &format!("tools[{i}].name"),
            ));
        }
        let mut f = Map::new();
        f.insert("name".into(), json!(name));
        if let Some(d) = t.get("description").filter(|d| !d.is_null()) {
            f.insert("description".into(), d.clone());
        }
        let schema = t
            .get("input_schema")
            .filter(|s| s.is_object())
            .cloned()
            .ok_or_else(|| {
                bad(
                    format!("tools[{i}].input_schema: Field required"),
                    &format!("tools[{i}].input_schema"),
                )
            })?;
        f.insert("parameters".into(), schema);
        chat.push(json!({"type": "function", "function": f}));
    }
    if !chat.is_empty() {
        body.insert("tools".into(), Value::Array(chat));
    }
    Ok(server)
}

fn tool_choice(
    choice: Option<&Value>,
    body: &mut Map<String, Value>,
    server_tools: &[String],
) -> Result<(), Error> {
    let Some(c) = choice.filter(|c| !c.is_null()) else {
        return Ok(());
    };
    let has_tools = body.contains_key("tools");
    let chat = match c["type"].as_str() {
        Some("auto") => json!("auto"),
        Some("none") => json!("none"),
        Some("any") if has_tools => json!("required"),
        Some("any") => {
            return Err(unsupported(
                "tool_choice",
                "`any` needs a custom tool: the server tools offered cannot run behind a chat completions upstream",
            ));
        }
        Some("tool") => {
            let name = c["name"]
                .as_str()
                .ok_or_else(|| bad("tool_choice.name: Field required", "tool_choice.name"))?;
            if server_tools.iter().any(|s| s == name) {
                return Err(unsupported(
                    "tool_choice",
                    &format!(
                        "it forces the server tool `{name}`, which a chat completions upstream cannot run; the answer would silently ignore it"
                    ),
                ));
            }
            json!({"type": "function", "function": {"name": name}})
        }
        _ => {
            return Err(bad(
                "tool_choice.type: must be auto, any, tool or none",
                "tool_choice.type",
            ));
        }
    };
    if has_tools {
        body.insert("tool_choice".into(), chat);
        if c["disable_parallel_tool_use"] == true {
            body.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    Ok(())
}
