//! Shared helpers for the end-to-end tests: start the real `scira2api-server` binary on an
//! ephemeral loopback port against a mock upstream, and talk to it over real HTTP.
#![allow(dead_code)]

pub mod proxies;

use bytes::Bytes;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use scira2api_mock::{Fault, MockServer};

/// A running gateway process.
pub struct Gateway {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Starts the server with these settings (nothing else from the environment reaches it).
    pub fn start(env: &[(&str, &str)]) -> Gateway {
        let dir = std::env::temp_dir().join(format!("scira2api-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_scira2api-server"));
        cmd.env_clear()
            .current_dir(&dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("LOG_LEVEL", "debug")
            // Off unless a test turns them on: most tests count upstream requests.
            .env("CACHE_ENABLED", "false")
            .env("RATE_LIMIT_ENABLED", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn scira2api-server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(pos) = line.find("listening on 127.0.0.1:") {
                    let port: String = line[pos + 23..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("gateway did not start: {:?}", log.lock().unwrap())
            });
        Gateway {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Starts the server in front of `mock` as an OpenAI-compatible upstream.
    pub fn openai(mock: &MockServer, extra: &[(&str, &str)]) -> Gateway {
        let base = mock.url();
        let mut env = vec![("BASE_URL", base.as_str()), ("PROVIDER", "openai")];
        env.extend_from_slice(extra);
        Gateway::start(&env)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Sends a signal (`TERM`, `INT`, `HUP`, ...) to the server.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the process to exit; its exit status, or `None` after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client for tests.
pub fn client() -> awc::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .disable_redirects()
        .finish()
}

/// A response, fully read.
pub struct Reply {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Asserts an OpenAI error body with this status and code; returns the error object.
    pub fn assert_error(&self, status: u16, code: Option<&str>) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/json")
        );
        let v = self.json();
        let e = v["error"].clone();
        assert!(e["message"].is_string(), "{v}");
        assert!(e["type"].is_string(), "{v}");
        assert!(e.as_object().unwrap().contains_key("param"), "{v}");
        match code {
            Some(c) => assert_eq!(e["code"], c, "{v}"),
            None => assert!(e["code"].is_null() || e["code"].is_string(), "{v}"),
        }
        e
    }
}

pub async fn send(req: awc::ClientRequest, body: Option<&str>) -> Reply {
    let resp = match body {
        Some(b) => req.send_body(b.to_owned()).await,
        None => req.send().await,
    };
    let mut resp = resp.expect("request failed");
    let body = resp.body().limit(64 << 20).await.expect("body");
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body,
    }
}

/// POST a JSON body to `path`.
pub async fn post(gw: &Gateway, path: &str, body: &str) -> Reply {
    let req = client()
        .post(format!("{}{path}", gw.url))
        .insert_header(("content-type", "application/json"));
    send(req, Some(body)).await
}

/// GET `path`.
pub async fn get(gw: &Gateway, path: &str) -> Reply {
    send(client().get(format!("{}{path}", gw.url)), None).await
}

/// Splits an SSE body into its `data:` payloads, asserting exact `data: ...\n\n` framing
/// (keep-alive comments are allowed between frames).
pub fn sse_frames(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).expect("utf-8 SSE");
    assert!(
        text.ends_with("\n\n"),
        "SSE body must end with a blank line: {text:?}"
    );
    let mut out = Vec::new();
    for frame in text[..text.len() - 2].split("\n\n") {
        if frame.starts_with(':') {
            continue;
        }
        let payload = frame
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("frame without `data: `: {frame:?}"));
        assert!(!payload.contains('\n'), "one line per frame: {frame:?}");
        out.push(payload.to_owned());
    }
    out
}

/// Parses every frame but `[DONE]` as JSON, asserting `[DONE]` is last and appears once.
pub fn sse_json(body: &[u8]) -> Vec<Value> {
    let frames = sse_frames(body);
    assert_eq!(
        frames.last().map(String::as_str),
        Some("[DONE]"),
        "stream must end with [DONE]"
    );
    assert_eq!(frames.iter().filter(|f| *f == "[DONE]").count(), 1);
    frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap_or_else(|e| panic!("frame not JSON ({e}): {f}")))
        .collect()
}

/// The ids of a `/v1/models` list, in order.
pub fn model_ids(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|m| m["id"].as_str().expect("string id"))
        .collect()
}

/// A non-stream and a streamed chat request both complete through `gw` (for the transport
/// tests: proxies, TLS).
pub async fn assert_chat_and_stream_complete(gw: &Gateway) {
    let r = post(
        gw,
        "/v1/chat/completions",
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = post(
        gw,
        "/v1/chat/completions",
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(
        sse_json(&s.body).last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

/// Waits until `cond` holds (polling), up to `timeout`.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Chat requests the mock has received.
pub fn chat_requests(mock: &MockServer) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .count()
}

/// Checks a Prometheus text exposition with `promtool check metrics` (CI installs it; elsewhere
/// the check says SKIPPED).
pub fn assert_promtool_accepts(text: &str) {
    use std::io::Write;
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    match promtool {
        Some(bin) => {
            let mut child = Command::new(bin)
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None if std::env::var_os("CI").is_some() => panic!("promtool missing in CI"),
        None => {
            eprintln!("SKIPPED promtool check: promtool not installed (apt-get install prometheus)")
        }
    }
}
