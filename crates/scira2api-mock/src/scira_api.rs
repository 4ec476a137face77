//! The mock's imitation of Scira's official API (`api.scira.ai`): `POST /api/search`
//! (`{"messages":[{"role":"user","content"}]}`; told from the web endpoint by its `x-api-key`
//! header), `/api/xsearch` (`{"query","username"?}`), `/api/reddit` and `/api/people`
//! (`{"query"}`), each one JSON answer — `{"text","sources"}`, or `{"profile":{…}}` for
//! people. A missing key is a 401 `{"error"}`, a bad body a 400; the daily quota is imitated
//! with a queued [`crate::Fault::Status`] 429.

use crate::server::MockState;
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;

fn error(status: u16, message: &str) -> HttpResponse {
    crate::server::status_response(
        status,
        &[],
        &Bytes::from(json!({"error": message}).to_string()),
    )
}

/// The sources every mock answer cites, the first one linked from the text.
const SOURCES: [&str; 2] = ["https://scira.ai/", "https://github.com/zaidmukaddam/scira"];

pub(crate) async fn answer(
    state: Arc<MockState>,
    req: &HttpRequest,
    endpoint: &str,
    body: Bytes,
) -> HttpResponse {
    if req.headers().get("x-api-key").is_none() {
        return error(401, "Missing API key");
    }
    if let Err(response) = crate::server::apply_fault(&state).await {
        return response;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "Invalid JSON body");
    };
    let question = if endpoint == "search" {
        let msgs = v["messages"].as_array().cloned().unwrap_or_default();
        // The API takes user messages with string content.
        if msgs.is_empty()
            || msgs
                .iter()
                .any(|m| m["role"] != "user" || !m["content"].is_string())
        {
            return error(400, "messages must be user messages with string content");
        }
        msgs.last()
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned()
    } else {
        match v["query"].as_str() {
            Some(q) if !q.is_empty() => q.to_owned(),
            _ => return error(400, "query is required"),
        }
    };
    if endpoint == "people" {
        return HttpResponse::Ok().json(json!({"profile": {
            "name": "Mock Person", "x": "https://x.com/mock", "linkedin": "",
            "github": "https://github.com/mock", "website": "", "bio": format!("Found for: {question}"),
        }}));
    }
    let who = v["username"]
        .as_str()
        .map(|u| format!(" (posts by @{u})"))
        .unwrap_or_default();
    HttpResponse::Ok().json(json!({
        "text": format!("Scira API mock ({endpoint}){who} answering: {question} ([scira.ai]({}))", SOURCES[0]),
        "sources": SOURCES,
    }))
}
