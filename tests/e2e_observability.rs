//! End to end: usage correction, `/metrics` (JSON and Prometheus), request ids and the access
//! log of the real server binary.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello world"}]}"#;

async fn post_h(gw: &Gateway, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client()
        .post(format!("{}{path}", gw.url))
        .insert_header(("content-type", "application/json"));
    for (k, v) in headers {
        req = req.insert_header((k.to_string(), v.to_string()));
    }
    send(req, Some(body)).await
}

async fn metrics(gw: &Gateway) -> Value {
    let r = get(gw, "/metrics").await;
    assert_eq!(r.status, 200);
    r.json()
}

#[actix_rt::test]
async fn streams_always_ask_upstream_for_usage_and_strip_it_for_the_client() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("MODEL_MAPPINGS", "gpt-4o:mock-gpt")]);
    let r = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    let chunks = sse_json(&r.body);
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "no usage chunk for the client"
    );
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "no usage field either"
    );
    let seen = mock.last_request().unwrap().json();
    assert_eq!(
        seen["stream_options"],
        json!({"include_usage": true}),
        "asked upstream anyway"
    );
    // The usage was counted all the same.
    let m = metrics(&gw).await;
    assert!(m["tokens"]["completion"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(m["tokens"]["usage_source"]["upstream"], 1);
}

#[actix_rt::test]
async fn missing_usage_is_estimated_and_marked() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[]);
    // Non-stream answer without usage: filled in, header says so.
    let r = post(&gw, "/v1/chat/completions", r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello world"}],"mock":{"no_usage":true,"content":"hello world"}}"#).await;
    assert_eq!(r.header("x-usage-source").as_deref(), Some("estimated"));
    // 3 + 1 ("user") + 2 ("hello world") + 3 = 9 prompt tokens (o200k), 2 completion tokens.
    assert_eq!(
        r.json()["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11})
    );
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    assert_eq!(r.header("x-usage-source").as_deref(), Some("upstream"));
    // Stream without upstream usage, client asked: an estimated usage chunk, marked.
    let r = post(&gw, "/v1/chat/completions", r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello world"}],"mock":{"no_usage":true,"content":"hello world"}}"#).await;
    let chunks = sse_json(&r.body);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11})
    );
    assert_eq!(last["usage_source"], "estimated");
    assert_eq!(last["id"], chunks[0]["id"]);
    let m = metrics(&gw).await;
    assert_eq!(m["tokens"]["usage_source"]["estimated"], 2, "{m}");
    assert_eq!(
        m["tokens"]["by_model"]["gpt-4o"]["prompt"]
            .as_u64()
            .unwrap(),
        9 + 9
            + m["tokens"]["by_model"]["gpt-4o"]["prompt"]
                .as_u64()
                .unwrap()
            - 18
    );
}

