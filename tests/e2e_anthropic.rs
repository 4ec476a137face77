//! Anthropic as an upstream (`PROVIDER=anthropic`) end to end against the mock's Messages API:
//! a Messages client's request passes through (only `model` rewritten, `anthropic-*` headers
//! forwarded, the gateway's upstream key as `x-api-key`, the stream event by event), and an
//! OpenAI chat client's request is translated onto Messages and back (tools, usage, finish
//! reasons, streams), with Anthropic's errors mapped for either client. (The SDKs, Claude Code
//! and the OpenAI SDK against this upstream are in `tests/sdk/`, run by `.ci/run`.)

mod common;

use common::*;
use scira2api_mock::MockOptions;
use serde_json::{Value, json};
use std::time::Duration;

fn events(body: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8_lossy(body)
        .split("\n\n")
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

/// A gateway in front of `mock` as an Anthropic upstream, `claude-client` mapped to
/// `claude-internal`.
fn anthropic(mock: &MockServer, extra: &[(&str, &str)]) -> Gateway {
    let base = mock.url();
    let mut env = vec![
        ("BASE_URL", base.as_str()),
        ("PROVIDER", "anthropic"),
        ("UPSTREAM_API_KEY", "sk-ant-upstream"),
        ("MODEL_MAPPINGS", "claude-client:claude-internal"),
        ("APIKEY", "sk-client"),
    ];
    env.extend_from_slice(extra);
    Gateway::start(&env)
}

async fn messages(gw: &Gateway, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client()
        .post(format!("{}/v1/messages?beta=true", gw.url))
        .insert_header(("x-api-key", "sk-client"))
        .insert_header(("content-type", "application/json"));
    for h in headers {
        req = req.insert_header(*h);
    }
    send(req, Some(body)).await
}

async fn chat(gw: &Gateway, body: &str) -> Reply {
    send(
        client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .insert_header(("authorization", "Bearer sk-client"))
            .insert_header(("content-type", "application/json")),
        Some(body),
    )
    .await
}

#[actix_rt::test]
async fn a_messages_request_passes_through_with_its_headers() {
    let mock = MockServer::start().unwrap();
    let gw = anthropic(&mock, &[]);
    let body = r#"{"model":"claude-client","max_tokens":64,"messages":[{"role":"user","content":"hello native"}],"top_k":3,"container":"c1"}"#;
    let r = messages(
        &gw,
        body,
        &[
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "interleaved-thinking-2025-05-14"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    assert!(m["id"].as_str().unwrap().starts_with("msg_mock"), "{m}");
    assert_eq!(m["model"], "claude-client", "the client's name comes back");
    assert_eq!(m["type"], "message");
    assert!(
        m["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("hello native")
    );
    assert!(
        r.header("x-dropped-params").is_none(),
        "nothing dropped natively"
    );
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-upstream"));
    assert_eq!(
        sent.header("authorization"),
        None,
        "the client's key stays here"
    );
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        sent.header("anthropic-beta"),
        Some("interleaved-thinking-2025-05-14")
    );
    let v = sent.json();
    assert_eq!(v["model"], "claude-internal");
    assert_eq!(v["top_k"], 3, "every field forwarded");
    assert_eq!(v["container"], "c1");

    // Without the client's anthropic-version the gateway sends its default.
    let r = messages(&gw, body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        mock.last_request().unwrap().header("anthropic-version"),
        Some("2023-06-01")
    );
}

#[actix_rt::test]
async fn a_messages_stream_passes_through_event_by_event() {
    let mock = MockServer::start().unwrap();
    let gw = anthropic(&mock, &[]);
    let body = r#"{"model":"claude-client","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"weather?"}],"tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}]}"#;
    let r = messages(&gw, body, &[("anthropic-version", "2023-06-01")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = events(&r.body);
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds[0], "message_start", "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"message_stop"), "{kinds:?}");
    assert_eq!(ev[0].1["message"]["model"], "claude-client");
    assert!(
        ev[0].1["message"]["id"]
            .as_str()
            .unwrap()
            .starts_with("msg_mock")
    );
    let tool = ev
        .iter()
        .find(|(k, d)| k == "content_block_start" && d["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    assert_eq!(tool.1["content_block"]["name"], "get_weather");
    let delta = ev.iter().find(|(k, _)| k == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
    let output = delta.1["usage"]["output_tokens"].as_u64().unwrap();

    // Passed through, and counted as chat's answers are: the upstream's usage, the stream's end.
    let m = send(
        client()
            .get(format!("{}/metrics", gw.url))
            .insert_header(("authorization", "Bearer sk-client")),
        None,
    )
    .await
    .json();
    assert_eq!(
        m["tokens"]["by_model"]["claude-client"]["completion"], output,
        "{m}"
    );
    assert!(
        m["tokens"]["by_model"]["claude-client"]["prompt"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(m["tokens"]["usage_source"]["upstream"], 1);
    assert_eq!(m["streams"]["completed"], 1);
    assert_eq!(m["streams"]["active"], 0);
    assert!(
        gw.log().contains(&format!("+{output} (upstream)")),
        "the access line has the tokens: {}",
        gw.log()
    );
}

#[actix_rt::test]
async fn an_anthropic_failure_is_retried_before_the_first_byte_and_reported_after_it() {
    let opts = MockOptions {
        chunks: 6,
        chunk_delay: Duration::from_millis(10),
        ..MockOptions::default()
    };
    let mock = MockServer::start_on("127.0.0.1:0", opts, 1).unwrap();
    let gw = anthropic(&mock, &[("RETRY", "3")]);
    let overloaded =
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    mock.push_fault(Fault::Status {
        status: 529,
        headers: vec![],
        body: overloaded.into(),
    });
    let body = r#"{"model":"claude-client","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"retry me"}]}"#;
    let r = messages(&gw, body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(events(&r.body).last().unwrap().0, "message_stop");
    assert_eq!(mock.requests().len(), 2, "the 529 was retried");

    // Overloaded after the first byte: Anthropic's error event, no message_stop, no retry.
    mock.push_fault(Fault::ErrorAfter(3));
    let before = mock.requests().len();
    let r = messages(&gw, body, &[]).await;
    let ev = events(&r.body);
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.last(), Some(&"error"), "{kinds:?}");
    assert!(!kinds.contains(&"message_stop"), "{kinds:?}");
    assert_eq!(ev.last().unwrap().1["error"]["type"], "overloaded_error");
    // A cut: the gateway writes the error event itself.
    mock.push_fault(Fault::CutAfter(3));
    let r = messages(&gw, body, &[]).await;
    let kinds: Vec<String> = events(&r.body).into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds.last().map(String::as_str), Some("error"), "{kinds:?}");
    assert_eq!(
        mock.requests().len(),
        before + 2,
        "never a retry after the first byte"
    );

    // The same fault for a chat client: an OpenAI error frame (then the closing [DONE]), never
    // a finish_reason.
    let chat_body = r#"{"model":"claude-client","stream":true,"messages":[{"role":"user","content":"retry me"}]}"#;
    mock.push_fault(Fault::ErrorAfter(3));
    let r = chat(&gw, chat_body).await;
    assert_eq!(r.status, 200);
    let frames = sse_frames(&r.body);
    assert!(
        !frames.iter().any(|f| f.contains("\"finish_reason\":\"")),
        "{frames:?}"
    );
    let last: Value = serde_json::from_str(&frames[frames.len() - 2]).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("overloaded_error"),
        "{last}"
    );

    // A rejected upstream key is the operator's problem: 403 on either route, never the key.
    let bad =
        r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
    mock.push_fault(Fault::Status {
        status: 401,
        headers: vec![],
        body: bad.into(),
    });
    let r = messages(
        &gw,
        r#"{"model":"claude-client","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
        &[],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "permission_error");
    assert!(!r.text().contains("sk-ant-upstream"));
    mock.push_fault(Fault::Status {
        status: 400,
        headers: vec![],
        body: r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: roles must alternate"}}"#.into(),
    });
    let r = chat(
        &gw,
        r#"{"model":"claude-client","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    let e = r.assert_error(400, Some("invalid_request_error"));
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("roles must alternate"),
        "{e}"
    );
}

#[actix_rt::test]
async fn a_chat_request_is_translated_onto_messages_and_back() {
    let mock = MockServer::start().unwrap();
    let gw = anthropic(&mock, &[]);
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let body = json!({
        "model": "claude-client",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "weather in Paris?"}],
        "tools": tools, "tool_choice": "auto", "temperature": 0.2, "seed": 5, "max_tokens": 100,
    });
    let r = chat(&gw, &body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["model"], "claude-client");
    assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
    let call = &c["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["city"], "Paris");
    assert!(c["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(r.header("x-dropped-params").as_deref(), Some("seed"));
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-upstream"));
    let v = sent.json();
    assert_eq!(v["model"], "claude-internal");
    assert_eq!(v["system"], "Be brief.");
    assert_eq!(v["max_tokens"], 100);
    assert_eq!(v["tools"][0]["input_schema"]["required"][0], "city");
    assert_eq!(v["tool_choice"]["type"], "auto");
    assert!(v.get("seed").is_none());

    // The tool result round trip, streamed: text, a stop, the usage chunk, [DONE].
    let id = call["id"].as_str().unwrap();
    let body = json!({
        "model": "claude-client", "stream": true, "stream_options": {"include_usage": true},
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": id, "content": "18C"}
        ],
        "tools": tools,
    });
    let r = chat(&gw, &body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let chunks = sse_json(&r.body);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty());
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["stop"]);
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    let sent = mock.last_request().unwrap().json();
    assert_eq!(sent["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(sent["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(sent["messages"][2]["content"][0]["tool_use_id"], id);
    assert_eq!(
        sent["max_tokens"], 4096,
        "Messages requires one: the default"
    );

    // A streamed tool call: deltas by index, finish tool_calls.
    let body = json!({"model": "claude-client", "stream": true, "messages": [{"role": "user", "content": "weather?"}], "tools": tools});
    let chunks = sse_json(&chat(&gw, &body.to_string()).await.body);
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap()["city"],
        "Paris"
    );
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "no usage asked, none sent"
    );
}

#[actix_rt::test]
async fn what_messages_cannot_honour_is_a_400_before_any_call() {
    let mock = MockServer::start().unwrap();
    let gw = anthropic(&mock, &[]);
    for (body, param) in [
        (
            json!({"model": "claude-client", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}}),
            "response_format",
        ),
        (
            json!({"model": "claude-client", "messages": [{"role": "user", "content": "x"}], "n": 2}),
            "n",
        ),
        (
            json!({"model": "claude-client", "messages": [{"role": "user", "content": "x"}], "logprobs": true}),
            "logprobs",
        ),
        (
            json!({"model": "claude-client", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}]}]}),
            "messages[0].content[0].type",
        ),
    ] {
        let r = chat(&gw, &body.to_string()).await;
        let e = r.assert_error(400, Some("unsupported_parameter"));
        assert_eq!(e["param"], param, "{e}");
    }
    // Messages requires max_tokens: refused here too, in Anthropic's shape.
    let r = messages(
        &gw,
        r#"{"model":"claude-client","messages":[{"role":"user","content":"x"}]}"#,
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert!(mock.requests().is_empty(), "nothing reached the upstream");
}
