//! Signals: SIGTERM and SIGINT shut down gracefully (every request in flight finishes, every
//! time), SIGHUP is logged and ignored, and a stream still open when the grace period runs out
//! ends with an error event and `[DONE]`.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// A non-stream request the mock answers after `ms` milliseconds.
fn slow_chat(ms: u64) -> String {
    format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"mock":{{"latency_ms":{ms}}}}}"#
    )
}

/// Like `wait_for`, without blocking the test's runtime (the request runs on it).
async fn wait_async(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

#[actix_rt::test]
async fn sigterm_and_sigint_finish_every_request_in_flight() {
    let mock = MockServer::start().unwrap();
    let rounds: u64 = std::env::var("SHUTDOWN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    for round in 0..rounds {
        let signal = if round % 2 == 0 { "TERM" } else { "INT" };
        let mut gw = Gateway::openai(&mock, &[("SHUTDOWN_TIMEOUT", "10s")]);
        let url = gw.url.clone();
        let pending = actix_rt::spawn(async move {
            let mut resp = client()
                .post(format!("{url}/v1/chat/completions"))
                .insert_header(("content-type", "application/json"))
                .send_body(slow_chat(600))
                .await
                .map_err(|e| format!("send: {e:?}"))?;
            let body = resp.body().await.map_err(|e| format!("body: {e:?}"))?;
            Ok::<_, String>((resp.status().as_u16(), body))
        });
        // The upstream is already answering (slowly) when the signal comes.
        let before = mock.requests().len();
        assert!(wait_async(Duration::from_secs(3), || mock.requests().len() > before).await);
        actix_rt::time::sleep(Duration::from_millis(50 + round * 20)).await;
        gw.signal(signal);
        let (status, body) = pending.await.expect("request task").unwrap_or_else(|e| {
            let exit = gw.wait_exit(Duration::from_secs(12));
            panic!("round {round} ({signal}): {e}; exit {exit:?}\n{}", gw.log())
        });
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "round {round} ({signal}): {text}");
        assert!(text.contains("\"content\""), "{text}");
        let status = gw.wait_exit(Duration::from_secs(10)).expect("exits");
        assert!(status.success(), "round {round}: {status:?}");
    }
}

#[actix_rt::test]
async fn sighup_is_logged_and_ignored() {
    let mock = MockServer::start().unwrap();
    let mut gw = Gateway::openai(&mock, &[]);
    gw.signal("HUP");
    assert!(wait_for(Duration::from_secs(2), || gw
        .log()
        .contains("SIGHUP received")));
    assert!(
        gw.wait_exit(Duration::from_millis(300)).is_none(),
        "still running"
    );
    assert_eq!(get(&gw, "/health").await.status, 200);
}

#[actix_rt::test]
async fn streams_cut_by_the_deadline_end_properly() {
    let mock = MockServer::start().unwrap();
    let mut gw = Gateway::openai(&mock, &[("SHUTDOWN_TIMEOUT", "2s")]);
    let url = gw.url.clone();
    // 100 chunks 100 ms apart: 10 s, far longer than the grace period.
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"mock":{"chunks":100,"delay_ms":100}}"#;
    let pending = actix_rt::spawn(async move {
        let req = client()
            .post(format!("{url}/v1/chat/completions"))
            .insert_header(("content-type", "application/json"));
        send(req, Some(body)).await
    });
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    let t = Instant::now();
    gw.signal("TERM");
    let r = pending.await.expect("request task");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(r.status, 200);
    let frames = sse_json(&r.body);
    let last = frames.last().unwrap();
    assert_eq!(
        last["error"]["code"],
        "server_shutting_down",
        "{}",
        r.text()
    );
    assert!(
        frames
            .iter()
            .all(|f| f["choices"][0]["finish_reason"].is_null()),
        "no fake finish"
    );
    assert!(gw.wait_exit(Duration::from_secs(5)).is_some());
}
