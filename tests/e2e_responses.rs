//! The Responses API end to end against the chat mock: what goes upstream, what is refused
//! before any upstream call, failures before and after the first byte, stored responses, and
//! the access log and metrics. (The official SDK's view, with schema validation, is
//! `tests/sdk/openai_responses.py`, run by `.ci/run`.)

mod common;

use common::*;
use scira2api_mock::MockOptions;
use serde_json::{Value, json};
use std::time::Duration;

/// The events of a Responses stream: (`event:` line, data JSON).
fn events(body: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut kind = String::new();
        let mut data = None;
        for line in block.lines() {
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.to_owned();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data =
                    Some(serde_json::from_str::<Value>(d).unwrap_or_else(|e| panic!("{e}: {d}")));
            }
        }
        if let Some(d) = data {
            out.push((kind, d));
        }
    }
    out
}

fn upstream_body(mock: &MockServer) -> Value {
    serde_json::from_slice(&mock.last_request().unwrap().body).unwrap()
}

#[actix_rt::test]
async fn a_request_is_translated_onto_chat_completions() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[]);
    let req = json!({
        "model": "gpt-4o",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "House rules."},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Look:"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}
            ]},
            {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{\"q\":1}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "found"}
        ],
        "tools": [
            {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}, "strict": true},
            {"type": "web_search"}
        ],
        "tool_choice": {"type": "function", "name": "lookup"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}, "strict": true}},
        "reasoning": {"effort": "low"},
        "max_output_tokens": 50,
        "temperature": 0.2,
        "metadata": {"team": "x"},
        "prompt_cache_key": "k1",
        "client_metadata": {"x": 1}
    });
    let r = post(&gw, "/v1/responses", &req.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let dropped = r.header("x-dropped-params").unwrap_or_default();
    assert!(
        dropped.contains("tools[1]:web_search") && dropped.contains("client_metadata"),
        "{dropped}"
    );
    let up = upstream_body(&mock);
    assert_eq!(mock.last_request().unwrap().path, "/v1/chat/completions");
    let msgs = up["messages"].as_array().unwrap();
    assert_eq!(msgs[0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(
        msgs[1],
        json!({"role": "system", "content": "House rules."})
    );
    assert_eq!(
        msgs[2]["content"][1]["image_url"],
        json!({"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"})
    );
    assert_eq!(msgs[3]["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        msgs[3]["tool_calls"][0]["function"]["arguments"],
        "{\"q\":1}"
    );
    assert_eq!(
        msgs[4],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "found"})
    );
    assert_eq!(
        up["tools"].as_array().unwrap().len(),
        1,
        "the built-in tool is not sent"
    );
    assert_eq!(up["tools"][0]["function"]["strict"], true);
    assert_eq!(
        up["tool_choice"],
        json!({"type": "function", "function": {"name": "lookup"}})
    );
    assert_eq!(up["response_format"]["json_schema"]["name"], "out");
    assert_eq!(up["response_format"]["json_schema"]["strict"], true);
    assert_eq!(up["reasoning_effort"], "low");
    assert_eq!(up["max_completion_tokens"], 50);
    assert_eq!(up["prompt_cache_key"], "k1");
    assert!(
        up.get("metadata").is_none()
            && up.get("client_metadata").is_none()
            && up.get("input").is_none()
    );
    let body = r.json();
    assert_eq!(body["metadata"], json!({"team": "x"}), "metadata echoed");
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["model"], "gpt-4o");
}

#[actix_rt::test]
async fn what_cannot_be_honoured_is_refused_before_any_upstream_call() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[]);
    for (body, param) in [
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}),
            "tool_choice",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "file_search"}], "tool_choice": "required"}),
            "tool_choice",
        ),
        (
            json!({"model": "m", "input": "x", "background": true}),
            "background",
        ),
        (
            json!({"model": "m", "input": "x", "conversation": "conv_1"}),
            "conversation",
        ),
        (
            json!({"model": "m", "input": "x", "prompt": {"id": "pmpt_1"}}),
            "prompt",
        ),
        (
            json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input[0]",
        ),
        (
            json!({"model": "m", "input": [{"type": "web_search_call", "id": "ws_1"}]}),
            "input[0].type",
        ),
        (
            json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}),
            "text.format.schema",
        ),
        (
            json!({"model": "m", "input": "x", "previous_response_id": "resp_nope"}),
            "previous_response_id",
        ),
        (json!({"input": "x"}), "model"),
    ] {
        let r = post(&gw, "/v1/responses", &body.to_string()).await;
        let status = if param == "previous_response_id" {
            404
        } else {
            400
        };
        let e = r.assert_error(status, None);
        assert_eq!(e["param"], param, "{body}: {e}");
    }
    assert!(mock.requests().is_empty(), "nothing reached the upstream");
    let r = post(&gw, "/v1/responses", "{not json").await;
    r.assert_error(400, None);
}

