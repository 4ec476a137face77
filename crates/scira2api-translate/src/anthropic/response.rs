//! An Anthropic `message` as a `chat.completion`.

use serde_json::{Value, json};

/// The chat `finish_reason` for a Messages `stop_reason` (`pause_turn`, a server tool's pause,
/// reads as `stop`: the answer so far is complete).
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Chat usage from Messages usage: the prompt is the uncached input plus cache reads and
/// writes, `prompt_tokens_details.cached_tokens` the cache reads.
pub(crate) fn chat_usage(input: u64, cache_read: u64, cache_write: u64, output: u64) -> Value {
    let prompt = input + cache_read + cache_write;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    })
}

/// Reads a Messages usage object's four counts (absent ones 0).
pub(crate) fn usage_counts(u: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    (
        n("input_tokens"),
        n("cache_read_input_tokens"),
        n("cache_creation_input_tokens"),
        n("output_tokens"),
    )
}

/// A whole `message` as a `chat.completion` with id `id`, named `model` (the client's):
/// text blocks as `content`, thinking as `reasoning_content`, `tool_use` blocks as
/// `tool_calls` (their `input` as the `arguments` string).
pub fn to_completion(message: &Value, id: &str, created: u64, model: &str) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for b in message["content"].as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or("")),
            Some("thinking") => reasoning.push_str(b["thinking"].as_str().unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": b["id"],
                "type": "function",
                "function": {
                    "name": b["name"],
                    "arguments": b.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let mut msg = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": null,
    });
    if !reasoning.is_empty() {
        msg["reasoning_content"] = json!(reasoning);
    }
    if !calls.is_empty() {
        msg["tool_calls"] = Value::Array(calls);
    }
    let (input, read, write, output) = usage_counts(&message["usage"]);
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": msg,
            "logprobs": null,
            "finish_reason": finish_reason(message["stop_reason"].as_str()),
        }],
        "usage": chat_usage(input, read, write, output),
    })
}
