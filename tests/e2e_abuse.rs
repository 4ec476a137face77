//! Hostile clients: random and huge tokens, slow bodies, slowloris headers, huge and forged
//! model names, duplicate keys, and clients that leave at every phase. Each gets a clear answer
//! (or is cut off in bounded time), nothing else breaks, and memory stays bounded.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn addr(gw: &Gateway) -> String {
    gw.url.trim_start_matches("http://").to_owned()
}

/// Writes `raw` on a new connection and reads what comes back until the server closes or
/// `wait` passes.
fn raw_exchange(gw: &Gateway, raw: &[u8], wait: Duration) -> (String, Duration) {
    let mut c = TcpStream::connect(addr(gw)).unwrap();
    c.set_read_timeout(Some(wait)).unwrap();
    c.write_all(raw).unwrap();
    let t = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), t.elapsed())
}

#[actix_rt::test]
async fn random_tokens_never_grow_the_limiter_or_memory() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(
        &mock,
        &[
            ("APIKEY", "sk-good"),
            ("RATE_LIMIT_ENABLED", "true"),
            ("BURST", "100000"),
            ("REQUESTS_PER_SECOND", "100000"),
            ("LOG_LEVEL", "info"),
        ],
    );
    let warm = get(&gw, "/health").await;
    assert_eq!(warm.status, 200);
    let base = gw.rss_kib();
    for i in 0..400 {
        let token: String = (0..30_000)
            .map(|j| char::from(b'a' + ((i * 7 + j * 13) % 26) as u8))
            .collect();
        let path = if i % 2 == 0 {
            "/v1/models"
        } else {
            "/v1/chat/completions"
        };
        let req = client()
            .post(format!("{}{path}", gw.url))
            .insert_header(("authorization", format!("Bearer {token}")))
            .insert_header(("content-type", "application/json"));
        let r = if i % 2 == 0 {
            send(
                client()
                    .get(format!("{}{path}", gw.url))
                    .insert_header(("authorization", format!("Bearer {token}"))),
                None,
            )
            .await
        } else {
            send(req, Some(CHAT)).await
        };
        if i % 2 == 1 {
            r.assert_error(401, Some("invalid_api_key"));
        }
    }
    let m = get(&gw, "/metrics").await;
    // /metrics needs the key: ask with it.
    let m = if m.status == 401 {
        send(
            client()
                .get(format!("{}/metrics", gw.url))
                .insert_header(("authorization", "Bearer sk-good")),
            None,
        )
        .await
    } else {
        m
    };
    let keys = m.json()["rate_limiter"]["keys_tracked"].as_u64().unwrap();
    assert!(keys <= 2, "buckets for invalid tokens: {keys}");
    let growth = gw.rss_kib().saturating_sub(base) / 1024;
    assert!(
        growth < 15,
        "RSS grew by {growth} MB for 400 random 30 KB tokens"
    );
}

#[actix_rt::test]
async fn a_stalled_body_gets_408_in_openai_form() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("BODY_READ_TIMEOUT", "700ms")]);
    let (reply, took) = raw_exchange(
        &gw,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"model\":",
        Duration::from_secs(5),
    );
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"code\":\"request_timeout\""), "{reply}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // A head that announces a body and not one byte of it: the same deadline.
    let (reply, took) = raw_exchange(
        &gw,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The gateway still serves everyone else.
    assert_eq!(post(&gw, "/v1/chat/completions", CHAT).await.status, 200);
}

#[actix_rt::test]
async fn slowloris_headers_are_cut_off_and_others_are_served() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[]);
    let conns: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = TcpStream::connect(addr(&gw)).unwrap();
            c.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-slow: ")
                .unwrap();
            c
        })
        .collect();
    assert_eq!(post(&gw, "/v1/chat/completions", CHAT).await.status, 200);
    let t = Instant::now();
    for mut c in conns {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 1024];
        // The server answers 408 or simply closes: either way, within its header deadline.
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }
    assert!(t.elapsed() < Duration::from_secs(9), "{:?}", t.elapsed());
}