#[actix_rt::test]
async fn an_upstream_failure_before_the_first_byte_is_a_clean_error() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("RETRY", "1")]);
    mock.push_fault(Fault::Status {
        status: 500,
        headers: vec![],
        body: bytes::Bytes::from_static(
            br#"{"error":{"message":"boom","type":"server_error","param":null,"code":null}}"#,
        ),
    });
    let r = post(
        &gw,
        "/v1/responses",
        r#"{"model":"m","input":"x","stream":true}"#,
    )
    .await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("boom")
    );
}

#[actix_rt::test]
async fn a_stream_cut_after_the_first_byte_ends_failed_never_completed() {
    let opts = MockOptions {
        chunks: 6,
        chunk_delay: Duration::from_millis(20),
        ..MockOptions::default()
    };
    let mock = MockServer::start_on("127.0.0.1:0", opts, 1).unwrap();
    let gw = Gateway::openai(&mock, &[("RETRY", "3")]);
    mock.push_fault(Fault::CutAfter(4));
    let r = post(
        &gw,
        "/v1/responses",
        r#"{"model":"m","input":"cut me","stream":true}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let ev = events(&r.body);
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(&kinds[..2], ["response.created", "response.in_progress"]);
    assert!(kinds.contains(&"response.output_text.delta"), "{kinds:?}");
    assert_eq!(
        &kinds[kinds.len() - 2..],
        ["error", "response.failed"],
        "{kinds:?}"
    );
    assert!(!kinds.contains(&"response.completed"), "{kinds:?}");
    let failed = &ev.last().unwrap().1["response"];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "server_error");
    assert_eq!(failed["output"][0]["status"], "incomplete");
    let seq: Vec<u64> = ev
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seq, (0..ev.len() as u64).collect::<Vec<_>>());
    assert!(!r.text().lines().any(|l| l == "data: [DONE]"));
    assert_eq!(
        mock.requests().len(),
        1,
        "never a retry after the first byte"
    );
}

