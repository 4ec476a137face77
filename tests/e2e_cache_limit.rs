//! End to end: the response cache and the rate limiter of the real server binary.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::Value;
use std::time::Duration;

const CHAT: &str =
    r#"{"model":"m","temperature":0.5,"messages":[{"role":"user","content":"cache me"}]}"#;

fn cached(mock: &MockServer, extra: &[(&str, &str)]) -> Gateway {
    let mut env = vec![("CACHE_ENABLED", "true"), ("RETRY", "1")];
    env.extend_from_slice(extra);
    Gateway::openai(mock, &env)
}

fn upstream_calls(mock: &MockServer) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .count()
}

async fn post_h(gw: &Gateway, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .insert_header(("content-type", "application/json"));
    for (k, v) in headers {
        req = req.insert_header((k.to_string(), v.to_string()));
    }
    send(req, Some(body)).await
}

#[actix_rt::test]
async fn identical_requests_reach_the_upstream_once_whatever_the_field_order() {
    let mock = MockServer::start().unwrap();
    let gw = cached(&mock, &[]);
    let a = post(&gw, "/v1/chat/completions", CHAT).await;
    assert_eq!(a.header("x-cache").as_deref(), Some("MISS"));
    let b = post(
        &gw,
        "/v1/chat/completions",
        r#"{"messages":[{"content":"cache me","role":"user"}],"temperature":0.50,"model":"m"}"#,
    )
    .await;
    assert_eq!(b.header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(upstream_calls(&mock), 1);
    let (va, vb) = (a.json(), b.json());
    assert_eq!(
        va["choices"][0]["message"]["content"],
        vb["choices"][0]["message"]["content"]
    );
    assert_eq!(vb["object"], "chat.completion");
    assert_eq!(vb["model"], "m");
    assert_ne!(va["id"], vb["id"], "a replay has a fresh id");
    assert_eq!(va["usage"], vb["usage"]);
    // Another temperature is another answer.
    let c = post(&gw, "/v1/chat/completions", &CHAT.replace("0.5", "0.7")).await;
    assert_eq!(c.header("x-cache").as_deref(), Some("MISS"));
    assert_eq!(upstream_calls(&mock), 2);
}

#[actix_rt::test]
async fn stream_and_non_stream_serve_each_other() {
    let mock = MockServer::start().unwrap();
    let gw = cached(&mock, &[]);
    let first = post(&gw, "/v1/chat/completions", CHAT).await;
    let text = first.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let stream_body = CHAT.replace(
        "\"model\":\"m\"",
        "\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true}",
    );
    let s = post(&gw, "/v1/chat/completions", &stream_body).await;
    assert_eq!(s.header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(
        s.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let chunks = sse_json(&s.body);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let replayed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(replayed, text);
    let last_choice = &chunks[chunks.len() - 2];
    assert_eq!(last_choice["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        chunks.last().unwrap()["choices"],
        serde_json::json!([]),
        "usage chunk"
    );
    assert_eq!(chunks.last().unwrap()["usage"], first.json()["usage"]);
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));
    assert_eq!(upstream_calls(&mock), 1);

    // And the other way: a streamed answer serves a later non-stream request.
    let other = CHAT.replace("cache me", "stream first");
    let s = post(
        &gw,
        "/v1/chat/completions",
        &other.replace("\"model\":\"m\"", "\"model\":\"m\",\"stream\":true"),
    )
    .await;
    assert_eq!(s.header("x-cache").as_deref(), Some("MISS"));
    let streamed: String = sse_json(&s.body)
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    // The answer is stored as the stream ends, just before `[DONE]` is written.
    std::thread::sleep(Duration::from_millis(50));
    let j = post(&gw, "/v1/chat/completions", &other).await;
    assert_eq!(j.header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(
        j.json()["choices"][0]["message"]["content"],
        Value::String(streamed)
    );
    assert_eq!(upstream_calls(&mock), 2);
}

#[actix_rt::test]
async fn errors_and_cut_streams_are_not_cached() {
    let mock = MockServer::start().unwrap();
    let gw = cached(&mock, &[]);
    mock.push_fault(Fault::Status {
        status: 500,
        headers: vec![],
        body: Bytes::from_static(
            br#"{"error":{"message":"boom","type":"server_error","param":null,"code":null}}"#,
        ),
    });
    assert_eq!(post(&gw, "/v1/chat/completions", CHAT).await.status, 500);
    let ok = post(&gw, "/v1/chat/completions", CHAT).await;
    assert_eq!(
        (ok.status, ok.header("x-cache").as_deref()),
        (200, Some("MISS"))
    );
    assert_eq!(upstream_calls(&mock), 2);

    let stream = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"cut"}],"mock":{"chunks":6,"delay_ms":20}}"#;
    mock.push_fault(Fault::CutAfter(3));
    let cut = post(&gw, "/v1/chat/completions", stream).await;
    assert!(cut.text().contains("\"error\""));
    let again = post(&gw, "/v1/chat/completions", stream).await;
    assert_eq!(
        again.header("x-cache").as_deref(),
        Some("MISS"),
        "a cut stream was not stored"
    );
    assert_eq!(upstream_calls(&mock), 4);
}

