//! End to end: the HTTP surface of the real server binary — health, auth, CORS, request
//! validation errors, and startup validation.

mod common;

use common::*;
use std::process::Command;

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

#[actix_rt::test]
async fn health_is_public_and_reports_uptime() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("APIKEY", "k1")]);
    let r = get(&gw, "/health").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "ok");
    assert!(v["uptime"].is_string());
    assert!(v["version"].is_string());
}

#[actix_rt::test]
async fn auth_rejects_missing_and_wrong_keys_but_not_public_paths() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("APIKEY", "key-one,key-two")]);
    post(&gw, "/v1/chat/completions", CHAT)
        .await
        .assert_error(401, Some("invalid_api_key"));
    let wrong = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .insert_header(("content-type", "application/json"))
        .insert_header(("authorization", "Bearer key-three"));
    send(wrong, Some(CHAT))
        .await
        .assert_error(401, Some("invalid_api_key"));
    for key in ["key-one", "key-two"] {
        let ok = client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .insert_header(("content-type", "application/json"))
            .insert_header(("authorization", format!("Bearer {key}")));
        assert_eq!(send(ok, Some(CHAT)).await.status, 200);
    }
    // Public by default.
    assert_eq!(get(&gw, "/v1/models").await.status, 200);
    assert_eq!(get(&gw, "/health").await.status, 200);
    // Unknown paths need the key too (no probing without it).
    get(&gw, "/v1/other")
        .await
        .assert_error(401, Some("invalid_api_key"));
    assert!(!gw.log().contains("key-one"), "API key in log");
}

#[actix_rt::test]
async fn public_paths_are_configurable() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("APIKEY", "k"), ("PUBLIC_PATHS", "/health")]);
    get(&gw, "/v1/models")
        .await
        .assert_error(401, Some("invalid_api_key"));
    assert_eq!(get(&gw, "/health").await.status, 200);
}

#[actix_rt::test]
async fn cors_preflight_succeeds_without_a_key() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("APIKEY", "k")]);
    let pre = client()
        .request(
            awc::http::Method::OPTIONS,
            format!("{}/v1/chat/completions", gw.url),
        )
        .insert_header(("origin", "https://chat.example"))
        .insert_header(("access-control-request-method", "POST"))
        .insert_header((
            "access-control-request-headers",
            "authorization,content-type",
        ));
    let r = send(pre, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://chat.example")
    );
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    // And a real cross-origin call gets the header on its (401) answer.
    let call = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .insert_header(("origin", "https://chat.example"))
        .insert_header(("content-type", "application/json"));
    let r = send(call, Some(CHAT)).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://chat.example")
    );
    // A browser client may read the gateway's own headers (request id, limits, cache, retry).
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for h in [
        "x-request-id",
        "x-ratelimit-remaining-requests",
        "x-cache",
        "x-should-retry",
        "retry-after",
    ] {
        assert!(
            exposed.split(',').any(|e| e.trim() == h),
            "{h} in {exposed}"
        );
    }
}

#[actix_rt::test]
async fn cors_can_be_restricted() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("CORS_ORIGINS", "https://ok.example")]);
    let pre = |origin: &str| {
        client()
            .request(
                awc::http::Method::OPTIONS,
                format!("{}/v1/chat/completions", gw.url),
            )
            .insert_header(("origin", origin.to_owned()))
            .insert_header(("access-control-request-method", "POST"))
    };
    assert_eq!(send(pre("https://ok.example"), None).await.status, 200);
    let r = send(pre("https://evil.example"), None).await;
    assert!(r.header("access-control-allow-origin").is_none());
}

