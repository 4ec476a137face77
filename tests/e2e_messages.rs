//! Anthropic's Messages API end to end against the chat mock: the translation as the upstream
//! receives it, Anthropic's error shape on these routes (auth, limits, validation, methods),
//! the event sequence, a cut stream, and count_tokens. (The official SDKs and Claude Code are
//! in `tests/sdk/`, run by `.ci/run`.)

mod common;

use common::*;
use scira2api_mock::MockOptions;
use serde_json::{Value, json};
use std::time::Duration;

fn events(body: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty() && !b.starts_with(':'))
        .map(|block| {
            let kind = block
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_default()
                .to_owned();
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("null");
            (kind, serde_json::from_str(data).unwrap_or(Value::Null))
        })
        .collect()
}

async fn post_key(gw: &Gateway, path: &str, body: &str, key: &str) -> Reply {
    send(
        client()
            .post(format!("{}{path}", gw.url))
            .insert_header(("x-api-key", key))
            .insert_header(("anthropic-version", "2023-06-01"))
            .insert_header(("Content-Type", "application/json")),
        Some(body),
    )
    .await
}

/// Anthropic's error shape, with the status.
fn assert_anthropic_error(r: &Reply, status: u16, kind: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert!(
        v.get("param").is_none() && v["error"].get("code").is_none(),
        "{v}"
    );
}

#[actix_rt::test]
async fn a_request_is_translated_onto_chat_and_back() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("APIKEY", "sk-a")]);
    let body = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "second"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                {"type": "text", "text": "Calling."}, {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "found"}], "is_error": true}]}
        ],
        "tools": [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object", "properties": {"q": {"type": "integer"}}}},
                  {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "stop_sequences": ["END"], "temperature": 0.5, "top_k": 5,
        "metadata": {"user_id": "u-1"}, "thinking": {"type": "enabled", "budget_tokens": 2048}
    });
    let r = post_key(&gw, "/v1/messages?beta=true", &body.to_string(), "sk-a").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("request-id").is_some());
    let dropped = r.header("x-dropped-params").unwrap_or_default();
    assert!(
        dropped.contains("tools[1]:web_search_20250305") && dropped.contains("top_k"),
        "{dropped}"
    );
    let up: Value = serde_json::from_slice(&mock.last_request().unwrap().body).unwrap();
    let msgs = up["messages"].as_array().unwrap();
    assert_eq!(msgs[0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(msgs[1]["role"], "user");
    assert_eq!(
        msgs[1]["content"].as_array().unwrap().len(),
        3,
        "consecutive user turns merged: {msgs:?}"
    );
    assert_eq!(
        msgs[1]["content"][2]["image_url"]["url"],
        "data:image/png;base64,iVBORw0KGgo="
    );
    assert_eq!(msgs[2]["content"], "Calling.");
    assert_eq!(msgs[2]["tool_calls"][0]["id"], "toolu_1");
    assert_eq!(
        msgs[2]["tool_calls"][0]["function"]["arguments"],
        "{\"q\":1}"
    );
    assert_eq!(
        msgs[3],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "Error: found"})
    );
    assert_eq!(up["tools"].as_array().unwrap().len(), 1);
    assert_eq!(up["parallel_tool_calls"], false);
    assert_eq!(up["stop"], json!(["END"]));
    assert_eq!(up["user"], "u-1");
    assert_eq!(up["reasoning_effort"], "low");
    assert_eq!(up["max_completion_tokens"], 64);
    let m = r.json();
    assert_eq!(m["type"], "message");
    assert_eq!(m["model"], "claude-sonnet-4-5");
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    // The last turn is a tool result: the mock answers with text.
    assert_eq!(m["content"][0]["type"], "text");
    assert_eq!(m["stop_reason"], "end_turn");
    assert!(m["usage"]["input_tokens"].as_u64().unwrap() > 0);
}

#[actix_rt::test]
async fn errors_on_these_routes_are_anthropic_shaped() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(
        &mock,
        &[
            ("APIKEY", "sk-a"),
            ("RATE_LIMIT_ENABLED", "true"),
            ("REQUESTS_PER_SECOND", "0.001"),
            ("BURST", "6"),
        ],
    );
    let ok = r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#;
    assert_anthropic_error(
        &post_key(&gw, "/v1/messages", ok, "wrong").await,
        401,
        "authentication_error",
    );
    let r = post(&gw, "/v1/messages", ok).await;
    assert_anthropic_error(&r, 401, "authentication_error");
    assert_anthropic_error(
        &post_key(
            &gw,
            "/v1/messages",
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            "sk-a",
        )
        .await,
        400,
        "invalid_request_error",
    );
    assert_anthropic_error(
        &post_key(&gw, "/v1/messages", "{nope", "sk-a").await,
        400,
        "invalid_request_error",
    );
    let forced = r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"web_search_20250305","name":"web_search"}],"tool_choice":{"type":"tool","name":"web_search"}}"#;
    let r = post_key(&gw, "/v1/messages", forced, "sk-a").await;
    assert_anthropic_error(&r, 400, "invalid_request_error");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("web_search")
    );
    let get = send(
        client()
            .get(format!("{}/v1/messages", gw.url))
            .insert_header(("x-api-key", "sk-a")),
        None,
    )
    .await;
    assert_anthropic_error(&get, 405, "invalid_request_error");
    assert!(mock.requests().is_empty(), "nothing reached the upstream");
    // The OpenAI routes keep OpenAI's shape.
    post(&gw, "/v1/chat/completions", "{}")
        .await
        .assert_error(401, Some("invalid_api_key"));
    // Rate limited: 429 rate_limit_error with retry-after.
    let mut r = post_key(&gw, "/v1/messages", ok, "sk-a").await;
    for _ in 0..10 {
        if r.status == 429 {
            break;
        }
        r = post_key(&gw, "/v1/messages", ok, "sk-a").await;
    }
    assert_anthropic_error(&r, 429, "rate_limit_error");
    assert!(r.header("retry-after").is_some());
}

