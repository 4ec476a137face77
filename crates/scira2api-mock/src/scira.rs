//! The Scira side of the mock: `POST /api/search` answering in the AI SDK 4 data stream or the
//! AI SDK 5/6 UI message stream, generated from the request or replayed from a fixture body.

use crate::openai::split_text;
use crate::pace::Paced;
use crate::server::{MockState, status_response};
use actix_web::HttpResponse;
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;

/// Which Scira era the mock imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SciraFormat {
    /// AI SDK 4 data stream lines (`0:"text"`).
    V4,
    /// AI SDK 5 UI message stream over SSE (no `finishReason`).
    V5,
    /// AI SDK 6 UI message stream over SSE (current Scira).
    V6,
}

impl std::str::FromStr for SciraFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v4" => Ok(SciraFormat::V4),
            "v5" => Ok(SciraFormat::V5),
            "v6" => Ok(SciraFormat::V6),
            other => Err(format!("unknown Scira format `{other}` (v4, v5 or v6)")),
        }
    }
}

fn error_body(status: u16, code: &str, message: &str, cause: &str) -> HttpResponse {
    status_response(
        status,
        &[],
        &Bytes::from(json!({"code": code, "message": message, "cause": cause}).to_string()),
    )
}

/// Splits a replayed body into events: after each blank line (SSE) or each line (v4).
fn split_events(body: &Bytes) -> Vec<Bytes> {
    let sse = body.starts_with(b"data:") || body.windows(7).any(|w| w == b"\ndata: ");
    let sep: &[u8] = if sse { b"\n\n" } else { b"\n" };
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= body.len() {
        if &body[i..i + sep.len()] == sep {
            out.push(body.slice(start..i + sep.len()));
            start = i + sep.len();
            i = start;
        } else {
            i += 1;
        }
    }
    if start < body.len() {
        out.push(body.slice(start..));
    }
    out
}

/// The results of the mock's `web_search` tool (as Scira's own tool reports them), and the
/// markdown link the answer then cites the first one with.
fn search_output() -> Value {
    json!({"searches": [{"query": "scira", "results": [
        {"url": "https://scira.ai/", "title": "Scira AI", "content": "A minimalistic AI-powered search engine."},
        {"url": "https://github.com/zaidmukaddam/scira", "title": "zaidmukaddam/scira", "content": "Scira's source code."}
    ], "images": []}]})
}
const CITING_LINK: &str = " ([scira.ai](https://scira.ai/))";

fn generate(format: SciraFormat, model: &str, text: &str, chunks: usize, web: bool) -> Vec<Bytes> {
    let text = if web {
        format!("{text}{CITING_LINK}")
    } else {
        text.to_owned()
    };
    let pieces = split_text(&text, chunks);
    let (prompt, completion) = (42u64, pieces.len() as u64);
    let mut out = Vec::new();
    match format {
        SciraFormat::V4 => {
            out.push(Bytes::from("f:{\"messageId\":\"msg-mock\"}\n"));
            if web {
                let call = json!({"toolCallId": "call_mock_search", "result": search_output()});
                out.push(Bytes::from(format!("a:{call}\n")));
            }
            for p in &pieces {
                out.push(Bytes::from(format!("0:{}\n", Value::from(p.as_str()))));
            }
            let usage = json!({"promptTokens": prompt, "completionTokens": completion});
            out.push(Bytes::from(format!(
                "e:{}\n",
                json!({"finishReason":"stop","usage":usage,"isContinued":false})
            )));
            out.push(Bytes::from(format!(
                "d:{}\n",
                json!({"finishReason":"stop","usage":usage})
            )));
        }
        SciraFormat::V5 | SciraFormat::V6 => {
            let ev = |v: Value| Bytes::from(format!("data: {v}\n\n"));
            out.push(ev(json!({"type":"start","messageId":"msg-mock"})));
            out.push(ev(json!({"type":"start-step"})));
            if web {
                out.push(ev(json!({"type":"tool-input-available","toolCallId":"call_mock_search","toolName":"web_search","input":{"queries":["scira"]}})));
                out.push(ev(json!({"type":"tool-output-available","toolCallId":"call_mock_search","output":search_output()})));
                out.push(ev(json!({"type":"finish-step"})));
                out.push(ev(json!({"type":"start-step"})));
            }
            out.push(ev(json!({"type":"text-start","id":"txt-0"})));
            for p in &pieces {
                out.push(ev(json!({"type":"text-delta","id":"txt-0","delta":p})));
            }
            out.push(ev(json!({"type":"text-end","id":"txt-0"})));
            out.push(ev(json!({"type":"finish-step"})));
            let meta = json!({"model":model,"inputTokens":prompt,"outputTokens":completion,"totalTokens":prompt+completion});
            let mut finish = json!({"type":"finish","messageMetadata":meta});
            if format == SciraFormat::V6 {
                finish["finishReason"] = json!("stop");
            }
            out.push(ev(finish));
            out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        }
    }
    out
}

pub(crate) async fn search(state: Arc<MockState>, body: Bytes) -> HttpResponse {
    let cut = match crate::server::apply_fault(&state).await {
        Ok(cut) => cut,
        Err(response) => return response,
    };
    let opts = state.options();
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::InternalServerError().body("Internal Server Error");
    };
    // What Scira itself rejects: no model (crash), no or empty messages, messages without parts.
    let Some(model) = req["model"].as_str() else {
        return HttpResponse::InternalServerError().body("Internal Server Error");
    };
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    if messages.is_empty() {
        return error_body(
            400,
            "bad_request:api",
            "The request couldn't be processed. Please check your input and try again.",
            "Messages array is required and cannot be empty",
        );
    }
    if messages.iter().any(|m| !m["parts"].is_array()) {
        return HttpResponse::InternalServerError().body("Internal Server Error");
    }
    if !opts.latency.is_zero() {
        actix_rt::time::sleep(opts.latency).await;
    }
    let events = match &opts.scira_body {
        Some(b) => split_events(b),
        None => {
            let last = messages
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .and_then(|m| m["parts"].as_array())
                .map(|parts| {
                    parts
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            // The web group searches: the answer cites what the search found.
            generate(
                opts.scira_format,
                model,
                &format!("Scira mock ({model}) answering: {last}"),
                opts.chunks,
                req["group"] == "web",
            )
        }
    };
    // Scira sets no Content-Type on its stream.
    HttpResponse::Ok().streaming(Paced::new(events, opts.chunk_delay, cut, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sse_and_lines() {
        let sse = Bytes::from_static(b"data: {\"a\":1}\n\ndata: [DONE]\n\n");
        assert_eq!(split_events(&sse).len(), 2);
        let v4 = Bytes::from_static(b"f:{}\n0:\"x\"\nd:{}\n");
        assert_eq!(split_events(&v4), [&b"f:{}\n"[..], b"0:\"x\"\n", b"d:{}\n"]);
        let tail = Bytes::from_static(b"data: {}\n\ndata: {\"x\":1}");
        assert_eq!(split_events(&tail).concat(), &tail[..]);
    }

    #[test]
    fn generated_streams_have_finish() {
        for f in [SciraFormat::V4, SciraFormat::V5, SciraFormat::V6] {
            let ev = generate(f, "m", "hello world", 3, f == SciraFormat::V6);
            let all = ev.concat();
            let s = String::from_utf8(all).unwrap();
            assert!(
                s.contains("d:{") || s.contains("\"type\":\"finish\""),
                "{s}"
            );
        }
    }
}
