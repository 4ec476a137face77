//! The OpenAI side of the mock: chat completions (JSON and SSE) and the model list.

use crate::pace::Paced;
use crate::server::MockState;
use actix_web::{HttpResponse, web};
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Model ids the mock lists.
pub const MOCK_MODELS: &[&str] = &["mock-gpt", "mock-gpt-mini"];

pub(crate) async fn models(
    state: web::Data<MockState>,
    req: actix_web::HttpRequest,
) -> HttpResponse {
    let _ = (state, req);
    let data: Vec<Value> = MOCK_MODELS
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "mock"}))
        .collect();
    HttpResponse::Ok().json(json!({"object": "list", "data": data}))
}

/// Per-request knobs from the body's `mock` object.
struct Knobs {
    chunks: usize,
    delay: Duration,
    latency: Duration,
    content: Option<String>,
    no_usage: bool,
    timestamps: bool,
}

fn knobs(req: &Value, state: &MockState) -> Knobs {
    let o = state.options();
    let m = &req["mock"];
    let ms = |k: &str, d: Duration| m[k].as_u64().map(Duration::from_millis).unwrap_or(d);
    Knobs {
        chunks: m["chunks"]
            .as_u64()
            .map(|n| n as usize)
            .unwrap_or(o.chunks)
            .max(1),
        delay: ms("delay_ms", o.chunk_delay),
        latency: ms("latency_ms", o.latency),
        content: m["content"].as_str().map(str::to_owned),
        no_usage: m["no_usage"] == Value::Bool(true),
        timestamps: m["timestamps"] == Value::Bool(true),
    }
}

/// Splits `text` into `n` pieces of nearly equal length on char boundaries.
pub(crate) fn split_text(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = n.clamp(1, chars.len().max(1));
    let per = chars.len().div_ceil(n).max(1);
    chars.chunks(per).map(|c| c.iter().collect()).collect()
}

fn last_user_text(req: &Value) -> String {
    let msgs = req["messages"].as_array().cloned().unwrap_or_default();
    msgs.iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default()
}

fn prompt_tokens(req: &Value) -> u64 {
    serde_json::to_string(&req["messages"])
        .map(|s| s.split_whitespace().count() as u64 + 1)
        .unwrap_or(1)
}

/// The tool call the mock makes when the request offers tools and the last message is not a
/// tool result: the first tool, with fixed arguments.
fn tool_call(req: &Value) -> Option<(String, String)> {
    // A shell tool when one is offered (what an agent's task would need), else the first.
    let tools = req["tools"].as_array()?;
    let shell = |t: &&Value| {
        matches!(
            t["function"]["name"].as_str(),
            Some("Bash" | "bash" | "shell" | "exec_command")
        )
    };
    let function = &tools.iter().find(shell).or(tools.first())?["function"];
    let name = function["name"].as_str()?.to_owned();
    let last_role = req["messages"].as_array()?.last()?["role"].as_str()?;
    if last_role == "tool" {
        return None;
    }
    let params = &function["parameters"];
    // A weather-like tool gets the fixed arguments the tests expect; any other tool arguments
    // that fit its schema (a shell tool's command is a harmless `echo`), as a model would send.
    let args = if params["properties"].get("city").is_some() || params["properties"].is_null() {
        r#"{"city":"Paris","unit":"celsius"}"#.to_owned()
    } else {
        example(params, 0).to_string()
    };
    Some((name, args))
}

/// An answer that satisfies the request's `response_format` JSON schema (as OpenAI's structured
/// outputs do): each property filled with a value of its type.
fn schema_answer(req: &Value) -> Option<String> {
    let rf = &req["response_format"];
    match rf["type"].as_str()? {
        "json_schema" => Some(example(&rf["json_schema"]["schema"], 0).to_string()),
        "json_object" => Some(r#"{"answer":"mock"}"#.to_owned()),
        _ => None,
    }
}

fn example(schema: &Value, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(first) = schema["anyOf"].as_array().and_then(|a| a.first()) {
        return example(first, depth + 1);
    }
    if let Some(e) = schema["enum"].as_array().and_then(|a| a.first()) {
        return e.clone();
    }
    match schema["type"].as_str() {
        Some("string") => json!("mock"),
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("array") => json!([example(&schema["items"], depth + 1)]),
        Some("object") | None => {
            let mut o = serde_json::Map::new();
            let required: Option<Vec<&str>> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect());
            if let Some(props) = schema["properties"].as_object() {
                // Only the required fields when the schema names them, as a model sends.
                let wanted = |k: &str| required.as_ref().is_none_or(|r| r.contains(&k));
                for (k, v) in props.iter().filter(|(k, _)| wanted(k)) {
                    let value = match (k.as_str(), v["type"].as_str()) {
                        ("cmd" | "command", Some("string")) => json!("echo scira2api-mock"),
                        ("command", Some("array")) => json!(["echo", "scira2api-mock"]),
                        _ => example(v, depth + 1),
                    };
                    o.insert(k.clone(), value);
                }
            }
            Value::Object(o)
        }
        _ => Value::Null,
    }
}

