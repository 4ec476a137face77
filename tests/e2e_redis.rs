//! Several replicas sharing one Redis (`REDIS_URL`), end to end with a real `redis-server` on a
//! free loopback port and several gateway processes: a per-key request limit holds in total,
//! not per replica, under concurrent load; a cached answer one replica stored is served by
//! another; a Redis that stops fails each `RATE_LIMIT_FAIL_MODE` as it says, without a request
//! ever waiting past `REDIS_TIMEOUT`; scripts flushed (`NOSCRIPT`) are loaded again; a Redis that
//! comes back is used again; a deployment or an upstream key one replica rests is rested by
//! the others; a key's token budget holds in total and is settled (a cut stream too); a
//! deployment's rpm and tpm hold in total; a stored response is read, continued and deleted on
//! any replica; a front cache answers with Redis gone. (`.ci/run` installs redis-server; without it these tests skip.)

mod common;

use common::proxies::{free_port, tool};
use common::*;
use futures_util::future::join_all;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of the test's own, stopped when dropped.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    bin: std::path::PathBuf,
}

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let bin = tool("redis-server")?;
        let mut r = RedisServer {
            child: None,
            port: free_port(),
            bin,
        };
        r.spawn();
        Some(r)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        assert!(
            wait_for(Duration::from_secs(10), || self
                .command(&["PING"])
                .contains("PONG")),
            "redis-server did not come up"
        );
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one command and returns the raw reply.
    fn command(&self, args: &[&str]) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        let _ = s.write_all(req.as_bytes());
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A GET over a plain socket (the helpers' client needs a runtime; `wait_for` polls without).
fn blocking_get(addr: &str, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn replica(mock: &MockServer, redis: &RedisServer, extra: &[(&str, &str)]) -> Gateway {
    let url = redis.url();
    let mut env = vec![
        ("REDIS_URL", url.as_str()),
        ("APIKEY", "sk-shared"),
        ("RATE_LIMIT_ENABLED", "true"),
        ("REQUESTS_PER_SECOND", "0.001"),
    ];
    env.extend_from_slice(extra);
    let gw = Gateway::openai(mock, &env);
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let up = wait_for(Duration::from_secs(10), || {
        blocking_get(&addr, "/health").contains("\"redis\":{\"fail_mode\"")
            && blocking_get(&addr, "/health").contains("\"state\":\"up\"}")
    });
    assert!(up, "the replica did not connect to Redis: {}", gw.log());
    gw
}

async fn chat(gw: &Gateway, content: &str) -> Reply {
    send(
        client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .insert_header(("authorization", "Bearer sk-shared"))
            .insert_header(("content-type", "application/json")),
        Some(&format!(
            r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{content}"}}]}}"#
        )),
    )
    .await
}

async fn metrics(gw: &Gateway) -> String {
    send(
        client()
            .get(format!("{}/metrics/prometheus", gw.url))
            .insert_header(("authorization", "Bearer sk-shared")),
        None,
    )
    .await
    .text()
}

async fn metric(gw: &Gateway, name: &str) -> f64 {
    let text = metrics(gw).await;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[actix_rt::test]
async fn a_per_key_limit_holds_in_total_across_replicas() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = MockServer::start().unwrap();
    // A deadline this load cannot miss: the limits are under test here, not the deadline.
    let burst = [("BURST", "12"), ("REDIS_TIMEOUT", "5s")];
    let replicas: Vec<Gateway> = (0..3).map(|_| replica(&mock, &redis, &burst)).collect();
    let calls = (0..45).map(|i| chat(&replicas[i % 3], "hi"));
    let replies = join_all(calls).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let limited: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok, 12, "the burst is shared, not per replica");
    assert_eq!(limited.len(), 33);
    let e = limited[0].assert_error(429, Some("rate_limit_exceeded"));
    assert!(e["message"].as_str().unwrap().contains("limit 12"), "{e}");
    assert!(limited[0].header("retry-after").is_some());
    assert_eq!(
        replies[0].header("x-ratelimit-limit-requests").as_deref(),
        Some("12")
    );
    for gw in &replicas {
        assert_eq!(metric(gw, "scira2api_ratelimit_unshared_total").await, 0.0);
        assert_eq!(metric(gw, "scira2api_redis_up").await, 1.0);
    }
    // Scripts flushed (as after a Redis restart): the next decision loads it again.
    assert!(redis.command(&["SCRIPT", "FLUSH"]).contains("OK"));
    let r = chat(&replicas[0], "hi").await;
    r.assert_error(429, Some("rate_limit_exceeded"));
    assert_eq!(
        metric(&replicas[0], "scira2api_ratelimit_unshared_total").await,
        0.0
    );
    assert_eq!(
        metric(&replicas[0], "scira2api_redis_errors_total").await,
        0.0
    );
}

#[actix_rt::test]
async fn an_answer_cached_by_one_replica_is_served_by_another() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = MockServer::start().unwrap();
    let on = [("CACHE_ENABLED", "true"), ("RATE_LIMIT_ENABLED", "false")];
    let (a, b) = (replica(&mock, &redis, &on), replica(&mock, &redis, &on));
    let first = chat(&a, "cache me").await;
    assert_eq!(first.header("x-cache").as_deref(), Some("MISS"));
    let second = chat(&b, "cache me").await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(
        second.json()["choices"][0]["message"]["content"],
        first.json()["choices"][0]["message"]["content"]
    );
    assert_eq!(
        chat_requests(&mock),
        1,
        "one upstream call for both replicas"
    );
    let keys = redis.command(&["KEYS", "scira2api:cache:*"]);
    assert!(keys.starts_with("*1"), "{keys}");
}

