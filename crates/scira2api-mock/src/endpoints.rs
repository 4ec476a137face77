//! The mock's other OpenAI endpoints: `/v1/embeddings` (a deterministic vector per input, as
//! floats or base64), `/v1/completions` (legacy; JSON, or SSE with the usage chunk when asked and
//! `[DONE]`), `/v1/moderations`, `/v1/images/generations` (a 1×1 PNG) and `/v1/audio/speech`
//! (bytes of the asked format, streamed). Each has the queued faults of the chat endpoint.

use crate::server::MockState;
use actix_web::HttpResponse;
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;

fn bad(message: &str, param: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}}))
}

/// A deterministic vector for `text`: the same input always embeds the same.
fn vector(text: &str, dims: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    (0..dims)
        .map(|i| {
            for b in text.bytes().chain([i as u8]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The inputs of an embeddings request as texts (token arrays read as their numbers).
fn inputs(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) if a.iter().all(Value::is_number) => {
            Some(vec![Value::Array(a.clone()).to_string()])
        }
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Some(s.clone()),
                Value::Array(_) => Some(x.to_string()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count().max(1) as u64
}

pub(crate) async fn embeddings(state: Arc<MockState>, body: Bytes) -> HttpResponse {
    if let Err(r) = crate::server::apply_fault(&state).await {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("mock: body is not JSON", "body");
    };
    let Some(texts) = inputs(&req["input"]) else {
        return bad(
            "input must be a string, an array of strings or token arrays",
            "input",
        );
    };
    let dims = req["dimensions"].as_u64().unwrap_or(8).clamp(1, 4096) as usize;
    let base64 = req["encoding_format"] == "base64";
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = vector(t, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = texts.iter().map(|t| words(t)).sum();
    let mut answer = json!({"object": "list", "data": data, "model": req["model"]});
    if req["mock"]["no_usage"] != true {
        answer["usage"] = json!({"prompt_tokens": tokens, "total_tokens": tokens});
    }
    HttpResponse::Ok().json(answer)
}

pub(crate) async fn completions(state: Arc<MockState>, body: Bytes) -> HttpResponse {
    let cut = match crate::server::apply_fault(&state).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("mock: body is not JSON", "body");
    };
    let prompt = match &req["prompt"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => return bad("prompt is required", "prompt"),
    };
    let model = req["model"].as_str().unwrap_or("mock").to_owned();
    let text = format!(" and then the mock completed: {prompt}");
    let usage = json!({"prompt_tokens": words(&prompt), "completion_tokens": words(&text), "total_tokens": words(&prompt) + words(&text)});
    let no_usage = req["mock"]["no_usage"] == true;
    if req["stream"] != true {
        let mut answer = json!({"id": "cmpl-mock", "object": "text_completion", "created": 1_700_000_000u64, "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}]});
        if !no_usage {
            answer["usage"] = usage;
        }
        return HttpResponse::Ok().json(answer);
    }
    let with_usage = req["stream_options"]["include_usage"] == true && !no_usage;
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut c = json!({"id": "cmpl-mock", "object": "text_completion", "created": 1_700_000_000u64, "model": model, "choices": choices});
        if with_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        Bytes::from(format!("data: {c}\n\n"))
    };
    let opts = state.options();
    let mut events: Vec<Bytes> = crate::openai::split_text(&text, opts.chunks)
        .into_iter()
        .map(|piece| {
            chunk(
                json!([{"text": piece, "index": 0, "logprobs": null, "finish_reason": null}]),
                None,
            )
        })
        .collect();
    events.push(chunk(
        json!([{"text": "", "index": 0, "logprobs": null, "finish_reason": "stop"}]),
        None,
    ));
    if with_usage {
        events.push(chunk(json!([]), Some(usage)));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(crate::pace::Paced::new(
            events,
            opts.chunk_delay,
            cut,
            state,
        ))
}

pub(crate) async fn moderations(state: Arc<MockState>, body: Bytes) -> HttpResponse {
    if let Err(r) = crate::server::apply_fault(&state).await {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("mock: body is not JSON", "body");
    };
    let Some(texts) = inputs(&req["input"]) else {
        return bad("input is required", "input");
    };
    let results: Vec<Value> = texts
        .iter()
        .map(|t| {
            let flagged = t.contains("kill");
            json!({"flagged": flagged, "categories": {"violence": flagged, "harassment": false},
                   "category_scores": {"violence": if flagged { 0.9 } else { 0.01 }, "harassment": 0.01},
                   "category_applied_input_types": {"violence": ["text"], "harassment": ["text"]}})
        })
        .collect();
    let model = req["model"].as_str().unwrap_or("omni-moderation-latest");
    HttpResponse::Ok().json(json!({"id": "modr-mock", "model": model, "results": results}))
}

/// A 1×1 transparent PNG.
pub(crate) const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

pub(crate) async fn image_generations(state: Arc<MockState>, body: Bytes) -> HttpResponse {
    if let Err(r) = crate::server::apply_fault(&state).await {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("mock: body is not JSON", "body");
    };
    if !req["prompt"].is_string() {
        return bad("prompt is required", "prompt");
    }
    let n = req["n"].as_u64().unwrap_or(1).clamp(1, 10);
    let b64 = base64::engine::general_purpose::STANDARD.encode(PNG);
    let data: Vec<Value> = (0..n)
        .map(|_| json!({"b64_json": b64, "revised_prompt": req["prompt"]}))
        .collect();
    HttpResponse::Ok().json(json!({"created": 1_700_000_000u64, "data": data}))
}

pub(crate) async fn speech(state: Arc<MockState>, body: Bytes) -> HttpResponse {
    let cut = match crate::server::apply_fault(&state).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("mock: body is not JSON", "body");
    };
    let Some(input) = req["input"].as_str() else {
        return bad("input is required", "input");
    };
    let (content_type, magic): (&str, &[u8]) =
        match req["response_format"].as_str().unwrap_or("mp3") {
            "wav" => ("audio/wav", b"RIFF\0\0\0\0WAVE"),
            "opus" => ("audio/ogg", b"OggS"),
            "flac" => ("audio/flac", b"fLaC"),
            "aac" => ("audio/aac", b"\xff\xf1"),
            "pcm" => ("audio/pcm", b""),
            _ => ("audio/mpeg", b"ID3\x04\0\0\0\0\0\0"),
        };
    // A header, then a few chunks of "audio" derived from the input.
    let mut events = vec![Bytes::from_static(magic)];
    for i in 0..4u8 {
        events.push(Bytes::from(
            input
                .bytes()
                .map(|b| b.wrapping_add(i))
                .cycle()
                .take(1024)
                .collect::<Vec<u8>>(),
        ));
    }
    let opts = state.options();
    HttpResponse::Ok()
        .content_type(content_type)
        .streaming(crate::pace::Paced::new(
            events,
            opts.chunk_delay,
            cut,
            state,
        ))
}