#[actix_rt::test]
async fn every_metric_moves_when_its_event_happens() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(
        &mock,
        &[
            ("CACHE_ENABLED", "true"),
            ("RATE_LIMIT_ENABLED", "true"),
            ("BURST", "1000"),
            ("RETRY", "2"),
            ("RETRY_BASE_DELAY", "1ms"),
            ("APIKEY", "k1"),
        ],
    );
    let auth = [("authorization", "Bearer k1")];
    let m0 = {
        let r = send(
            client()
                .get(format!("{}/metrics", gw.url))
                .insert_header(auth[0]),
            None,
        )
        .await;
        r.json()
    };
    assert_eq!(m0["requests"]["total"], 0);
    assert!(
        m0["process"]["rss_bytes"].as_u64().unwrap() > 1_000_000,
        "{m0}"
    );
    assert!(m0["process"]["threads"].as_u64().unwrap() >= 2);
    assert!(m0["process"]["open_fds"].as_u64().unwrap() >= 3);
    assert!(m0["uptime"].is_string() && m0["start_time"].as_str().unwrap().ends_with('Z'));

    // ok, then a cache hit, a client error, a retried upstream error, a stream, a cut stream.
    assert_eq!(
        post_h(&gw, "/v1/chat/completions", CHAT, &auth)
            .await
            .status,
        200
    );
    assert_eq!(
        post_h(&gw, "/v1/chat/completions", CHAT, &auth)
            .await
            .header("x-cache")
            .as_deref(),
        Some("HIT")
    );
    assert_eq!(
        post_h(&gw, "/v1/chat/completions", "{", &auth).await.status,
        400
    );
    assert_eq!(post(&gw, "/v1/chat/completions", CHAT).await.status, 401);
    for _ in 0..2 {
        mock.push_fault(Fault::Status {
            status: 503,
            headers: vec![],
            body: Bytes::from_static(b"down"),
        });
    }
    assert_eq!(
        post_h(
            &gw,
            "/v1/chat/completions",
            &CHAT.replace("hello", "other"),
            &auth
        )
        .await
        .status,
        502
    );
    let s = post_h(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"s"}]}"#,
        &auth,
    )
    .await;
    assert_eq!(s.status, 200);
    mock.push_fault(Fault::CutAfter(2));
    let cut = post_h(&gw, "/v1/chat/completions", r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"c"}],"mock":{"chunks":5,"delay_ms":20}}"#, &auth).await;
    assert!(cut.text().contains("\"error\""));
    std::thread::sleep(Duration::from_millis(100));

    let m = send(
        client()
            .get(format!("{}/metrics", gw.url))
            .insert_header(auth[0]),
        None,
    )
    .await
    .json();
    let r = &m["requests"];
    assert_eq!(r["total"], 8, "7 chat requests and the first /metrics: {m}");
    assert_eq!(r["success"], 5);
    assert_eq!(r["client_errors"], 2);
    assert_eq!(r["server_errors"], 1);
    assert_eq!(r["in_flight"], 1, "the /metrics request itself");
    assert_eq!(r["by_route"]["/v1/chat/completions"]["200"], 4);
    assert_eq!(r["by_route"]["/v1/chat/completions"]["401"], 1);
    assert_eq!(r["by_route"]["/metrics"]["200"], 1);
    assert!(r["upstream_errors"].as_u64().unwrap() >= 2);
    assert_eq!(m["upstream_errors_by_kind"]["upstream_error"], 2, "{m}");
    assert_eq!(m["retries"], 1);
    assert_eq!(
        m["latency"]["total"]["count"], 8,
        "every finished request, streams at their end: {m}"
    );
    assert!(m["latency"]["gateway_overhead"]["count"].as_u64().unwrap() >= 3);
    assert!(m["latency"]["gateway_overhead"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(m["streams"]["completed"], 1);
    assert_eq!(m["streams"]["cut"], 1);
    assert_eq!(m["streams"]["active"], 0);
    assert!(
        m["tokens"]["prompt"].as_u64().unwrap() > 0
            && m["tokens"]["completion"].as_u64().unwrap() > 0
    );
    assert!(
        m["tokens"]["by_model"]["gpt-4o"]["prompt"]
            .as_u64()
            .unwrap()
            > 0
    );
    let c = &m["cache"];
    assert_eq!(
        (c["hits"].as_u64(), c["entries"].as_u64()),
        (Some(1), Some(2)),
        "{c}"
    );
    assert!(c["misses"].as_u64().unwrap() >= 3 && c["weight_bytes"].as_u64().unwrap() > 0);
    assert!(c["hit_ratio"].as_f64().unwrap() > 0.0);
    let p = &m["connection_pool"];
    // The cut stream broke its connection, the 503s may close theirs: a few connections at most.
    let created = p["created"].as_u64().unwrap();
    assert!((1..=4).contains(&created), "{p}");
    assert!(p["open"].as_u64().unwrap() <= created);
    assert_eq!(
        p["upstream_requests"], 5,
        "ok, 503 + its retry, stream, cut stream: {p}"
    );
    assert_eq!(p["reused"].as_u64().unwrap(), 5 - created);
    let l = &m["rate_limiter"];
    assert!(
        l["allowed"].as_u64().unwrap() >= 6 && l["keys_tracked"].as_u64().unwrap() >= 1,
        "{l}"
    );
    // CPU time is counted in clock ticks (10 ms): a quick run may not have used one yet.
    let process = &m["process"];
    assert!(
        process["cpu_seconds"].as_f64().is_some_and(|c| c >= 0.0),
        "{process}"
    );
    assert!(
        process["rss_bytes"].as_u64().unwrap() > 1 << 20,
        "{process}"
    );
    assert!(process["threads"].as_u64().unwrap() >= 2, "{process}");

    // A refused request moves `limited`.
    let tight = Gateway::openai(&mock, &[("RATE_LIMIT_ENABLED", "true"), ("BURST", "1")]);
    post(&tight, "/v1/chat/completions", CHAT).await;
    assert_eq!(post(&tight, "/v1/chat/completions", CHAT).await.status, 429);
    assert_eq!(metrics(&tight).await["rate_limiter"]["limited"], 1);
}

#[actix_rt::test]
async fn prometheus_exposition_is_valid() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[]);
    post(&gw, "/v1/chat/completions", CHAT).await;
    let r = get(&gw, "/metrics/prometheus").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text();
    for needle in [
        "# HELP scira2api_http_requests_total",
        "# TYPE scira2api_http_requests_total counter",
        "# TYPE scira2api_request_duration_seconds histogram",
        "scira2api_request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"0.005\"}",
        "scira2api_tokens_total{kind=\"prompt\",model=\"gpt-4o\"}",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    // Prometheus-style content negotiation on /metrics.
    let neg = send(
        client()
            .get(format!("{}/metrics", gw.url))
            .insert_header(("accept", "text/plain")),
        None,
    )
    .await;
    assert!(
        neg.text()
            .contains("# TYPE scira2api_http_requests_total counter")
    );
    // promtool, when installed (CI installs it), accepts it.
    assert_promtool_accepts(&text);
}

