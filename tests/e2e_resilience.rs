//! End to end: retries, timeouts, key rotation and connection reuse, driven by the mock's fault
//! injection against the real server binary.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const FAST_RETRY: [(&str, &str); 2] = [("RETRY_BASE_DELAY", "10ms"), ("RETRY_MAX_DELAY", "100ms")];

fn status(code: u16) -> Fault {
    Fault::Status {
        status: code,
        headers: vec![],
        body: Bytes::from(format!(
            r#"{{"error":{{"message":"mock {code}","type":"server_error","param":null,"code":null}}}}"#
        )),
    }
}

#[actix_rt::test]
async fn transient_failures_are_retried_until_success() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &FAST_RETRY);
    mock.push_fault(status(503));
    mock.push_fault(Fault::Reset);
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(chat_requests(&mock), 3, "503, reset, then success");
    assert!(
        gw.log().contains("retrying in"),
        "each attempt logged at debug"
    );
}

#[actix_rt::test]
async fn retry_after_from_the_upstream_is_honoured() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(
        &mock,
        &[("RETRY_BASE_DELAY", "1ms"), ("RETRY_MAX_DELAY", "2s")],
    );
    mock.push_fault(Fault::Status {
        status: 429,
        headers: vec![("retry-after-ms".into(), "400".into())],
        body: Bytes::from_static(br#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#),
    });
    let t = Instant::now();
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "waited {:?}",
        t.elapsed()
    );
    assert_eq!(chat_requests(&mock), 2);
}

#[actix_rt::test]
async fn exhausted_retries_return_the_last_error_and_say_do_not_retry() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &FAST_RETRY);
    for _ in 0..3 {
        mock.push_fault(status(503));
    }
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["error"]["message"],
        "mock 503",
        "the upstream's own error object"
    );
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    assert_eq!(chat_requests(&mock), 3, "RETRY=3 attempts in all");
}

#[actix_rt::test]
async fn client_errors_and_quota_are_never_retried() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &FAST_RETRY);
    for code in [400, 401, 403, 404, 422] {
        let before = chat_requests(&mock);
        mock.push_fault(status(code));
        let r = post(&gw, "/v1/chat/completions", CHAT).await;
        if code == 401 {
            // Not the client's 401: the gateway's upstream key was refused.
            assert_eq!(r.status, 403);
            assert_eq!(r.json()["error"]["code"], "upstream_unauthorized");
        } else {
            assert_eq!(r.status, code);
        }
        assert_eq!(chat_requests(&mock) - before, 1, "{code} not retried");
    }
    let before = chat_requests(&mock);
    mock.push_fault(Fault::Status {
        status: 429,
        headers: vec![],
        body: Bytes::from_static(br#"{"error":{"message":"quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#),
    });
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    assert_eq!(
        chat_requests(&mock) - before,
        1,
        "quota errors are not retried"
    );
}

#[actix_rt::test]
async fn a_hanging_upstream_times_out_and_is_retried() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(
        &mock,
        &[FAST_RETRY[0], FAST_RETRY[1], ("CLIENT_TIMEOUT", "300ms")],
    );
    mock.push_fault(Fault::Hang(Duration::from_secs(3)));
    let t = Instant::now();
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(2));
    for _ in 0..3 {
        mock.push_fault(Fault::Hang(Duration::from_secs(3)));
    }
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    let e = r.assert_error(504, Some("upstream_timeout"));
    assert!(
        e["message"].as_str().unwrap().contains("CLIENT_TIMEOUT"),
        "{e}"
    );
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
}

#[actix_rt::test]
async fn a_reset_mid_stream_is_never_retried_and_ends_with_an_error_event() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &FAST_RETRY);
    mock.push_fault(Fault::CutAfter(3));
    let r = post(&gw, "/v1/chat/completions", r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"mock":{"chunks":8,"delay_ms":20}}"#).await;
    assert_eq!(r.status, 200);
    let frames = sse_frames(&r.body);
    assert_eq!(frames.last().unwrap(), "[DONE]");
    assert!(
        frames[frames.len() - 2].starts_with("{\"error\""),
        "{frames:?}"
    );
    let roles = frames
        .iter()
        .filter(|f| f.contains("\"role\":\"assistant\""))
        .count();
    assert_eq!(roles, 1, "one answer only, no second role chunk");
    assert_eq!(chat_requests(&mock), 1, "no retry once the answer started");
}