#[actix_rt::test]
async fn a_stream_has_anthropics_event_sequence() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[]);
    let body = r#"{"model":"claude-x","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"stream"}]}"#;
    let r = post(&gw, "/v1/messages", body).await;
    assert_eq!(r.status, 200);
    let ev = events(&r.body);
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        &kinds[..4],
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta"
        ],
        "{kinds:?}"
    );
    assert_eq!(
        &kinds[kinds.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"],
        "{kinds:?}"
    );
    for (k, d) in &ev {
        assert_eq!(d["type"], k.as_str(), "event line and data type agree");
    }
    let text: String = ev
        .iter()
        .filter(|(k, _)| k == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert!(text.contains("stream"), "{text}");
    let delta = &ev[ev.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(ev[0].1["message"]["model"], "claude-x");

    // Tool calls: one tool_use block per call, arguments as input_json_delta.
    let body = r#"{"model":"claude-x","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"weather?"}],"tools":[{"name":"get_weather","input_schema":{"type":"object"}}]}"#;
    let ev = events(&post(&gw, "/v1/messages", body).await.body);
    let start = ev.iter().find(|(k, _)| k == "content_block_start").unwrap();
    assert_eq!(start.1["content_block"]["type"], "tool_use");
    assert_eq!(start.1["content_block"]["name"], "get_weather");
    let json: String = ev
        .iter()
        .filter(|(k, d)| k == "content_block_delta" && d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json).unwrap()["city"],
        "Paris"
    );
    assert_eq!(ev[ev.len() - 2].1["delta"]["stop_reason"], "tool_use");
}

#[actix_rt::test]
async fn a_cut_stream_ends_with_an_error_event_never_message_stop() {
    let opts = MockOptions {
        chunks: 6,
        chunk_delay: Duration::from_millis(20),
        ..MockOptions::default()
    };
    let mock = MockServer::start_on("127.0.0.1:0", opts, 1).unwrap();
    let gw = Gateway::openai(&mock, &[("RETRY", "3")]);
    mock.push_fault(Fault::CutAfter(4));
    let body = r#"{"model":"m","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"cut"}]}"#;
    let r = post(&gw, "/v1/messages", body).await;
    assert_eq!(r.status, 200);
    let ev = events(&r.body);
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.last(), Some(&"error"), "{kinds:?}");
    assert!(
        !kinds.contains(&"message_stop") && !kinds.contains(&"message_delta"),
        "{kinds:?}"
    );
    assert_eq!(ev.last().unwrap().1["error"]["type"], "api_error");
    assert_eq!(
        mock.requests().len(),
        1,
        "never a retry after the first byte"
    );
}

#[actix_rt::test]
async fn count_tokens_counts_without_calling_the_upstream() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[]);
    let small = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let big = r#"{"model":"m","system":"You are a very careful assistant.","messages":[{"role":"user","content":"hi there, count all of these words please"}],"tools":[{"name":"lookup","description":"Look something up","input_schema":{"type":"object","properties":{"q":{"type":"string"}}}}]}"#;
    let a = post(&gw, "/v1/messages/count_tokens?beta=true", small).await;
    let b = post(&gw, "/v1/messages/count_tokens", big).await;
    assert_eq!((a.status, b.status), (200, 200), "{}", a.text());
    let (a, b) = (
        a.json()["input_tokens"].as_u64().unwrap(),
        b.json()["input_tokens"].as_u64().unwrap(),
    );
    assert!(a > 0 && b > a + 10, "{a} {b}");
    assert!(mock.requests().is_empty());
}

#[actix_rt::test]
async fn a_slow_upstream_gets_pings_then_the_events_or_an_error_event() {
    let opts = MockOptions {
        latency: Duration::from_millis(400),
        ..MockOptions::default()
    };
    let mock = MockServer::start_on("127.0.0.1:0", opts, 1).unwrap();
    let gw = Gateway::openai(&mock, &[("HEARTBEAT_INTERVAL", "100ms")]);
    let body = r#"{"model":"m","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"slow"}]}"#;
    let r = post(&gw, "/v1/messages", body).await;
    assert_eq!(r.status, 200);
    let ev = events(&r.body);
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        &kinds[..2],
        ["ping", "ping"],
        "pings before the first event: {kinds:?}"
    );
    assert!(kinds.contains(&"message_start"));
    assert_eq!(kinds.last(), Some(&"message_stop"));

    let bad = scira2api_mock::bad::BadUpstream::start().unwrap();
    bad.push(vec![
        scira2api_mock::bad::Step::Sleep(Duration::from_millis(400)),
        scira2api_mock::bad::Step::Reset,
    ]);
    let gw = Gateway::start(&[
        ("BASE_URL", &bad.url()),
        ("HEARTBEAT_INTERVAL", "100ms"),
        ("RETRY", "1"),
    ]);
    let r = post(&gw, "/v1/messages", body).await;
    assert_eq!(r.status, 200);
    let ev = events(&r.body);
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"ping"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"error"), "{kinds:?}");
    assert!(!kinds.contains(&"message_stop"));
}