#[actix_rt::test]
async fn ttl_expiry_and_cache_control() {
    let mock = MockServer::start().unwrap();
    let gw = cached(&mock, &[("RESP_CACHE_TTL", "300ms")]);
    post(&gw, "/v1/chat/completions", CHAT).await;
    assert_eq!(
        post(&gw, "/v1/chat/completions", CHAT)
            .await
            .header("x-cache")
            .as_deref(),
        Some("HIT")
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        post(&gw, "/v1/chat/completions", CHAT)
            .await
            .header("x-cache")
            .as_deref(),
        Some("MISS"),
        "expired"
    );
    let r = post_h(&gw, CHAT, &[("cache-control", "no-cache")]).await;
    assert_eq!(r.header("x-cache").as_deref(), Some("BYPASS"));
    let r = post_h(&gw, CHAT, &[("cache-control", "no-store")]).await;
    assert_eq!(r.header("x-cache").as_deref(), Some("BYPASS"));
    assert_eq!(upstream_calls(&mock), 4);
    // Off entirely: always BYPASS.
    let off = Gateway::openai(&mock, &[]);
    assert_eq!(
        post(&off, "/v1/chat/completions", CHAT)
            .await
            .header("x-cache")
            .as_deref(),
        Some("BYPASS")
    );
}

#[actix_rt::test]
async fn the_cache_is_bounded() {
    let mock = MockServer::start().unwrap();
    let gw = cached(&mock, &[("CACHE_MAX_ENTRIES", "2")]);
    let body = |i: usize| CHAT.replace("cache me", &format!("question {i}"));
    for i in 0..6 {
        post(&gw, "/v1/chat/completions", &body(i)).await;
    }
    let mut hits = 0;
    for i in 0..6 {
        if post(&gw, "/v1/chat/completions", &body(i))
            .await
            .header("x-cache")
            .as_deref()
            == Some("HIT")
        {
            hits += 1;
        }
    }
    assert!(
        hits <= 2,
        "at most CACHE_MAX_ENTRIES answers kept, {hits} hits"
    );
}

#[actix_rt::test]
async fn per_key_scope_isolates_clients() {
    let mock = MockServer::start().unwrap();
    let gw = cached(&mock, &[("APIKEY", "ka,kb"), ("CACHE_SCOPE", "per_key")]);
    let a = post_h(&gw, CHAT, &[("authorization", "Bearer ka")]).await;
    let b = post_h(&gw, CHAT, &[("authorization", "Bearer kb")]).await;
    let a2 = post_h(&gw, CHAT, &[("authorization", "Bearer ka")]).await;
    assert_eq!(
        [
            a.header("x-cache"),
            b.header("x-cache"),
            a2.header("x-cache")
        ],
        [Some("MISS".into()), Some("MISS".into()), Some("HIT".into())]
    );
}