#[actix_rt::test]
async fn a_stopped_redis_fails_as_configured_and_never_holds_a_request() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mock = MockServer::start().unwrap();
    let burst = ("BURST", "2");
    let open = replica(&mock, &redis, &[burst, ("RATE_LIMIT_FAIL_MODE", "open")]);
    let closed = replica(&mock, &redis, &[burst, ("RATE_LIMIT_FAIL_MODE", "closed")]);
    let local = replica(&mock, &redis, &[burst, ("RATE_LIMIT_FAIL_MODE", "local")]);
    // The shared bucket of 2 is spent while Redis is up.
    assert_eq!(chat(&open, "a").await.status, 200);
    assert_eq!(chat(&closed, "a").await.status, 200);
    assert_eq!(chat(&local, "a").await.status, 429);
    redis.stop();
    let slowest = std::cell::Cell::new(Duration::ZERO);
    let timed = async |gw: &Gateway| {
        let started = Instant::now();
        let r = chat(gw, "b").await;
        slowest.set(slowest.get().max(started.elapsed()));
        r
    };
    for _ in 0..5 {
        let r = timed(&open).await;
        assert_eq!(r.status, 200, "open lets requests through: {}", r.text());
    }
    for _ in 0..5 {
        let r = timed(&closed).await;
        let e = r.assert_error(503, Some("rate_limiter_unavailable"));
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("RATE_LIMIT_FAIL_MODE")
        );
        assert!(r.header("retry-after").is_some());
    }
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(timed(&local).await.status);
        }
        v
    };
    assert_eq!(
        statuses,
        [200, 200, 429, 429],
        "local: this replica's own bucket"
    );
    let slowest = slowest.get();
    assert!(
        slowest < Duration::from_millis(800),
        "a request waited {slowest:?} on a stopped Redis"
    );
    for gw in [&open, &closed, &local] {
        let h = get(gw, "/health").await.json();
        assert_eq!(h["redis"]["state"], "down", "{h}");
        assert_eq!(h["status"], "ok", "{h}");
        let unshared = metric(gw, "scira2api_ratelimit_unshared_total").await;
        assert!(unshared >= 4.0, "{unshared}: {}", metrics(gw).await);
        assert_eq!(metric(gw, "scira2api_redis_up").await, 0.0);
    }
    assert!(open.log().contains("Redis fails"), "the change is logged");
    // Redis comes back (empty: a full bucket again): the replicas use it again by themselves.
    redis.spawn();
    let back = {
        let mut ok = false;
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end && !ok {
            let h = get(&closed, "/health").await.json();
            ok = h["redis"]["state"] == "up";
            if !ok {
                let _ = chat(&closed, "c").await;
                actix_rt::time::sleep(Duration::from_millis(200)).await;
            }
        }
        ok
    };
    assert!(
        back,
        "the replica did not use Redis again: {}",
        closed.log()
    );
    assert!(closed.log().contains("Redis answers again"));
    let _: Value = get(&closed, "/health").await.json();
}