#[actix_rt::test]
async fn request_ids_are_returned_and_in_every_log_line() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(
        &mock,
        &[
            ("APIKEY", "secret-key-1"),
            ("RETRY", "2"),
            ("RETRY_BASE_DELAY", "1ms"),
        ],
    );
    mock.push_fault(Fault::Status {
        status: 503,
        headers: vec![],
        body: Bytes::from_static(b"busy"),
    });
    let r = post_h(
        &gw,
        "/v1/chat/completions",
        CHAT,
        &[
            ("authorization", "Bearer secret-key-1"),
            ("x-request-id", "my-req-42"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id").as_deref(), Some("my-req-42"));
    let minted = get(&gw, "/health").await.header("x-request-id").unwrap();
    assert!(minted.starts_with("req_") && minted.len() > 20);
    let e = post(&gw, "/v1/chat/completions", CHAT).await;
    assert!(e.header("x-request-id").is_some(), "errors carry it too");
    assert!(wait_for(Duration::from_secs(2), || gw
        .log()
        .contains("request_id=my-req-42")));
    let log = gw.log();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains("my-req-42")).collect();
    assert!(
        ours.iter().any(|l| l.contains("retrying in")),
        "the retry line carries the id: {ours:?}"
    );
    let access = ours
        .iter()
        .find(|l| l.contains("scira2api::access"))
        .expect("access line");
    for field in [
        "POST /v1/chat/completions 200",
        "model=gpt-4o",
        "stream=false",
        "tokens=",
        "upstream_ms=",
        "total_ms=",
        "cache=BYPASS",
        "retries=1",
    ] {
        assert!(access.contains(field), "{field} in {access}");
    }
    assert!(!log.contains("secret-key-1"), "no secrets");
    assert!(!log.contains("hello world"), "no prompt text");
}

#[actix_rt::test]
async fn streams_are_logged_when_they_end_and_overhead_is_reported() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[]);
    let r = post_h(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        &[("x-request-id", "stream-1")],
    )
    .await;
    let overhead: f64 = r.header("x-gateway-overhead-ms").unwrap().parse().unwrap();
    assert!((0.0..50.0).contains(&overhead), "{overhead}");
    assert!(
        wait_for(Duration::from_secs(2), || gw
            .log()
            .lines()
            .any(|l| l.contains("request_id=stream-1")
                && l.contains("stream=true")
                && l.contains("(upstream)"))),
        "{}",
        gw.log()
    );
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    assert!(r.header("x-gateway-overhead-ms").is_some());
}

#[actix_rt::test]
async fn failed_requests_log_their_retries_and_upstream_time() {
    let mock = MockServer::start().unwrap();
    for _ in 0..3 {
        mock.push_fault(Fault::Status {
            status: 503,
            headers: vec![],
            body: bytes::Bytes::from_static(
                br#"{"error":{"message":"busy","type":"server_error","param":null,"code":null}}"#,
            ),
        });
    }
    let gw = Gateway::openai(
        &mock,
        &[
            ("LOG_LEVEL", "info"),
            ("RETRY", "3"),
            ("RETRY_BASE_DELAY", "20ms"),
        ],
    );
    let r = post_h(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(wait_for(Duration::from_secs(2), || gw
        .log()
        .contains("POST /v1/chat/completions 503")));
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("POST /v1/chat/completions 503"))
        .unwrap();
    assert!(line.contains("retries=2"), "{line}");
    assert!(!line.contains("upstream_ms=0.0 "), "{line}");
}

#[test]
fn an_unreadable_rust_log_is_reported() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("RUST_LOG", "scira2api=loud,=")]);
    assert!(
        wait_for(Duration::from_secs(2), || gw.log().contains("RUST_LOG=")),
        "{}",
        gw.log()
    );
}