#[actix_rt::test]
async fn streamed_tool_calls_are_items_in_order_and_stored_responses_continue() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[]);
    let tools =
        json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]);
    let body = json!({"model": "m", "input": "weather?", "tools": tools, "stream": true});
    let r = post(&gw, "/v1/responses", &body.to_string()).await;
    let ev = events(&r.body);
    let added: Vec<&Value> = ev
        .iter()
        .filter(|(k, _)| k == "response.output_item.added")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["item"]["type"], "function_call");
    assert_eq!(added[0]["item"]["name"], "get_weather");
    let args: String = ev
        .iter()
        .filter(|(k, _)| k == "response.function_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    let done = ev
        .iter()
        .find(|(k, _)| k == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done.1["arguments"].as_str().unwrap(), args);
    let completed = &ev.last().unwrap().1["response"];
    assert_eq!(ev.last().unwrap().0, "response.completed");
    let call_id = completed["output"][0]["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = completed["id"].as_str().unwrap().to_owned();
    // The stored stream continues with its function call output: the upstream gets the call
    // and its result.
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    let next = json!({"model": "m", "previous_response_id": id, "tools": tools,
        "input": [{"type": "function_call_output", "call_id": call_id, "output": "sunny"}]});
    let r2 = post(&gw, "/v1/responses", &next.to_string()).await;
    assert_eq!(r2.status, 200, "{}", r2.text());
    let msgs = upstream_body(&mock)["messages"].as_array().unwrap().clone();
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool"], "{msgs:?}");
    assert_eq!(msgs[1]["tool_calls"][0]["id"], call_id.as_str());
    assert_eq!(r2.json()["output"][0]["type"], "message");
    let got = get(&gw, &format!("/v1/responses/{id}")).await;
    assert_eq!(got.json()["id"], id.as_str());
    let del = send(
        client().delete(format!("{}/v1/responses/{id}", gw.url)),
        None,
    )
    .await;
    assert_eq!(
        del.json(),
        json!({"id": id, "object": "response", "deleted": true})
    );
    get(&gw, &format!("/v1/responses/{id}"))
        .await
        .assert_error(404, None);
}

#[actix_rt::test]
async fn responses_are_logged_and_counted_like_chat() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("APIKEY", "sk-a")]);
    let r = send(
        client()
            .post(format!("{}/v1/responses", gw.url))
            .insert_header(("Authorization", "Bearer sk-a"))
            .insert_header(("Content-Type", "application/json")),
        Some(r#"{"model":"gpt-4o","input":"log me"}"#),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-request-id").is_some());
    post(
        &gw,
        "/v1/responses",
        r#"{"model":"gpt-4o","input":"no key"}"#,
    )
    .await
    .assert_error(401, Some("invalid_api_key"));
    assert!(wait_for(Duration::from_secs(2), || gw.log().lines().any(
        |l| l.contains("POST /v1/responses 200")
            && l.contains("model=gpt-4o")
            && l.contains("attempts=1")
    )));
    let m = send(
        client()
            .get(format!("{}/metrics", gw.url))
            .insert_header(("Authorization", "Bearer sk-a")),
        None,
    )
    .await
    .json();
    assert_eq!(m["requests"]["by_route"]["/v1/responses"]["200"], 1, "{m}");
    assert_eq!(m["requests"]["by_route"]["/v1/responses"]["401"], 1, "{m}");
}

#[actix_rt::test]
async fn a_native_upstream_gets_the_request_as_it_is_and_chat_still_works() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(
        &mock,
        &[
            ("UPSTREAM_RESPONSES_API", "native"),
            ("MODEL_MAPPINGS", "gpt-4o:mock-gpt"),
        ],
    );
    let body = json!({"model": "gpt-4o", "input": "native please", "tools": [{"type": "web_search"}], "include": ["reasoning.encrypted_content"], "store": true});
    let r = post(&gw, "/v1/responses", &body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("x-dropped-params").is_none(),
        "nothing is dropped on the native path"
    );
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.path, "/v1/responses");
    let up: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(up["model"], "mock-gpt");
    assert_eq!(
        up["tools"], body["tools"],
        "the body is forwarded unchanged"
    );
    assert_eq!(up["include"], body["include"]);
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("resp_mock"), "{v}");
    assert_eq!(v["model"], "gpt-4o", "model set back to the client's name");

    let s = post(
        &gw,
        "/v1/responses",
        r#"{"model":"gpt-4o","input":"stream native","stream":true}"#,
    )
    .await;
    let ev = events(&s.body);
    assert_eq!(ev[0].0, "response.created");
    assert_eq!(ev[0].1["response"]["model"], "gpt-4o");
    assert_eq!(ev.last().unwrap().0, "response.completed");
    assert_eq!(ev.last().unwrap().1["response"]["model"], "gpt-4o");
    assert!(
        ev.last().unwrap().1["response"]["id"]
            .as_str()
            .unwrap()
            .starts_with("resp_mock")
    );
    // Both answers' usage counted as chat's is, from the upstream's own response objects.
    let output = ev.last().unwrap().1["response"]["usage"]["output_tokens"]
        .as_u64()
        .unwrap();
    let m = get(&gw, "/metrics").await.json();
    assert_eq!(m["tokens"]["usage_source"]["upstream"], 2, "{m}");
    assert!(
        m["tokens"]["by_model"]["gpt-4o"]["completion"]
            .as_u64()
            .unwrap()
            > output
    );
    assert_eq!(
        (
            m["streams"]["completed"].as_u64(),
            m["streams"]["active"].as_i64()
        ),
        (Some(1), Some(0))
    );

    // GET and DELETE of an id the gateway does not hold go to the native upstream.
    let got = get(&gw, "/v1/responses/resp_upstream_1").await;
    assert_eq!(got.status, 404);
    let last = mock.last_request().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("GET", "/v1/responses/resp_upstream_1")
    );

    // Chat clients keep working against the same provider.
    let c = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"chat"}]}"#,
    )
    .await;
    assert_eq!(c.status, 200);
    assert_eq!(mock.last_request().unwrap().path, "/v1/chat/completions");
}