/// The `authorization` headers of the chat requests `mock` received.
fn upstream_keys(mock: &MockServer) -> Vec<String> {
    mock.requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .map(|r| r.header("authorization").unwrap_or("").to_owned())
        .collect()
}

/// The state of `provider`'s deployment in `gw`'s metrics.
async fn deployment_state(gw: &Gateway, provider: &str) -> String {
    let m = send(
        client()
            .get(format!("{}/metrics", gw.url))
            .insert_header(("authorization", "Bearer sk-shared")),
        None,
    )
    .await
    .json();
    m["deployments"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["provider"] == provider))
        .map_or_else(String::new, |d| {
            d["state"].as_str().unwrap_or("").to_owned()
        })
}

#[actix_rt::test]
async fn a_cool_down_started_on_one_replica_is_honoured_by_another() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // Model group `g`: `bad` first, `good` as its fallback. The environment's instance (names
    // in no group) has two upstream keys on `keys`.
    let (bad, good, keys) = (
        MockServer::start().unwrap(),
        MockServer::start().unwrap(),
        MockServer::start().unwrap(),
    );
    let dir = std::env::temp_dir().join(format!("scira2api-rests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("groups.yaml");
    std::fs::write(
        &cfg,
        format!(
            "providers:\n  - {{name: bad, base_url: \"{}\"}}\n  - {{name: good, base_url: \"{}\"}}\nmodels:\n  - name: g\n    deployments:\n      - {{provider: bad, model: m}}\n      - {{provider: good, model: m, order: 1}}\nrouter: {{allowed_fails: 0, cooldown_time: 30s}}\n",
            bad.url(),
            good.url()
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let env = [
        ("CONFIG_FILE", cfg.as_str()),
        ("REQUESTS_PER_SECOND", "1000"),
        ("UPSTREAM_API_KEY", "key-a,key-b"),
        ("RETRY_BASE_DELAY", "5ms"),
    ];
    let (a, b) = (replica(&keys, &redis, &env), replica(&keys, &redis, &env));
    let post_g = |gw: &Gateway| {
        send(
            client()
                .post(format!("{}/v1/chat/completions", gw.url))
                .insert_header(("authorization", "Bearer sk-shared"))
                .insert_header(("content-type", "application/json")),
            Some(r#"{"model":"g","messages":[{"role":"user","content":"hi"}]}"#),
        )
    };
    // Replica A: `bad` fails once, A falls back and rests it for 30 s.
    bad.push_fault(Fault::Status {
        status: 500,
        headers: vec![],
        body: bytes::Bytes::from_static(
            br#"{"error":{"message":"mock 500","type":"server_error","param":null,"code":null}}"#,
        ),
    });
    let r = post_g(&a).await;
    assert_eq!(r.header("x-gateway-provider").as_deref(), Some("good"));
    assert_eq!(deployment_state(&a, "bad").await, "resting");
    // Replica B learns it (within the sync interval) and never calls `bad`.
    let started = Instant::now();
    while deployment_state(&b, "bad").await != "resting" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "replica B never rested `bad`: {}",
            b.log()
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "B rested `bad` {} ms after A",
        started.elapsed().as_millis()
    );
    for _ in 0..4 {
        let r = post_g(&b).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-gateway-provider").as_deref(), Some("good"));
    }
    assert_eq!(
        chat_requests(&bad),
        1,
        "only A's one failed call reached `bad`"
    );
    assert!(
        b.log().contains("another replica's cool-down"),
        "{}",
        b.log()
    );

    // Upstream keys: key-a is rate limited on A (retried with key-b there) and rests 30 s;
    // B then uses key-b only.
    keys.push_fault(Fault::Status {
        status: 429,
        headers: vec![("retry-after".to_owned(), "30".to_owned())],
        body: bytes::Bytes::from_static(
            br#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        ),
    });
    let first = chat(&a, "k").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(upstream_keys(&keys), ["Bearer key-a", "Bearer key-b"]);
    // Long enough for a sync of each replica (one every 500 ms).
    actix_rt::time::sleep(Duration::from_millis(1200)).await;
    for i in 0..4 {
        assert_eq!(chat(&b, &format!("b{i}")).await.status, 200);
    }
    let used = upstream_keys(&keys);
    assert_eq!(
        &used[2..],
        ["Bearer key-b"; 4],
        "B skips the key A rested: {used:?}"
    );
}

#[actix_rt::test]
async fn a_token_budget_holds_in_total_across_replicas_and_is_settled() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = MockServer::start().unwrap();
    let dir = std::env::temp_dir().join(format!("scira2api-tpm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("keys.yaml");
    std::fs::write(
        &cfg,
        "keys:\n  - {key: sk-tokens, name: tokens, tpm: 300}\n  - {key: sk-stream, tpm: 300}\n",
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let env = [
        ("CONFIG_FILE", cfg.as_str()),
        ("REQUESTS_PER_SECOND", "1000"),
    ];
    let (a, b) = (replica(&mock, &redis, &env), replica(&mock, &redis, &env));
    let post = |gw: &Gateway, body: &'static str| {
        send(
            client()
                .post(format!("{}/v1/chat/completions", gw.url))
                .insert_header(("authorization", "Bearer sk-tokens"))
                .insert_header(("content-type", "application/json")),
            Some(body),
        )
    };
    // Six at once over two replicas, each reserving its prompt + 100 of 300 while the upstream
    // takes 500 ms: two pass in all.
    const SLOW: &str = r#"{"model":"gpt-4o","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"mock":{"latency_ms":500}}"#;
    let replies = join_all((0..6).map(|i| post(if i % 2 == 0 { &a } else { &b }, SLOW))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}: {}",
        a.log()
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // The budget is one hash in Redis, settled with the real usage: a third request fits.
    let keys = redis.command(&["KEYS", "scira2api:tpm:*"]);
    assert!(keys.contains("scira2api:tpm:k:key:"), "{keys}");
    assert!(!keys.contains("sk-tokens"), "never the key itself: {keys}");
    const ONE: &str =
        r#"{"model":"gpt-4o","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut ok = false;
    for _ in 0..20 {
        if post(&b, ONE).await.status == 200 {
            ok = true;
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the settlements never reached Redis");

    // A stream cut mid-way on A settles (in Redis) what it produced: then B can reserve 250.
    mock.push_fault(Fault::CutAfter(2));
    let stream = send(
        client()
            .post(format!("{}/v1/chat/completions", a.url))
            .insert_header(("authorization", "Bearer sk-stream"))
            .insert_header(("content-type", "application/json")),
        Some(r#"{"model":"gpt-4o","stream":true,"max_tokens":200,"messages":[{"role":"user","content":"hi"}],"mock":{"chunks":8,"delay_ms":20}}"#),
    )
    .await;
    assert_eq!(stream.status, 200);
    assert!(
        sse_json(&stream.body).last().unwrap()["error"].is_object(),
        "cut"
    );
    let mut ok = false;
    for _ in 0..20 {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        let r = send(
            client()
                .post(format!("{}/v1/chat/completions", b.url))
                .insert_header(("authorization", "Bearer sk-stream"))
                .insert_header(("content-type", "application/json")),
            Some(r#"{"model":"gpt-4o","max_tokens":250,"messages":[{"role":"user","content":"hi"}]}"#),
        )
        .await;
        if r.status == 200 {
            ok = true;
            break;
        }
    }
    assert!(
        ok,
        "the cut stream's reservation was never settled in Redis"
    );
}

#[actix_rt::test]
async fn a_deployments_rpm_and_tpm_hold_in_total_across_replicas() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b, c, d) = (
        MockServer::start().unwrap(),
        MockServer::start().unwrap(),
        MockServer::start().unwrap(),
        MockServer::start().unwrap(),
    );
    let dir = std::env::temp_dir().join(format!("scira2api-dlimits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("limits.yaml");
    std::fs::write(
        &cfg,
        format!(
            "providers:\n  - {{name: a, base_url: \"{}\"}}\n  - {{name: b, base_url: \"{}\"}}\n  - {{name: c, base_url: \"{}\"}}\n  - {{name: d, base_url: \"{}\"}}\nmodels:\n  - name: g\n    deployments:\n      - {{provider: a, model: m, rpm: 3}}\n      - {{provider: b, model: m, order: 1}}\n  - name: h\n    deployments:\n      - {{provider: c, model: m, tpm: 250}}\n      - {{provider: d, model: m, order: 1}}\n",
            a.url(),
            b.url(),
            c.url(),
            d.url()
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let env = [
        ("CONFIG_FILE", cfg.as_str()),
        ("REQUESTS_PER_SECOND", "1000"),
    ];
    let (r1, r2) = (replica(&a, &redis, &env), replica(&a, &redis, &env));
    // rpm 3 in total: eight requests over both replicas, three reach `a`, the rest `b`.
    for i in 0..8 {
        let gw = if i % 2 == 0 { &r1 } else { &r2 };
        let r = post_chat(
            gw,
            r#"{"model":"g","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(chat_requests(&a), 3, "a's rpm holds across the replicas");
    assert_eq!(chat_requests(&b), 5);
    // tpm 250 in total: four at once reserving prompt + 100 each, while `c` takes 400 ms: two
    // fit in c's budget, the others go to `d`.
    let slow = r#"{"model":"h","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"mock":{"latency_ms":400}}"#;
    let replies =
        join_all((0..4).map(|i| post_chat(if i % 2 == 0 { &r1 } else { &r2 }, slow))).await;
    assert!(replies.iter().all(|r| r.status == 200));
    assert_eq!(chat_requests(&c), 2, "c's tpm holds across the replicas");
    assert_eq!(chat_requests(&d), 2);
}

/// A chat request with the replicas' key.
async fn post_chat(gw: &Gateway, body: &str) -> Reply {
    send(
        client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .insert_header(("authorization", "Bearer sk-shared"))
            .insert_header(("content-type", "application/json")),
        Some(body),
    )
    .await
}

#[actix_rt::test]
async fn a_stored_response_is_read_continued_and_deleted_on_any_replica() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = MockServer::start().unwrap();
    let env = [("REQUESTS_PER_SECOND", "1000")];
    let (a, b) = (replica(&mock, &redis, &env), replica(&mock, &redis, &env));
    let with_key = |req: awc::ClientRequest| {
        req.insert_header(("authorization", "Bearer sk-shared"))
            .insert_header(("content-type", "application/json"))
    };
    let created = send(
        with_key(client().post(format!("{}/v1/responses", a.url))),
        Some(r#"{"model":"gpt-4o","input":"remember 42"}"#),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    // Replica B reads it …
    let got = send(
        with_key(client().get(format!("{}/v1/responses/{id}", b.url))),
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["id"], id);
    assert_eq!(got.json()["output"], created.json()["output"]);
    // … continues the conversation (its history comes from Redis) …
    let next = send(
        with_key(client().post(format!("{}/v1/responses", b.url))),
        Some(&format!(
            r#"{{"model":"gpt-4o","input":"and now?","previous_response_id":"{id}"}}"#
        )),
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.text());
    let last = mock.requests().last().cloned().unwrap();
    let sent: Value = serde_json::from_slice(&last.body).unwrap();
    assert!(
        sent["messages"].to_string().contains("remember 42"),
        "{sent}"
    );
    // … and deletes it: gone for A too.
    let deleted = send(
        with_key(client().delete(format!("{}/v1/responses/{id}", b.url))),
        None,
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let gone = send(
        with_key(client().get(format!("{}/v1/responses/{id}", a.url))),
        None,
    )
    .await;
    gone.assert_error(404, None);
    let keys = redis.command(&["KEYS", "scira2api:resp:*"]);
    assert!(!keys.contains(&id), "{keys}");
}

#[actix_rt::test]
async fn a_front_cache_serves_repeated_answers_without_redis() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mock = MockServer::start().unwrap();
    let on = [("CACHE_ENABLED", "true"), ("RATE_LIMIT_ENABLED", "false")];
    let front = [
        ("CACHE_ENABLED", "true"),
        ("RATE_LIMIT_ENABLED", "false"),
        ("CACHE_FRONT_ENTRIES", "100"),
    ];
    let (a, b) = (replica(&mock, &redis, &on), replica(&mock, &redis, &front));
    assert_eq!(
        chat(&a, "front").await.header("x-cache").as_deref(),
        Some("MISS")
    );
    // B reads it from Redis once and keeps a copy in front …
    assert_eq!(
        chat(&b, "front").await.header("x-cache").as_deref(),
        Some("HIT")
    );
    redis.stop();
    // … which answers with Redis gone; A, without a front, misses and asks the upstream.
    for _ in 0..3 {
        let r = chat(&b, "front").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cache").as_deref(), Some("HIT"));
    }
    assert_eq!(chat_requests(&mock), 1);
    let r = chat(&a, "front").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache").as_deref(), Some("MISS"));
    assert_eq!(chat_requests(&mock), 2);
}