#[actix_rt::test]
async fn a_slow_stream_under_the_idle_timeout_passes_and_a_stalled_one_fails() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(
        &mock,
        &[("CLIENT_TIMEOUT", "500ms"), ("HEARTBEAT_INTERVAL", "10s")],
    );
    // 12 events 150 ms apart: 1.8 s in all, far over CLIENT_TIMEOUT, never silent for 500 ms.
    let r = post(&gw, "/v1/chat/completions", r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"mock":{"chunks":10,"delay_ms":150}}"#).await;
    let chunks = sse_json(&r.body);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    // Silent for 1.2 s: cut with an error event.
    let r = post(&gw, "/v1/chat/completions", r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"mock":{"chunks":3,"delay_ms":1200}}"#).await;
    let frames = sse_frames(&r.body);
    let err: Value = serde_json::from_str(&frames[frames.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "upstream_timeout", "{frames:?}");
}

#[actix_rt::test]
async fn a_rejected_key_is_rested_and_the_next_key_serves() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(
        &mock,
        &[
            FAST_RETRY[0],
            FAST_RETRY[1],
            ("UPSTREAM_API_KEY", "key-a,key-b"),
        ],
    );
    // key-a answers 429: the retry goes out with key-b, and key-a rests afterwards.
    mock.push_fault(status(429));
    assert_eq!(post(&gw, "/v1/chat/completions", CHAT).await.status, 200);
    for _ in 0..4 {
        assert_eq!(post(&gw, "/v1/chat/completions", CHAT).await.status, 200);
    }
    let keys: Vec<String> = mock
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(
        keys,
        [
            "Bearer key-a",
            "Bearer key-b",
            "Bearer key-b",
            "Bearer key-b",
            "Bearer key-b",
            "Bearer key-b"
        ]
    );
    assert!(
        !gw.log().contains("key-a") && !gw.log().contains("key-b"),
        "keys never logged"
    );
}

/// `n` requests one after the other over one keep-alive client connection.
async fn sequential(gw: &Gateway, n: usize) {
    let c = client();
    for _ in 0..n {
        let req = c
            .post(format!("{}/v1/chat/completions", gw.url))
            .insert_header(("content-type", "application/json"));
        assert_eq!(send(req, Some(CHAT)).await.status, 200);
    }
}

/// Both upstream clients (the lean HTTP/1.1 one and awc) keep the same pool promises.
const CLIENTS: [&str; 2] = ["true", "false"];

#[actix_rt::test]
async fn pool_reuses_one_connection_and_without_it_each_request_opens_one() {
    for lean in CLIENTS {
        let mock = MockServer::start().unwrap();
        let gw = Gateway::openai(&mock, &[("LEAN_HTTP1", lean)]);
        sequential(&gw, 100).await;
        assert_eq!(
            mock.state().connections.load(Ordering::SeqCst),
            1,
            "100 requests, 1 connection (LEAN_HTTP1={lean})"
        );
        drop(gw);

        let mock = MockServer::start().unwrap();
        let gw = Gateway::openai(
            &mock,
            &[("CONN_POOL_ENABLED", "false"), ("LEAN_HTTP1", lean)],
        );
        sequential(&gw, 100).await;
        assert_eq!(
            mock.state().connections.load(Ordering::SeqCst),
            100,
            "one connection per request (LEAN_HTTP1={lean})"
        );
    }
}

#[actix_rt::test]
async fn finished_streams_give_their_connection_back_to_the_pool() {
    for lean in CLIENTS {
        let mock = MockServer::start().unwrap();
        let gw = Gateway::openai(&mock, &[("LEAN_HTTP1", lean)]);
        let c = client();
        for _ in 0..20 {
            let req = c
                .post(format!("{}/v1/chat/completions", gw.url))
                .insert_header(("content-type", "application/json"));
            let r = send(req, Some(STREAM)).await;
            assert_eq!(
                sse_json(&r.body).last().unwrap()["choices"][0]["finish_reason"],
                "stop"
            );
        }
        assert_eq!(
            mock.state().connections.load(Ordering::SeqCst),
            1,
            "20 streams, 1 upstream connection (LEAN_HTTP1={lean})"
        );
    }
}

#[actix_rt::test]
async fn stream_requests_are_retried_before_the_first_byte() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &FAST_RETRY);
    mock.push_fault(status(502));
    let r = post(&gw, "/v1/chat/completions", STREAM).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        sse_json(&r.body).last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(chat_requests(&mock), 2);
}

#[actix_rt::test]
async fn a_504_after_retries_says_how_long_it_waited() {
    let mock = MockServer::start().unwrap();
    for _ in 0..3 {
        mock.push_fault(Fault::Hang(Duration::from_secs(2)));
    }
    let mut env = FAST_RETRY.to_vec();
    env.extend([("CLIENT_TIMEOUT", "300ms"), ("RETRY", "3")]);
    let gw = Gateway::openai(&mock, &env);
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    let e = r.assert_error(504, Some("upstream_timeout"));
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("within 300ms"), "{msg}");
    assert!(msg.contains("gave up after 3 attempts in"), "{msg}");
}