#[actix_rt::test]
async fn a_native_stream_cut_ends_with_error_and_failed_numbered_after_the_last_event() {
    let opts = MockOptions {
        chunks: 6,
        chunk_delay: Duration::from_millis(20),
        ..MockOptions::default()
    };
    let mock = MockServer::start_on("127.0.0.1:0", opts, 1).unwrap();
    let gw = Gateway::openai(
        &mock,
        &[("UPSTREAM_RESPONSES_API", "native"), ("RETRY", "3")],
    );
    mock.push_fault(Fault::CutAfter(5));
    let r = post(
        &gw,
        "/v1/responses",
        r#"{"model":"m","input":"cut native","stream":true}"#,
    )
    .await;
    let ev = events(&r.body);
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    let n = kinds.len();
    assert!(n >= 4 && kinds[0] == "response.created", "{kinds:?}");
    assert_eq!(&kinds[n - 2..], ["error", "response.failed"], "{kinds:?}");
    assert!(!kinds.contains(&"response.completed"), "{kinds:?}");
    let seq: Vec<u64> = ev
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seq, (0..n as u64).collect::<Vec<_>>());
    let failed = &ev[n - 1].1["response"];
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["id"].as_str().unwrap().starts_with("resp_mock"),
        "{failed}"
    );
    assert_eq!(
        mock.requests().len(),
        1,
        "never a retry after the first byte"
    );
}

#[actix_rt::test]
async fn config_file_instances_choose_native_or_translated() {
    let (a, b) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let dir = std::env::temp_dir().join(format!("scira2api-resp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("native.yaml");
    std::fs::write(
        &path,
        format!(
            "providers:\n  - {{name: oa, base_url: {}, responses_api: native}}\n  - {{name: vllm, base_url: {}}}\nmodels:\n  - {{name: big, deployments: [{{provider: oa, model: gpt-5}}]}}\n  - {{name: local, deployments: [{{provider: vllm, model: qwen}}]}}\n",
            a.url(),
            b.url()
        ),
    )
    .unwrap();
    let gw = Gateway::start(&[("CONFIG_FILE", &path.display().to_string())]);
    let r = post(&gw, "/v1/responses", r#"{"model":"big","input":"x"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-provider").as_deref(), Some("oa"));
    assert_eq!(a.last_request().unwrap().path, "/v1/responses");
    let r = post(&gw, "/v1/responses", r#"{"model":"local","input":"x"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(b.last_request().unwrap().path, "/v1/chat/completions");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[actix_rt::test]
async fn a_slow_upstream_gets_keep_alives_then_the_events_or_a_failed_end() {
    let opts = MockOptions {
        latency: Duration::from_millis(400),
        ..MockOptions::default()
    };
    let mock = MockServer::start_on("127.0.0.1:0", opts, 1).unwrap();
    let gw = Gateway::openai(&mock, &[("HEARTBEAT_INTERVAL", "100ms")]);
    let r = post(
        &gw,
        "/v1/responses",
        r#"{"model":"m","input":"slow","stream":true}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with(": keep-alive\n\n"), "{}", r.text());
    let ev = events(&r.body);
    assert_eq!(ev[0].0, "response.created");
    assert_eq!(ev.last().unwrap().0, "response.completed");

    // The head is out when the upstream fails: the stream's own failed end, in sequence.
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
    let r = post(
        &gw,
        "/v1/responses",
        r#"{"model":"m","input":"doomed","stream":true}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with(": keep-alive\n\n"), "{}", r.text());
    let ev = events(&r.body);
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["error", "response.failed"], "{}", r.text());
    assert_eq!(ev[1].1["sequence_number"], 1);
    assert_eq!(ev[1].1["response"]["status"], "failed");
    assert_eq!(ev[1].1["response"]["model"], "m");
}