/// A JSON object's text with its fields in the given order (each value already JSON text).
fn ordered(fields: &[(&str, String)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json!(k).to_string());
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    out
}

pub(crate) async fn chat(state: Arc<MockState>, body: Bytes) -> HttpResponse {
    let cut = match crate::server::apply_fault(&state).await {
        Ok(cut) => cut,
        Err(response) => return response,
    };
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().json(json!({"error":{"message":"mock: body is not JSON","type":"invalid_request_error","param":null,"code":null}}));
    };
    let k = knobs(&req, &state);
    if !k.latency.is_zero() {
        actix_rt::time::sleep(k.latency).await;
    }
    let model = req["model"].as_str().unwrap_or("mock").to_owned();
    let content = k
        .content
        .clone()
        .or_else(|| schema_answer(&req))
        .unwrap_or_else(|| {
            format!(
                "Mock answer from {model}: you said \"{}\".",
                last_user_text(&req)
            )
        });
    let prompt = prompt_tokens(&req);
    let id = "chatcmpl-mock";
    let created = 1_700_000_000u64;
    let tool = tool_call(&req);
    if req["stream"] != Value::Bool(true) {
        // Fields in the order OpenAI writes them (a `Value` would sort them).
        let (message, finish, completion) = match &tool {
            Some((name, args)) => (
                ordered(&[
                    ("role", json!("assistant").to_string()),
                    ("content", "null".to_owned()),
                    ("refusal", "null".to_owned()),
                    ("tool_calls", json!([{"id":"call_mock_1","type":"function","function":{"name":name,"arguments":args}}]).to_string()),
                ]),
                "tool_calls",
                8,
            ),
            None => (
                ordered(&[
                    ("role", json!("assistant").to_string()),
                    ("content", json!(content).to_string()),
                    ("refusal", "null".to_owned()),
                ]),
                "stop",
                k.chunks as u64,
            ),
        };
        let choice = ordered(&[
            ("index", json!(0).to_string()),
            ("message", message),
            ("logprobs", "null".to_owned()),
            ("finish_reason", json!(finish).to_string()),
        ]);
        let mut fields = vec![
            ("id", json!(id).to_string()),
            ("object", json!("chat.completion").to_string()),
            ("created", json!(created).to_string()),
            ("model", json!(model).to_string()),
            ("choices", format!("[{choice}]")),
        ];
        if !k.no_usage {
            fields.push((
                "usage",
                ordered(&[
                    ("prompt_tokens", json!(prompt).to_string()),
                    ("completion_tokens", json!(completion).to_string()),
                    ("total_tokens", json!(prompt + completion).to_string()),
                ]),
            ));
        }
        fields.push(("system_fingerprint", json!("fp_mock").to_string()));
        return HttpResponse::Ok()
            .content_type("application/json")
            .body(ordered(&fields));
    }
    let include_usage = req["stream_options"]["include_usage"] == Value::Bool(true);
    let stamps = k.timestamps;
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "system_fingerprint": "fp_mock", "choices": choices});
        if include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        let json = c.to_string();
        if stamps {
            // `{"x_mock_sent_us":0000000000000000,...`: stamped with the send time.
            Bytes::from(format!("data: {{{},{}\n\n", crate::pace::STAMP, &json[1..]))
        } else {
            Bytes::from(format!("data: {json}\n\n"))
        }
    };
    let mut events = vec![chunk(
        json!([{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]),
        None,
    )];
    let (finish, completion) = match &tool {
        Some((name, args)) => {
            events.push(chunk(json!([{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_mock_1","type":"function","function":{"name":name,"arguments":""}}]},"logprobs":null,"finish_reason":null}]), None));
            for piece in split_text(args, k.chunks) {
                events.push(chunk(json!([{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":piece}}]},"logprobs":null,"finish_reason":null}]), None));
            }
            ("tool_calls", 8u64)
        }
        None => {
            for piece in split_text(&content, k.chunks) {
                events.push(chunk(json!([{"index":0,"delta":{"content":piece},"logprobs":null,"finish_reason":null}]), None));
            }
            ("stop", k.chunks as u64)
        }
    };
    events.push(chunk(
        json!([{"index":0,"delta":{},"logprobs":null,"finish_reason":finish}]),
        None,
    ));
    if include_usage && !k.no_usage {
        events.push(chunk(json!([]), Some(json!({"prompt_tokens":prompt,"completion_tokens":completion,"total_tokens":prompt+completion}))));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(Paced::new(events, k.delay, cut, state).stamped(k.timestamps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_text_keeps_everything() {
        let parts = split_text("héllo wörld", 4);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts.concat(), "héllo wörld");
        assert_eq!(split_text("ab", 10), ["a", "b"]);
        assert_eq!(split_text("", 3), [""; 0]);
    }
}
