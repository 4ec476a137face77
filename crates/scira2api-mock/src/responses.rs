//! The mock's native Responses API (`POST /v1/responses`), as an upstream that speaks it (real
//! OpenAI, Azure) serves it, for the gateway's pass-through: the request is answered by the
//! mock's chat logic through `scira2api-translate` and comes back as a response object or as
//! the Responses event stream, paced like the chat stream, with the same faults (a status, a
//! hang, a cut after N events, a reset). Its ids start `resp_mock` so tests can tell a native
//! answer from one the gateway translated.

use crate::server::MockState;
use bytes::Bytes;
use scira2api_translate::responses::{EventWriter, from_completion, to_chat};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn bad_request(message: &str) -> actix_web::HttpResponse {
    actix_web::HttpResponse::BadRequest().json(json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}))
}

pub(crate) async fn responses(state: Arc<MockState>, body: Bytes) -> actix_web::HttpResponse {
    let cut = match crate::server::apply_fault(&state).await {
        Ok(cut) => cut,
        Err(response) => return response,
    };
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("mock: body is not JSON");
    };
    let plan = match to_chat(&req, &[]) {
        Ok(p) => p,
        Err(e) => {
            return actix_web::HttpResponse::BadRequest()
                .content_type("application/json")
                .body(e.body());
        }
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
        return bad_request("mock: the chat answer could not be read");
    };
    let id = format!(
        "resp_mock{}",
        &scira2api_translate::responses::new_id("")[..40]
    );
    let created = 1_700_000_000;
    if !plan.stream {
        let Ok(completion) = serde_json::from_slice::<Value>(&answer) else {
            return bad_request("mock: the chat answer was not JSON");
        };
        return actix_web::HttpResponse::Ok().json(from_completion(
            &completion,
            &id,
            created,
            &plan.echo,
        ));
    }
    let mut w = EventWriter::new(id, created, plan.echo);
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
    actix_web::HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(crate::pace::Paced::new(frames, delay, cut, state))
}
