//! End to end: the real server binary in front of the mock as an OpenAI-compatible upstream.

mod common;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

const MAPPINGS: (&str, &str) = ("MODEL_MAPPINGS", "gpt-4o:mock-gpt,fast:mock-gpt-mini");

#[actix_rt::test]
async fn model_list_merges_table_and_upstream() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[MAPPINGS]);
    let r = get(&gw, "/v1/models").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids = model_ids(&v);
    assert_eq!(ids, ["gpt-4o", "fast", "mock-gpt", "mock-gpt-mini"]);
    for m in v["data"].as_array().unwrap() {
        assert_eq!(m["object"], "model");
        assert!(m["created"].is_u64() && m["owned_by"].is_string(), "{m}");
    }
    let one = get(&gw, "/v1/models/fast").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["id"], "fast");
    get(&gw, "/v1/models/nope")
        .await
        .assert_error(404, Some("model_not_found"));
}

#[actix_rt::test]
async fn non_stream_maps_model_both_ways_and_forwards_every_other_byte() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(
        &mock,
        &[MAPPINGS, ("UPSTREAM_API_KEY", "sk-upstream-secret")],
    );
    let body = r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"42"}],"model":"gpt-4o","temperature":0.25,"top_p":1,"n":1,"stop":["x"],"seed":7,"user":"u1","logprobs":false,"max_completion_tokens":99,"response_format":{"type":"text"},"x_vendor_extension":{"deep":[1,{"a":null}]}}"#;
    let r = post(&gw, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let v = r.json();
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["usage"]["total_tokens"],
        v["usage"]["prompt_tokens"].as_u64().unwrap()
            + v["usage"]["completion_tokens"].as_u64().unwrap()
    );

    let seen = mock.last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-upstream-secret")
    );
    // Exactly the client's bytes, with only the model replaced.
    let expected = body.replace("\"model\":\"gpt-4o\"", "\"model\":\"mock-gpt\"");
    assert_eq!(std::str::from_utf8(&seen.body).unwrap(), expected);
    assert!(!gw.log().contains("sk-upstream-secret"), "secret in log");
}

#[actix_rt::test]
async fn unmapped_model_passes_through_unchanged() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[MAPPINGS]);
    let body = r#"{"model":"something-else","messages":[{"role":"user","content":"hi"}]}"#;
    let r = post(&gw, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"], "something-else");
    assert_eq!(&mock.last_request().unwrap().body[..], body.as_bytes());
}

#[actix_rt::test]
async fn stream_framing_is_exact() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[MAPPINGS]);
    let r = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hello"}],"mock":{"chunks":5}}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(r.header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(r.header("x-accel-buffering").as_deref(), Some("no"));
    let chunks = sse_json(&r.body);
    assert_eq!(chunks.len(), 1 + 5 + 1, "role, 5 deltas, finish");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut text = String::new();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-4o");
        assert_eq!(c["id"], chunks[0]["id"]);
        let fr = &c["choices"][0]["finish_reason"];
        if i + 1 < chunks.len() {
            assert!(
                fr.is_null(),
                "finish_reason must be null before the last chunk: {c}"
            );
        } else {
            assert_eq!(fr, "stop");
        }
        text.push_str(c["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        assert!(c.get("usage").is_none(), "no usage field unless asked: {c}");
    }
    assert_eq!(text, "Mock answer from mock-gpt: you said \"hello\".");
    // The upstream saw its own model name and the stream flag.
    assert_eq!(mock.last_request().unwrap().json()["model"], "mock-gpt");
}