#[actix_rt::test]
async fn scira_error_streams_are_never_cached() {
    let mock = MockServer::start().unwrap();
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/scira/v6/stream_error.stream"),
    )
    .unwrap();
    mock.options(|o| o.scira_body = Some(Bytes::from(body)));
    let base = mock.url();
    let gw = Gateway::start(&[
        ("BASE_URL", &base),
        ("PROVIDER", "scira"),
        ("CACHE_ENABLED", "true"),
        ("RETRY", "1"),
    ]);
    let stream = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..2 {
        let r = post(&gw, "/v1/chat/completions", stream).await;
        assert_eq!(r.header("x-cache").as_deref(), Some("MISS"));
        let r = post(
            &gw,
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
        assert_eq!(r.status, 502);
    }
    assert_eq!(mock.requests().len(), 4);
}

fn limited(mock: &MockServer, extra: &[(&str, &str)]) -> Gateway {
    let mut env = vec![("RATE_LIMIT_ENABLED", "true")];
    env.extend_from_slice(extra);
    Gateway::openai(mock, &env)
}

#[actix_rt::test]
async fn burst_then_429_with_headers_then_refill() {
    let mock = MockServer::start().unwrap();
    let gw = limited(&mock, &[("REQUESTS_PER_SECOND", "2"), ("BURST", "3")]);
    for remaining in ["2", "1", "0"] {
        let r = post(&gw, "/v1/chat/completions", CHAT).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit-requests").as_deref(), Some("3"));
        assert_eq!(
            r.header("x-ratelimit-remaining-requests").as_deref(),
            Some(remaining)
        );
        assert!(
            r.header("x-ratelimit-reset-requests")
                .unwrap()
                .ends_with('s')
        );
    }
    let t = std::time::Instant::now();
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "answered at once, never queued"
    );
    r.assert_error(429, Some("rate_limit_exceeded"));
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    let ms: u64 = r.header("retry-after-ms").unwrap().parse().unwrap();
    assert!(ms > 0 && ms <= 500, "{ms}");
    assert_eq!(
        r.header("x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    assert_eq!(
        upstream_calls(&mock),
        3,
        "the limited request never reached the upstream"
    );
    std::thread::sleep(Duration::from_millis(ms + 20));
    assert_eq!(
        post(&gw, "/v1/chat/completions", CHAT).await.status,
        200,
        "refilled after the advertised wait"
    );
    // Health is never limited.
    for _ in 0..10 {
        assert_eq!(get(&gw, "/health").await.status, 200);
    }
}

#[actix_rt::test]
async fn keys_have_their_own_buckets_and_cache_hits_count() {
    let mock = MockServer::start().unwrap();
    let gw = limited(
        &mock,
        &[
            ("APIKEY", "ka,kb"),
            ("BURST", "2"),
            ("REQUESTS_PER_SECOND", "0.1"),
            ("CACHE_ENABLED", "true"),
        ],
    );
    let a = |_: ()| post_h(&gw, CHAT, &[("authorization", "Bearer ka")]);
    assert_eq!(a(()).await.status, 200);
    let hit = a(()).await;
    assert_eq!(
        (hit.status, hit.header("x-cache").as_deref()),
        (200, Some("HIT"))
    );
    assert_eq!(
        a(()).await.status,
        429,
        "cache hits count against the limit"
    );
    let b = post_h(&gw, CHAT, &[("authorization", "Bearer kb")]).await;
    assert_eq!(b.status, 200, "another key, another bucket");
}

#[actix_rt::test]
async fn limiter_off_means_no_headers_and_no_429() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("BURST", "1")]);
    for _ in 0..5 {
        let r = post(&gw, "/v1/chat/completions", CHAT).await;
        assert_eq!(r.status, 200);
        assert!(r.header("x-ratelimit-limit-requests").is_none());
    }
}

