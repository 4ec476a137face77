//! A chat completion as a Responses `response` object, and the pieces the stream writer shares
//! (ids, usage, output items, the object itself).

use serde_json::{Map, Value, json};

/// A fresh id with OpenAI's prefix (`resp_`, `msg_`, `fc_`, `rs_`) and 48 hex digits.
pub fn new_id(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 48);
    s.push_str(prefix);
    for _ in 0..3 {
        s.push_str(&format!("{:016x}", fastrand::u64(..)));
    }
    s
}

/// Chat usage as Responses usage (zeros when the upstream gave none: the gateway always
/// settles usage before the end, so that only happens for a failed answer).
pub fn usage(chat: Option<&Value>) -> Value {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let u = chat.unwrap_or(&Value::Null);
    let input = n(u.get("prompt_tokens"));
    let output = n(u.get("completion_tokens"));
    json!({
        "input_tokens": input,
        "input_tokens_details": {
            "cached_tokens": n(u.pointer("/prompt_tokens_details/cached_tokens")),
            "cache_write_tokens": n(u.pointer("/prompt_tokens_details/cache_write_tokens")),
        },
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": n(u.pointer("/completion_tokens_details/reasoning_tokens"))},
        "total_tokens": u.get("total_tokens").and_then(Value::as_u64).unwrap_or(input + output),
    })
}

/// How a response ended, from the chat `finish_reason`.
pub(crate) fn status_of(finish_reason: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish_reason {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// A chat `url_citation` annotation in Responses form.
pub(crate) fn annotation(a: &Value) -> Option<Value> {
    let c = a.get("url_citation")?;
    Some(json!({
        "type": "url_citation",
        "url": c.get("url").cloned().unwrap_or_default(),
        "title": c.get("title").cloned().unwrap_or_default(),
        "start_index": c.get("start_index").cloned().unwrap_or(json!(0)),
        "end_index": c.get("end_index").cloned().unwrap_or(json!(0)),
    }))
}

/// An `output_text` content part.
pub(crate) fn text_part(text: &str, annotations: Vec<Value>) -> Value {
    json!({"type": "output_text", "text": text, "annotations": annotations, "logprobs": []})
}

/// A `message` output item.
pub(crate) fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

/// A `function_call` output item.
pub(crate) fn function_call_item(
    id: &str,
    status: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments})
}

/// A `reasoning` output item with one summary text.
pub(crate) fn reasoning_item(id: &str, summary: Option<&str>) -> Value {
    let summary: Vec<Value> = summary
        .map(|t| json!({"type": "summary_text", "text": t}))
        .into_iter()
        .collect();
    json!({"id": id, "type": "reasoning", "summary": summary})
}

/// What a response object is made of besides the request's echo fields.
pub struct Parts<'a> {
    /// `resp_…`.
    pub id: &'a str,
    /// Unix seconds.
    pub created_at: u64,
    /// `in_progress`, `completed`, `incomplete` or `failed`.
    pub status: &'a str,
    /// `incomplete_details.reason`.
    pub incomplete: Option<&'a str>,
    /// `error` (`{code, message}`) of a failed response.
    pub error: Option<Value>,
    /// The output items.
    pub output: Vec<Value>,
    /// Responses usage, or `None` while in progress.
    pub usage: Option<Value>,
}

/// The response object: the request's echo fields plus `parts`.
pub fn response_object(echo: &Map<String, Value>, parts: Parts<'_>) -> Value {
    let mut o = echo.clone();
    let output_text: String = parts
        .output
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().into_iter().flatten())
        .filter(|c| c["type"] == "output_text")
        .filter_map(|c| c["text"].as_str())
        .collect();
    o.insert("id".into(), Value::String(parts.id.to_owned()));
    o.insert("object".into(), json!("response"));
    o.insert("created_at".into(), json!(parts.created_at));
    o.insert("status".into(), json!(parts.status));
    o.insert("error".into(), parts.error.unwrap_or(Value::Null));
    o.insert(
        "incomplete_details".into(),
        parts
            .incomplete
            .map_or(Value::Null, |r| json!({"reason": r})),
    );
    o.insert("output".into(), Value::Array(parts.output));
    o.insert("output_text".into(), Value::String(output_text));
    if let Some(u) = parts.usage {
        o.insert("usage".into(), u);
    }
    Value::Object(o)
}

/// A whole chat completion (`chat.completion` JSON) as a response object with id `id`.
pub fn from_completion(
    completion: &Value,
    id: &str,
    created_at: u64,
    echo: &Map<String, Value>,
) -> Value {
    let choice = &completion["choices"][0];
    let msg = &choice["message"];
    let mut output = Vec::new();
    let reasoning = crate::reasoning_text(msg);
    if let Some(r) = reasoning {
        output.push(reasoning_item(&new_id("rs_"), Some(r)));
    }
    let mut content = Vec::new();
    if let Some(text) = msg
        .get("content")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        let annotations = msg
            .get("annotations")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(annotation).collect())
            .unwrap_or_default();
        content.push(text_part(text, annotations));
    }
    if let Some(refusal) = msg
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        content.push(json!({"type": "refusal", "refusal": refusal}));
    }
    let (status, incomplete) = status_of(choice["finish_reason"].as_str());
    let item_status = if incomplete.is_some() {
        "incomplete"
    } else {
        "completed"
    };
    let calls = msg.get("tool_calls").and_then(Value::as_array);
    if !content.is_empty() || calls.is_none_or(|c| c.is_empty()) {
        if content.is_empty() {
            content.push(text_part("", Vec::new()));
        }
        output.push(message_item(&new_id("msg_"), item_status, content));
    }
    for c in calls.into_iter().flatten() {
        output.push(function_call_item(
            &new_id("fc_"),
            "completed",
            c["id"].as_str().unwrap_or_default(),
            c["function"]["name"].as_str().unwrap_or_default(),
            c["function"]["arguments"].as_str().unwrap_or("{}"),
        ));
    }
    response_object(
        echo,
        Parts {
            id,
            created_at,
            status,
            incomplete,
            error: None,
            output,
            usage: Some(usage(completion.get("usage"))),
        },
    )
}
