//! The mock's Anthropic Messages API (`POST /v1/messages`), as Anthropic serves it, for the
//! `anthropic` provider kind: it requires `anthropic-version` and an `x-api-key` (Anthropic's
//! 400 and 401 otherwise, in Anthropic's error shape), answers through the mock's chat logic
//! (tools and all) translated with `scira2api-translate`, as a `message` or the Messages event
//! stream (paced like the chat stream), with the same faults plus [`Fault::ErrorAfter`]: a
//! stream that ends in an `overloaded_error` event. Its ids start `msg_mock` so tests can tell
//! a native answer from one the gateway translated.
//!
//! [`Fault::ErrorAfter`]: crate::Fault::ErrorAfter

use crate::server::MockState;
use actix_web::HttpRequest;
use bytes::Bytes;
use scira2api_translate::messages::{EventWriter, error_event, from_completion, to_chat};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn error(status: u16, kind: &str, message: &str) -> actix_web::HttpResponse {
    let code = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    actix_web::HttpResponse::build(code)
        .insert_header(("request-id", "req_mock"))
        .json(json!({"type": "error", "error": {"type": kind, "message": message}}))
}

pub(crate) async fn messages(
    state: Arc<MockState>,
    req: &HttpRequest,
    body: Bytes,
) -> actix_web::HttpResponse {
    if req.headers().get("anthropic-version").is_none() {
        return error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    if req.headers().get("x-api-key").is_none() {
        return error(401, "authentication_error", "x-api-key header is required");
    }
    let (cut, error_after) = match crate::server::apply_fault_with_error(&state).await {
        Ok(f) => f,
        Err(response) => return response,
    };
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "invalid_request_error", "mock: body is not JSON");
    };
    let plan = match to_chat(&req) {
        Ok(p) => p,
        Err(e) => return error(400, "invalid_request_error", &e.to_string()),
    };
    let mut chat = plan.body.clone();
    if let Some(m) = req.get("mock") {
        chat.insert("mock".into(), m.clone());
    }
    let delay = req["mock"]["delay_ms"]
        .as_u64()
        .map_or(state.options().chunk_delay, Duration::from_millis);
    let chat_body = Bytes::from(serde_json::to_vec(&chat).unwrap_or_default());
    let resp = crate::openai::chat(state.clone(), chat_body).await;
    let Ok(answer) = actix_web::body::to_bytes(resp.into_body()).await else {
        return error(500, "api_error", "mock: the chat answer could not be read");
    };
    let id = format!(
        "msg_mock{}",
        &scira2api_translate::messages::new_id("")[..16]
    );
    if !plan.stream {
        let Ok(completion) = serde_json::from_slice::<Value>(&answer) else {
            return error(500, "api_error", "mock: the chat answer was not JSON");
        };
        return actix_web::HttpResponse::Ok()
            .insert_header(("request-id", "req_mock"))
            .json(from_completion(&completion, &id, &plan.model));
    }
    let mut w = EventWriter::new(id, plan.model.clone());
    let mut frames = w.start();
    for block in answer
        .split(|&b| b == b'\n')
        .filter_map(|l| l.strip_prefix(b"data: "))
    {
        if let Ok(chunk) = serde_json::from_slice::<Value>(block) {
            frames.extend(w.chunk(&chunk));
        }
    }
    frames.extend(w.finish());
    if let Some(n) = error_after {
        frames.truncate(n);
        frames.push(error_event(529, "Overloaded"));
    }
    actix_web::HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("request-id", "req_mock"))
        .streaming(crate::pace::Paced::new(frames, delay, cut, state))
}