#[test]
fn zero_rates_are_rejected_at_startup() {
    for (var, value) in [("BURST", "0"), ("REQUESTS_PER_SECOND", "0")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_scira2api-server"))
            .env_clear()
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var) && err.contains("expected"), "{err}");
    }
}

/// The top-level keys of a JSON object, in the order they were written.
fn key_order(body: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(body).unwrap();
    let mut keys: Vec<(usize, String)> = v
        .as_object()
        .unwrap()
        .keys()
        .map(|k| {
            let at = memchr_find(body, format!("\"{k}\":").as_bytes());
            (at, k.clone())
        })
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or(usize::MAX)
}

#[actix_rt::test]
async fn a_hit_looks_like_the_miss_and_always_has_usage() {
    let mock = MockServer::start().unwrap();
    let gw = cached(&mock, &[]);
    let miss = post_h(&gw, CHAT, &[]).await;
    let hit = post_h(&gw, CHAT, &[]).await;
    assert_eq!(miss.header("x-cache").as_deref(), Some("MISS"));
    assert_eq!(hit.header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(key_order(&miss.body), key_order(&hit.body));
    let (m, h) = (miss.json(), hit.json());
    assert_eq!(h["system_fingerprint"], m["system_fingerprint"]);
    assert_eq!(h["usage"], m["usage"]);
    assert_eq!(h["choices"][0]["message"]["refusal"], Value::Null);
    assert!(
        h["choices"][0]["message"]
            .as_object()
            .unwrap()
            .contains_key("refusal")
    );
    assert_eq!(hit.header("x-usage-source").as_deref(), Some("upstream"));
}

#[actix_rt::test]
async fn usage_survives_the_cache_from_streams_and_estimates() {
    let mock = MockServer::start().unwrap();
    let gw = cached(&mock, &[]);
    // Streamed without include_usage: the usage the gateway asked for is stored all the same.
    let streamed = CHAT.replace("\"temperature\":0.5", "\"temperature\":0.1,\"stream\":true");
    let first = post_h(&gw, &streamed, &[]).await;
    assert_eq!(first.status, 200);
    let plain = CHAT.replace("\"temperature\":0.5", "\"temperature\":0.1");
    let hit = post_h(&gw, &plain, &[]).await;
    assert_eq!(hit.header("x-cache").as_deref(), Some("HIT"));
    let u = &hit.json()["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0, "{u}");
    assert_eq!(hit.header("x-usage-source").as_deref(), Some("upstream"));
    // A stream replay with include_usage carries the same, real figure.
    let with_usage = streamed.replace(
        "\"stream\":true",
        "\"stream\":true,\"stream_options\":{\"include_usage\":true}",
    );
    let replay = post_h(&gw, &with_usage, &[]).await;
    assert_eq!(replay.header("x-cache").as_deref(), Some("HIT"));
    let frames = sse_json(&replay.body);
    let usage = frames
        .iter()
        .find(|f| f["usage"].is_object())
        .expect("usage chunk");
    assert_eq!(&usage["usage"]["prompt_tokens"], &u["prompt_tokens"]);
    assert_eq!(
        &usage["usage"]["completion_tokens"],
        &u["completion_tokens"]
    );
    // No upstream usage at all: the estimate is stored, marked, and replayed marked.
    let none = CHAT.replace(
        "\"temperature\":0.5",
        "\"temperature\":0.2,\"mock\":{\"no_usage\":true}",
    );
    let miss = post_h(&gw, &none, &[]).await;
    assert_eq!(miss.header("x-usage-source").as_deref(), Some("estimated"));
    let hit = post_h(&gw, &none, &[]).await;
    assert_eq!(hit.header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(hit.header("x-usage-source").as_deref(), Some("estimated"));
    let u = &hit.json()["usage"];
    assert!(u["completion_tokens"].as_u64().unwrap() > 0, "{u}");
    assert_eq!(u["usage_source"], "estimated");
}