#[actix_rt::test]
async fn huge_and_forged_model_names_stay_out_of_logs_and_labels() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("LOG_LEVEL", "info")]);
    let forged = "x\\nINFO [scira2api::access] GET /admin 200 request_id=forged";
    let r = post(
        &gw,
        "/v1/chat/completions",
        &CHAT.replace("\"m\"", &format!("\"{forged}\"")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let huge = "m".repeat(1 << 20);
    for i in 0..5 {
        let r = post(
            &gw,
            "/v1/chat/completions",
            &CHAT.replace("\"m\"", &format!("\"{huge}{i}\"")),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let prom = get(&gw, "/metrics/prometheus").await;
    assert!(
        prom.body.len() < 256 * 1024,
        "/metrics is {} bytes",
        prom.body.len()
    );
    assert!(!prom.text().contains(&huge[..1000]));
    wait_for(Duration::from_millis(300), || false);
    let log = gw.log();
    assert!(
        !log.lines()
            .any(|l| l.starts_with("INFO [scira2api::access]")),
        "a forged line"
    );
    assert!(log.lines().all(|l| l.len() < 4096), "an unbounded log line");
}

#[actix_rt::test]
async fn duplicate_keys_are_refused_naming_the_key() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[]);
    let r = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}],"stream":true}"#,
    )
    .await;
    let e = r.assert_error(400, None);
    assert_eq!(e["param"], "stream");
    assert_eq!(chat_requests(&mock), 0, "nothing went upstream");
}

#[actix_rt::test]
async fn a_client_gone_before_the_head_cancels_the_upstream_call_and_its_retries() {
    let mock = MockServer::start().unwrap();
    // The upstream would take 3 s; the gateway would time out after 1 s and retry twice.
    for _ in 0..3 {
        mock.push_fault(Fault::Hang(Duration::from_secs(3)));
    }
    let gw = Gateway::openai(&mock, &[("CLIENT_TIMEOUT", "1s"), ("RETRY", "3")]);
    let mut c = TcpStream::connect(addr(&gw)).unwrap();
    let body = CHAT;
    write!(
        c,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(2), || chat_requests(&mock) == 1));
    let left = Instant::now();
    drop(c);
    assert!(
        wait_for(Duration::from_secs(2), || gw
            .log()
            .contains("client closed the connection before the answer")),
        "{}",
        gw.log()
    );
    let noticed = left.elapsed();
    assert!(
        noticed < Duration::from_millis(600),
        "noticed after {noticed:?}"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        chat_requests(&mock),
        1,
        "no retry for a client that has gone"
    );
}

#[actix_rt::test]
async fn clients_leaving_at_every_phase_break_nothing() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[]);
    // Mid-body.
    let mut c = TcpStream::connect(addr(&gw)).unwrap();
    c.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 400\r\n\r\n{\"mo",
    )
    .unwrap();
    drop(c);
    // Mid-headers.
    let mut c = TcpStream::connect(addr(&gw)).unwrap();
    c.write_all(b"POST /v1/chat/compl").unwrap();
    drop(c);
    // Mid-stream.
    let slow = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"mock":{"chunks":40,"delay_ms":50}}"#;
    let mut c = TcpStream::connect(addr(&gw)).unwrap();
    write!(
        c,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{slow}",
        slow.len()
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let _ = c.read(&mut buf).unwrap();
    drop(c);
    assert!(
        wait_for(Duration::from_secs(3), || gw
            .log()
            .contains("stream=client_gone")),
        "{}",
        gw.log()
    );
    // Everyone else is still served, streamed or not.
    assert_chat_and_stream_complete(&gw).await;
}

#[actix_rt::test]
async fn the_connection_cap_holds_new_connections_until_one_closes() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("MAX_CONNECTIONS", "2"), ("WORKERS", "1")]);
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(addr(&gw)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(addr(&gw)).unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 512];
    assert!(
        third.read(&mut buf).is_err(),
        "over the cap, a connection waits in the backlog"
    );
    drop(idle);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = third.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "served once a slot frees up"
    );
}