#[actix_rt::test]
async fn usage_chunk_when_asked_and_tool_call_deltas_intact() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[MAPPINGS]);
    let body = json!({
        "model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "auto",
        "mock": {"chunks": 3}
    });
    let r = post(&gw, "/v1/chat/completions", &body.to_string()).await;
    assert_eq!(r.status, 200);
    let chunks = sse_json(&r.body);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let choice_chunks = &chunks[..chunks.len() - 1];
    for c in choice_chunks {
        assert!(
            c["usage"].is_null() && c.as_object().unwrap().contains_key("usage"),
            "{c}"
        );
    }
    let mut args = String::new();
    let mut name = None;
    for c in choice_chunks {
        if let Some(calls) = c["choices"][0]["delta"]["tool_calls"].as_array() {
            for call in calls {
                assert_eq!(call["index"], 0, "index kept on every fragment: {call}");
                if let Some(n) = call["function"]["name"].as_str() {
                    name = Some(n.to_owned());
                    assert_eq!(call["id"], "call_mock_1");
                    assert_eq!(call["type"], "function");
                }
                args.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
    }
    assert_eq!(name.as_deref(), Some("get_weather"));
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city":"Paris","unit":"celsius"})
    );
    assert_eq!(
        choice_chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
    // tools and tool_choice reached the upstream untouched.
    let seen = mock.last_request().unwrap().json();
    assert_eq!(seen["tools"], body["tools"]);
    assert_eq!(seen["tool_choice"], "auto");
    assert_eq!(seen["stream_options"], json!({"include_usage": true}));
}

#[actix_rt::test]
async fn upstream_errors_pass_through_or_become_502() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[MAPPINGS, ("RETRY", "1")]);
    let chat = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

    let openai_err = r#"{"error":{"message":"You exceeded your current quota.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
    mock.push_fault(Fault::Status {
        status: 429,
        headers: vec![],
        body: Bytes::from_static(openai_err.as_bytes()),
    });
    let r = post(&gw, "/v1/chat/completions", chat).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.text(),
        openai_err,
        "OpenAI error object forwarded as it was"
    );

    let bad = r#"{"error":{"message":"Invalid 'messages[0]'","type":"invalid_request_error","param":"messages","code":null}}"#;
    mock.push_fault(Fault::Status {
        status: 400,
        headers: vec![],
        body: Bytes::from_static(bad.as_bytes()),
    });
    let r = post(&gw, "/v1/chat/completions", chat).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "messages");

    mock.push_fault(Fault::Status {
        status: 503,
        headers: vec![],
        body: Bytes::from_static(b"<html><body>Service Unavailable</body></html>"),
    });
    let r = post(&gw, "/v1/chat/completions", chat).await;
    let e = r.assert_error(502, Some("upstream_error"));
    assert!(e["message"].as_str().unwrap().contains("503"), "{e}");
    assert!(e["message"].as_str().unwrap().contains("HTML"), "{e}");

    // The same for a stream request: an error before the first byte is a clean HTTP error.
    mock.push_fault(Fault::Status {
        status: 500,
        headers: vec![],
        body: Bytes::from_static(b""),
    });
    let r = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    r.assert_error(502, Some("upstream_error"));
}

#[actix_rt::test]
async fn unreachable_upstream_is_a_clean_502() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let gw = Gateway::start(&[("BASE_URL", &base), ("RETRY", "1")]);
    let r = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    let e = r.assert_error(502, Some("upstream_error"));
    assert!(
        e["message"].as_str().unwrap().contains("could not connect"),
        "{e}"
    );
    // The model list still answers (from the table) when the upstream is down.
    assert_eq!(get(&gw, "/v1/models").await.status, 200);
}

#[actix_rt::test]
async fn stream_cut_by_upstream_ends_with_error_event_not_success() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[MAPPINGS]);
    mock.push_fault(Fault::CutAfter(3));
    let r = post(&gw, "/v1/chat/completions", r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}],"mock":{"chunks":6,"delay_ms":30}}"#).await;
    assert_eq!(r.status, 200);
    let frames = sse_frames(&r.body);
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let err: Value = serde_json::from_str(&frames[frames.len() - 2]).unwrap();
    assert!(
        err["error"]["message"].is_string(),
        "error event before [DONE]: {err}"
    );
    let chunks: Vec<Value> = frames[..3]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null()),
        "no clean finish"
    );
}

#[actix_rt::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[MAPPINGS]);
    let req = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .insert_header(("content-type", "application/json"));
    let mut resp = req
        .send_body(r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}],"mock":{"chunks":50,"delay_ms":100}}"#)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(resp);
    assert!(
        wait_for(Duration::from_secs(5), || mock
            .state()
            .aborted
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1),
        "upstream stream was not cancelled"
    );
}
