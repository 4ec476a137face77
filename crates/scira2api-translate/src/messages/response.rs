//! A chat completion as an Anthropic `message`, and the pieces the stream writer shares.

use serde_json::{Value, json};

/// A fresh id with Anthropic's prefix (`msg_`, `toolu_`) and 24 base-62 characters.
pub fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut s = String::with_capacity(prefix.len() + 26);
    s.push_str(prefix);
    s.push_str("01");
    for _ in 0..22 {
        s.push(ALPHABET[fastrand::usize(..ALPHABET.len())] as char);
    }
    s
}

/// Anthropic's `stop_reason` for a chat `finish_reason`. A stop sequence that ended the answer
/// reads as `end_turn`: chat completions does not say that one did, nor which.
pub(crate) fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic usage from chat usage (cache writes are not reported by chat: 0).
pub fn usage(chat: Option<&Value>) -> Value {
    let n = |p: &str| {
        chat.and_then(|u| u.pointer(p))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    json!({
        "input_tokens": n("/prompt_tokens").saturating_sub(n("/prompt_tokens_details/cached_tokens")),
        "output_tokens": n("/completion_tokens"),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": n("/prompt_tokens_details/cached_tokens"),
    })
}

/// A tool call's arguments as the `input` object (an unparsable string is kept under `_raw`
/// rather than lost).
pub(crate) fn input_of(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => json!({"_raw": other}),
        Err(_) => json!({"_raw": arguments}),
    }
}

/// A whole chat completion as a `message` with id `id`, named `model` (the client's).
pub fn from_completion(completion: &Value, id: &str, model: &str) -> Value {
    let choice = &completion["choices"][0];
    let msg = &choice["message"];
    let mut content = Vec::new();
    let reasoning = crate::reasoning_text(msg);
    if let Some(r) = reasoning {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    let text = msg.get("content").and_then(Value::as_str).unwrap_or("");
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    if let Some(r) = msg
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        content.push(json!({"type": "text", "text": r}));
    }
    for c in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = c["id"]
            .as_str()
            .map_or_else(|| new_id("toolu_"), str::to_owned);
        content.push(json!({
            "type": "tool_use",
            "id": id,
            "name": c["function"]["name"].as_str().unwrap_or_default(),
            "input": input_of(c["function"]["arguments"].as_str().unwrap_or("")),
        }));
    }
    let reason = stop_reason(choice["finish_reason"].as_str());
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": null,
        "usage": usage(completion.get("usage")),
    })
}
