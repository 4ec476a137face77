//! A purpose-built bad upstream: a raw TCP server on 127.0.0.1 that answers each request with a
//! scripted sequence of bytes, pauses, closes and resets — what no well-behaved HTTP server
//! would send (a body shorter than its `Content-Length`, HTML with a 200, garbage SSE, silence
//! after the head, a reset at any point, the request's own headers echoed back).
//!
//! Scripts are queued; each accepted request takes the next one, and when the queue is empty
//! the server answers with a small, valid chat completion. Every request is counted.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One step of a scripted answer.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes.
    Write(Vec<u8>),
    /// Write the request's head (request line and headers) as the body text, JSON-escaped.
    EchoHead,
    /// Write this frame `count` times (a long stream).
    Repeat(Vec<u8>, usize),
    /// Wait.
    Sleep(Duration),
    /// End a chunked body (the `0` chunk). A script that closes without it has cut its body.
    EndChunks,
    /// Close the connection (FIN).
    Close,
    /// Reset the connection (RST: SO_LINGER 0, then close).
    Reset,
}

/// A script: the steps of one answer.
pub type Script = Vec<Step>;

struct Shared {
    scripts: Mutex<VecDeque<Script>>,
    requests: AtomicUsize,
    stop: AtomicBool,
}

/// The running bad upstream; stops when dropped.
pub struct BadUpstream {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
}

/// A valid non-stream chat completion (what the server answers once its queue is empty).
pub const GOOD_COMPLETION: &str = r#"{"id":"chatcmpl-bad","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"fine","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

impl BadUpstream {
    /// Starts the server on an ephemeral loopback port.
    pub fn start() -> std::io::Result<BadUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            scripts: Mutex::new(VecDeque::new()),
            requests: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        Ok(BadUpstream { addr, shared })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a script for the next request.
    pub fn push(&self, script: Script) {
        self.shared
            .scripts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(script);
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for BadUpstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// A response head: with `Content-Length: len`, or chunked when `len` is `None` (then every
/// later write of the script is sent as one chunk, until [`Step::EndChunks`]).
pub fn head(status: u16, content_type: &str, len: Option<usize>) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n");
    match len {
        Some(n) => h.push_str(&format!("content-length: {n}\r\n")),
        None => h.push_str("transfer-encoding: chunked\r\n"),
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// A valid SSE stream answer's head (chunked).
pub fn sse_head() -> Vec<u8> {
    head(200, "text/event-stream", None)
}

/// A chunk event with `content`, and no finish.
pub fn content_event(content: &str) -> Vec<u8> {
    format!(
        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n",
        serde_json::Value::String(content.to_owned())
    )
    .into_bytes()
}

/// The finishing chunk.
pub fn finish_event() -> Vec<u8> {
    b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n".to_vec()
}

/// Reads one request (head and, by `Content-Length`, body); returns the head.
fn read_request(conn: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        have += n;
    }
    Some(head)
}

fn reset(conn: &TcpStream) {
    // SO_LINGER with a zero timeout makes close() send RST.
    let _ = socket_linger_zero(conn);
    let _ = conn.shutdown(Shutdown::Both);
}

fn socket_linger_zero(conn: &TcpStream) -> std::io::Result<()> {
    socket2::SockRef::from(conn).set_linger(Some(Duration::ZERO))
}

fn serve(mut conn: TcpStream, s: &Shared) {
    let _ = conn.set_nodelay(true);
    loop {
        let Some(head) = read_request(&mut conn) else {
            return;
        };
        s.requests.fetch_add(1, Ordering::SeqCst);
        let script = s
            .scripts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let Some(script) = script else {
            let mut out = head_bytes_ok(GOOD_COMPLETION.len());
            out.extend_from_slice(GOOD_COMPLETION.as_bytes());
            if conn.write_all(&out).is_err() {
                return;
            }
            continue;
        };
        let mut chunked = false;
        for step in script {
            let send = |conn: &mut TcpStream, b: &[u8]| {
                if !chunked {
                    return conn.write_all(b).is_ok();
                }
                if b.is_empty() {
                    return true;
                }
                let mut framed = format!("{:x}\r\n", b.len()).into_bytes();
                framed.extend_from_slice(b);
                framed.extend_from_slice(b"\r\n");
                conn.write_all(&framed).is_ok()
            };
            let ok = match step {
                Step::Write(b) => {
                    let ok = send(&mut conn, &b);
                    if !chunked && b.starts_with(b"HTTP/1.1") {
                        chunked = String::from_utf8_lossy(&b)
                            .to_ascii_lowercase()
                            .contains("transfer-encoding: chunked");
                    }
                    ok
                }
                Step::EchoHead => {
                    let text = serde_json::Value::String(head.clone()).to_string();
                    send(&mut conn, text.as_bytes())
                }
                Step::Repeat(b, n) => (0..n).all(|_| send(&mut conn, &b)),
                Step::Sleep(d) => {
                    std::thread::sleep(d);
                    true
                }
                Step::EndChunks => conn.write_all(b"0\r\n\r\n").is_ok(),
                Step::Close => {
                    let _ = conn.shutdown(Shutdown::Both);
                    return;
                }
                Step::Reset => {
                    reset(&conn);
                    return;
                }
            };
            if !ok {
                return;
            }
        }
        // A script that neither closed nor reset leaves the connection to the next request
        // only when its answer was complete; close to be safe.
        let _ = conn.shutdown(Shutdown::Both);
        return;
    }
}

fn head_bytes_ok(len: usize) -> Vec<u8> {
    head(200, "application/json", Some(len))
}