#[actix_rt::test]
async fn bad_requests_get_openai_errors() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("MAX_BODY_BYTES", "2048")]);
    let e = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"m","messages":[{"role":"user","content":"x"}"#,
    )
    .await
    .assert_error(400, None);
    assert!(
        e["message"].as_str().unwrap().contains("line 1 column"),
        "{e}"
    );
    let e = post(
        &gw,
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"x"}]}"#,
    )
    .await
    .assert_error(400, None);
    assert_eq!(e["param"], "model");
    let e = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"m","messages":{}}"#,
    )
    .await
    .assert_error(400, None);
    assert_eq!(e["param"], "messages");
    let e = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":["m"],"messages":[]}"#,
    )
    .await
    .assert_error(400, None);
    assert_eq!(e["param"], "model");
    post(&gw, "/v1/chat/completions", "")
        .await
        .assert_error(400, None);
    post(&gw, "/v1/chat/completions", "\u{0}\u{1}garbage")
        .await
        .assert_error(400, None);
    let big = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4096)
    );
    post(&gw, "/v1/chat/completions", &big)
        .await
        .assert_error(413, Some("request_too_large"));
    let form = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .insert_header(("content-type", "application/x-www-form-urlencoded"));
    send(form, Some("a=b"))
        .await
        .assert_error(415, Some("unsupported_media_type"));
    get(&gw, "/v2/nothing")
        .await
        .assert_error(404, Some("unknown_url"));
    let r = get(&gw, "/v1/chat/completions").await;
    r.assert_error(405, Some("method_not_allowed"));
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
    post(&gw, "/health", "{}")
        .await
        .assert_error(405, Some("method_not_allowed"));
    // None of that reached the upstream, and the server still serves.
    assert!(
        mock.requests()
            .iter()
            .all(|r| r.path != "/v1/chat/completions")
    );
    assert_eq!(post(&gw, "/v1/chat/completions", CHAT).await.status, 200);
}

fn run_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = std::env::temp_dir();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scira2api-server"));
    cmd.env_clear()
        .current_dir(dir)
        .env("PORT", "0")
        .env("HOST", "127.0.0.1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_settings_exit_2_with_one_clear_line() {
    for (var, value) in [
        ("PORT", "abc"),
        ("RETRY", "-1"),
        ("CLIENT_TIMEOUT", "soon"),
        ("PROVIDER", "foo"),
        ("BASE_URL", "not a url"),
    ] {
        let (code, err) = run_with(&[(var, value)]);
        assert_eq!(code, Some(2), "{var}={value}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(var) && err.contains(value) && err.contains("expected"),
            "{err}"
        );
    }
    // A proxy password never shows in the message.
    let (code, err) = run_with(&[("SOCKS5_PROXY", "ftp://user:hunter2@h:1")]);
    assert_eq!(code, Some(2));
    assert!(!err.contains("hunter2"), "{err}");
}

#[actix_rt::test]
async fn malformed_mapping_warns_and_uses_default_table() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("MODEL_MAPPINGS", "a:b,broken-pair")]);
    let _ = get(&gw, "/health").await;
    assert!(gw.log().contains("broken-pair"), "{}", gw.log());
    let r = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"a","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(mock.last_request().unwrap().json()["model"], "a");
}

#[actix_rt::test]
async fn one_model_is_public_like_the_list_and_dates_are_fixed() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(
        &mock,
        &[("APIKEY", "sk-x"), ("MODEL_MAPPINGS", "gpt-4o:mock-gpt")],
    );
    let one = get(&gw, "/v1/models/gpt-4o").await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["created"], 1_735_689_600u64, "a fixed date");
    let list = get(&gw, "/v1/models").await;
    let again = Gateway::openai(
        &mock,
        &[("APIKEY", "sk-x"), ("MODEL_MAPPINGS", "gpt-4o:mock-gpt")],
    );
    assert_eq!(
        get(&again, "/v1/models").await.json(),
        list.json(),
        "same after a restart"
    );
}

#[actix_rt::test]
async fn a_refused_preflight_is_an_openai_error() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("CORS_ORIGINS", "https://app.example")]);
    let r = send(
        client()
            .request(
                awc::http::Method::OPTIONS,
                format!("{}/v1/chat/completions", gw.url),
            )
            .insert_header(("origin", "https://app.example"))
            .insert_header(("access-control-request-method", "PUT")),
        None,
    )
    .await;
    let e = r.assert_error(400, None);
    assert!(e["message"].as_str().unwrap().contains("CORS"), "{e}");
}

#[actix_rt::test]
async fn a_failing_model_list_is_not_fetched_per_client() {
    let bad = scira2api_mock::bad::BadUpstream::start().unwrap();
    let body = r#"{"error":{"message":"down","type":"server_error","param":null,"code":null}}"#;
    for _ in 0..30 {
        bad.push(vec![scira2api_mock::bad::Step::Write(
            format!(
                "HTTP/1.1 500 X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )]);
    }
    let url = bad.url();
    let gw = Gateway::start(&[
        ("BASE_URL", url.as_str()),
        ("UPSTREAM_API_KEY", "sk-operator"),
        ("CACHE_ENABLED", "true"),
        ("RETRY", "3"),
    ]);
    for _ in 0..20 {
        let r = get(&gw, "/v1/models").await;
        assert_eq!(r.status, 200, "the gateway's own list is still served");
    }
    assert_eq!(
        bad.requests(),
        1,
        "one upstream call, not one (or three) per client"
    );
}
