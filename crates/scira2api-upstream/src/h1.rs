//! The gateway's own HTTP/1.1 client, for `http://` upstreams reached without a proxy (a
//! backend on the same host or network: vLLM, Ollama, LiteLLM, the mock): one keep-alive pool
//! per worker, the request head and body written in one go, the answer head parsed with
//! `httparse` straight into the header map the providers read.
//!
//! awc pays, per request, for a codec configuration with its own date service, a hashed pool
//! lookup through several boxed services, a 96-entry header index zeroed for every parse and a
//! formatted `Host` header; on a fast upstream that was a third of what a bare actix-web + awc
//! proxy spends (`docs/benchmarks.md`). `https://` and proxied upstreams, and request bodies
//! streamed from the client, stay on awc; `LEAN_HTTP1=false` sends everything through awc.
//!
//! Errors are awc's own types ([`SendRequestError`], [`PayloadError`]), so a failure here is
//! worded, classified and retried exactly as the same failure through awc.

use crate::connect::{ConnStats, CountedStream};
use actix_http::error::ParseError;
use actix_rt::net::TcpStream;
use awc::error::{ConnectError, PayloadError, SendRequestError};
use awc::http::header::{
    CONNECTION, CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING,
};
use awc::http::{Method, StatusCode, Uri};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::Stream;
use std::cell::{OnceCell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most header lines in an answer head.
const MAX_HEADERS: usize = 96;
/// Largest answer head, and largest chunk-size or trailer line.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;
/// A request body at most this large is copied behind its head (one contiguous write);
/// a larger one is written from its own buffer.
const COPY_BODY: usize = 16 * 1024;

/// How one pool connects and reuses.
#[derive(Debug, Clone)]
pub(crate) struct H1Settings {
    /// Keep connections open between requests.
    pub keep_alive: bool,
    /// Most connections open at once (in use or idle); a request beyond them waits for one.
    pub max_conns: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
    /// The longest a connection is reused.
    pub lifetime: Duration,
    /// Bound on opening a connection.
    pub connect_timeout: Duration,
}

/// A worker's client for one `http://host:port` upstream.
pub(crate) struct H1Client {
    pool: Rc<Pool>,
}

struct Pool {
    host: String,
    port: u16,
    /// The URI authority requests must name to be sent here.
    authority: String,
    /// The `Host` header, as awc writes it (no port when it is 80).
    host_header: Bytes,
    settings: H1Settings,
    idle: RefCell<VecDeque<Box<Conn>>>,
    permits: Arc<Semaphore>,
    stats: Arc<ConnStats>,
}

struct Conn {
    io: CountedStream,
    born: Instant,
    idle_since: Instant,
    /// Bytes read and not yet handed out; empty between requests.
    buf: BytesMut,
    /// The deadline of the request the connection carries, kept between requests so that it
    /// is moved rather than made anew (`None` until the first request, and while one runs).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A connection in use, with the slot it occupies. The connection is boxed (once, when it is
/// opened) so that a lease, and the answer that carries it, moves a pointer rather than the
/// connection through each layer of the call.
struct Lease {
    conn: Box<Conn>,
    pool: Rc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// Puts the connection back in the pool (when it can carry another request), or closes it.
    fn release(self, reusable: bool) {
        if !reusable || !self.conn.buf.is_empty() || !self.pool.settings.keep_alive {
            return;
        }
        let mut conn = self.conn;
        // One clock read for every check here (this runs once per request).
        let now = Instant::now();
        if now.saturating_duration_since(conn.born) >= self.pool.settings.lifetime {
            return;
        }
        conn.idle_since = now;
        let mut idle = self.pool.idle.borrow_mut();
        let timeout = self.pool.settings.idle_timeout;
        while idle
            .front()
            .is_some_and(|c| now.saturating_duration_since(c.idle_since) >= timeout)
        {
            idle.pop_front();
        }
        idle.push_back(conn);
    }
}

impl H1Client {
    /// A client for `uri`'s host, or `None` when `uri` is not a plain `http://` URL with a host.
    pub(crate) fn for_uri(uri: &Uri, settings: H1Settings, stats: Arc<ConnStats>) -> Option<Self> {
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let authority = uri.authority()?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let host_header = match authority.port_u16() {
            None | Some(80) => Bytes::from(authority.host().to_owned()),
            Some(p) => Bytes::from(format!("{}:{p}", authority.host())),
        };
        let permits = Arc::new(Semaphore::new(settings.max_conns.max(1)));
        Some(H1Client {
            pool: Rc::new(Pool {
                host: host.to_owned(),
                port,
                authority: authority.as_str().to_owned(),
                host_header,
                settings,
                idle: RefCell::new(VecDeque::new()),
                permits,
                stats,
            }),
        })
    }

    /// Whether `uri` goes to this client's upstream.
    pub(crate) fn serves(&self, uri: &Uri) -> bool {
        uri.scheme_str() == Some("http")
            && uri.authority().map(|a| a.as_str()) == Some(self.pool.authority.as_str())
    }

    /// Sends one request and reads its answer head within `timeout`; the body is read through
    /// the returned [`H1Response`].
    pub(crate) async fn send(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &[(HeaderName, HeaderValue)],
        body: &Bytes,
        timeout: Duration,
    ) -> Result<H1Response, SendRequestError> {
        // One clock read for the deadline and the pool's checks.
        let now = Instant::now();
        let deadline = tokio::time::Instant::from_std(now + timeout);
        // A slot and a connection are at hand in the common case; the deadline's timer is made
        // only when they are not (a full pool, a connection to open).
        let mut lease = match tokio::time::timeout_at(deadline, self.lease(now)).await {
            Ok(lease) => lease?,
            Err(_) => return Err(SendRequestError::Timeout),
        };
        // The exchange proper runs against the connection's own timer, moved to this deadline:
        // a timer still registered from the connection's last request is only pushed later,
        // where a fresh one per request would be registered and cancelled every time.
        let mut timer = match lease.conn.timer.take() {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let head = {
            let mut exchange =
                std::pin::pin!(self.exchange(&mut lease, method, uri, headers, body));
            std::future::poll_fn(|cx| match exchange.as_mut().poll(cx) {
                Poll::Ready(head) => Poll::Ready(head),
                Poll::Pending => match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(SendRequestError::Timeout)),
                    Poll::Pending => Poll::Pending,
                },
            })
            .await?
        };
        // The timer keeps the waker of its last poll: this request's task. A no-op waker in its
        // place, so that an idle connection's timer does not keep that task's memory alive.
        let _ = timer.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        lease.conn.timer = Some(timer);
        let framing = head.framing(method);
        let reusable = head.keep_alive && !matches!(framing, Framing::UntilClose);
        Ok(H1Response {
            status: head.status,
            head: head.raw,
            headers: OnceCell::new(),
            body: H1Body {
                lease: Some(lease),
                framing,
                reusable,
            },
        })
    }

    /// Writes the request on `lease`'s connection and reads the answer head.
    async fn exchange(
        &self,
        lease: &mut Lease,
        method: &Method,
        uri: &Uri,
        headers: &[(HeaderName, HeaderValue)],
        body: &Bytes,
    ) -> Result<Head, SendRequestError> {
        let head = self.pool.request_head(method, uri, headers, body);
        let written = if body.len() <= COPY_BODY {
            let mut head = head;
            head.extend_from_slice(body);
            lease.conn.io.write_all(&head).await
        } else {
            let mut whole = head.freeze().chain(body.clone());
            lease.conn.io.write_all_buf(&mut whole).await
        };
        written.map_err(SendRequestError::Send)?;
        read_head(&mut lease.conn).await
    }

    /// An idle connection that is still open, or a new one, once a slot is free (`now`: the
    /// time the request started, for the idle connections' age checks).
    async fn lease(&self, now: Instant) -> Result<Lease, SendRequestError> {
        let pool = &self.pool;
        // At the limit, a request waits for a slot (within the caller's deadline, as in awc).
        let permit = pool
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SendRequestError::Connect(ConnectError::Timeout))?;
        let wait = pool.settings.connect_timeout;
        loop {
            let next = pool.idle.borrow_mut().pop_back();
            let Some(mut conn) = next else { break };
            let s = &pool.settings;
            if now.saturating_duration_since(conn.idle_since) < s.idle_timeout
                && now.saturating_duration_since(conn.born) < s.lifetime
                && still_open(&mut conn)
            {
                return Ok(Lease {
                    conn,
                    pool: pool.clone(),
                    _permit: permit,
                });
            }
        }
        let connect = TcpStream::connect((pool.host.as_str(), pool.port));
        let stream = match actix_rt::time::timeout(wait, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendRequestError::Connect(ConnectError::Io(e))),
            Err(_) => return Err(SendRequestError::Connect(ConnectError::Timeout)),
        };
        // Latency over throughput, as for every upstream connection.
        let _ = stream.set_nodelay(true);
        let now = Instant::now();
        Ok(Lease {
            conn: Box::new(Conn {
                io: CountedStream::new(stream, pool.stats.clone()),
                born: now,
                idle_since: now,
                buf: BytesMut::new(),
                timer: None,
            }),
            pool: pool.clone(),
            _permit: permit,
        })
    }
}

impl Pool {
    /// `METHOD path HTTP/1.1`, `Host`, the request's headers (without the framing ones, which
    /// are written here), `Content-Length` and, without keep-alive, `Connection: close`.
    fn request_head(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &[(HeaderName, HeaderValue)],
        body: &[u8],
    ) -> BytesMut {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut head = BytesMut::with_capacity(128 + path.len() + 64 * headers.len());
        head.put_slice(method.as_str().as_bytes());
        head.put_u8(b' ');
        head.put_slice(path.as_bytes());
        head.put_slice(b" HTTP/1.1\r\nhost: ");
        head.put_slice(&self.host_header);
        head.put_slice(b"\r\n");
        for (name, value) in headers {
            if name == HOST
                || name == CONTENT_LENGTH
                || name == CONNECTION
                || name == TRANSFER_ENCODING
            {
                continue;
            }
            head.put_slice(name.as_str().as_bytes());
            head.put_slice(b": ");
            head.put_slice(value.as_bytes());
            head.put_slice(b"\r\n");
        }
        if !body.is_empty() || !matches!(*method, Method::GET | Method::HEAD | Method::DELETE) {
            head.put_slice(b"content-length: ");
            put_decimal(&mut head, body.len());
            head.put_slice(b"\r\n");
        }
        if !self.settings.keep_alive {
            head.put_slice(b"connection: close\r\n");
        }
        head.put_slice(b"\r\n");
        head
    }
}

fn put_decimal(buf: &mut BytesMut, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[i..]);
}

/// Whether an idle connection can carry a request: the upstream has neither closed it nor sent
/// anything on it since its last answer. Asks the socket only when the reactor has seen it
/// become readable, so a quiet connection costs no system call.
fn still_open(conn: &mut Conn) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut probe = [MaybeUninit::<u8>::uninit(); 1];
    let mut probe = ReadBuf::uninit(&mut probe);
    matches!(
        Pin::new(&mut conn.io).poll_read(&mut cx, &mut probe),
        Poll::Pending
    )
}

/// Reads once from `conn` into its buffer: the bytes read (0 at end of stream).
async fn fill(conn: &mut Conn) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_fill(conn, cx)).await
}

fn poll_fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    conn.buf.reserve(READ_CHUNK);
    tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf)
}

/// A parsed answer head.
struct Head {
    status: StatusCode,
    /// The head's bytes, for [`H1Response::headers`].
    raw: Bytes,
    keep_alive: bool,
    chunked: bool,
    /// `Transfer-Encoding` without `chunked` last: the body runs to the end of the connection.
    other_coding: bool,
    length: Option<u64>,
}

impl Head {
    fn framing(&self, method: &Method) -> Framing {
        let code = self.status.as_u16();
        if *method == Method::HEAD || code == 204 || code == 304 {
            Framing::Length(0)
        } else if self.chunked {
            Framing::Chunked(Chunked::Size)
        } else if self.other_coding {
            Framing::UntilClose
        } else {
            match self.length {
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        }
    }
}

/// Reads the answer head (skipping interim `1xx` answers); what follows it stays in the buffer.
async fn read_head(conn: &mut Conn) -> Result<Head, SendRequestError> {
    let mut received = false;
    loop {
        if !conn.buf.is_empty() {
            received = true;
            if let Some(head) = parse_head(&mut conn.buf)? {
                return Ok(head);
            }
            if conn.buf.len() > MAX_HEAD {
                return Err(SendRequestError::Response(ParseError::TooLarge));
            }
        }
        match fill(conn).await {
            Ok(0) if !received => {
                return Err(SendRequestError::Send(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection without answering",
                )));
            }
            Ok(0) => return Err(SendRequestError::Response(ParseError::Incomplete)),
            Ok(_) => {}
            Err(e) => return Err(SendRequestError::Send(e)),
        }
    }
}

/// Parses a complete head at the start of `buf` and removes it; `None` when more bytes are
/// needed. An interim `1xx` answer is removed and parsing goes on after it.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, SendRequestError> {
    loop {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(SendRequestError::Response(ParseError::TooLarge));
            }
            Err(httparse::Error::Status) => {
                return Err(SendRequestError::Response(ParseError::Status));
            }
            Err(httparse::Error::Version) => {
                return Err(SendRequestError::Response(ParseError::Version));
            }
            Err(_) => return Err(SendRequestError::Response(ParseError::Header)),
        };
        let code = resp.code.unwrap_or(0);
        if (100..200).contains(&code) && code != 101 {
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code)
            .map_err(|_| SendRequestError::Response(ParseError::Status))?;
        let http11 = resp.version == Some(1);
        let mut head = Head {
            status,
            raw: Bytes::new(),
            keep_alive: http11,
            chunked: false,
            other_coding: false,
            length: None,
        };
        // Only the framing headers are read now; the header map is built when asked for (an
        // error answer, a download's type), from the bytes httparse has already checked.
        for h in resp.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"connection") {
                let close = tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
                let keep = tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"keep-alive"));
                head.keep_alive = !close && (http11 || keep);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // Only the last coding frames the body (RFC 9112 §6.1).
                let last = tokens(h.value).last();
                head.chunked = last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
                head.other_coding = !head.chunked;
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(SendRequestError::Response(ParseError::Header))?;
                if head.length.is_some_and(|m| m != n) {
                    return Err(SendRequestError::Response(ParseError::Header));
                }
                head.length = Some(n);
            }
        }
        head.raw = buf.split_to(len).freeze();
        if head.chunked || head.other_coding {
            // A length beside a transfer coding is ignored (and the connection not trusted).
            head.length = None;
            head.keep_alive &= head.chunked;
        }
        return Ok(Some(head));
    }
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// An answer: its status and headers, and its body to read.
pub(crate) struct H1Response {
    pub(crate) status: StatusCode,
    head: Bytes,
    headers: OnceCell<HeaderMap>,
    pub(crate) body: H1Body,
}

impl H1Response {
    /// The answer's headers, parsed from its head on first use.
    pub(crate) fn headers(&self) -> &HeaderMap {
        self.headers.get_or_init(|| header_map(&self.head))
    }
}

/// The header map of a head that [`parse_head`] accepted (so every name is a token and every
/// value free of control bytes: what the map accepts too).
fn header_map(head: &[u8]) -> HeaderMap {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let mut map = HeaderMap::new();
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, head, &mut slots);
    if !matches!(parsed, Ok(httparse::Status::Complete(_))) {
        return map;
    }
    for h in resp.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// How the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// `Transfer-Encoding: chunked`, in this state.
    Chunked(Chunked),
    /// The body ends with the connection.
    UntilClose,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// At the trailer section after the last chunk.
    Trailers,
}

/// What one decoding step found in the buffer.
enum Step {
    Data(Bytes),
    End,
    More,
}

fn corrupt() -> PayloadError {
    PayloadError::EncodingCorrupted
}

impl Framing {
    /// Takes the next piece of body out of `buf`.
    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, PayloadError> {
        loop {
            match self {
                Framing::Length(0) => return Ok(Step::End),
                Framing::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = (*left).min(buf.len() as u64) as usize;
                    *left -= n as u64;
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Framing::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                Framing::Chunked(state) => match *state {
                    Chunked::Size => {
                        let Some(line) = take_line(buf)? else {
                            return Ok(Step::More);
                        };
                        let size = chunk_size(&line)?;
                        *state = if size == 0 {
                            Chunked::Trailers
                        } else {
                            Chunked::Data(size)
                        };
                    }
                    Chunked::Data(left) => {
                        if buf.is_empty() {
                            return Ok(Step::More);
                        }
                        let n = left.min(buf.len() as u64) as usize;
                        *state = if left == n as u64 {
                            Chunked::DataEnd
                        } else {
                            Chunked::Data(left - n as u64)
                        };
                        return Ok(Step::Data(buf.split_to(n).freeze()));
                    }
                    Chunked::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(Step::More);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(corrupt());
                        }
                        buf.advance(2);
                        *state = Chunked::Size;
                    }
                    Chunked::Trailers => {
                        let Some(line) = take_line(buf)? else {
                            return Ok(Step::More);
                        };
                        if line.is_empty() {
                            *self = Framing::Length(0);
                            return Ok(Step::End);
                        }
                    }
                },
            }
        }
    }
}

/// Removes one CRLF-ended line from `buf` and gives it without its CRLF; `None` when the line
/// is not complete yet.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, PayloadError> {
    match memchr_newline(buf) {
        Some(i) if i > 0 && buf[i - 1] == b'\r' => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i - 1);
            Ok(Some(line))
        }
        Some(_) => Err(corrupt()),
        None if buf.len() > MAX_HEAD => Err(corrupt()),
        None => Ok(None),
    }
}

fn memchr_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// The size on a chunk-size line (`hex[;extensions]`).
fn chunk_size(line: &[u8]) -> Result<u64, PayloadError> {
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let hex = line[..end].trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return Err(corrupt());
    }
    let mut n = 0u64;
    for &b in hex {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(corrupt()),
        };
        n = n * 16 + u64::from(d);
    }
    Ok(n)
}

/// An answer's body, as a stream of the bytes the upstream sent (chunked framing removed).
/// Read to its end, its connection goes back to the pool; dropped before that, it is closed.
pub(crate) struct H1Body {
    lease: Option<Lease>,
    framing: Framing,
    reusable: bool,
}

impl H1Body {
    /// The whole body at once when it has already arrived with the head (the usual case for a
    /// small answer), so no read and no deadline are needed; `None` otherwise.
    pub(crate) fn already_read(&mut self, limit: usize) -> Option<Result<Bytes, PayloadError>> {
        let Framing::Length(n) = self.framing else {
            return None;
        };
        let lease = self.lease.as_mut()?;
        if n > limit as u64 {
            return Some(Err(PayloadError::Overflow));
        }
        if (lease.conn.buf.len() as u64) < n {
            return None;
        }
        let body = lease.conn.buf.split_to(n as usize).freeze();
        self.framing = Framing::Length(0);
        if let Some(lease) = self.lease.take() {
            lease.release(self.reusable);
        }
        Some(Ok(body))
    }

    /// The whole body, at most `limit` bytes (a body announced as larger fails at once).
    pub(crate) async fn collect(mut self, limit: usize) -> Result<Bytes, PayloadError> {
        if let Framing::Length(n) = self.framing {
            if n > limit as u64 {
                return Err(PayloadError::Overflow);
            }
        }
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        let mut total = 0usize;
        while let Some(chunk) = futures_util::StreamExt::next(&mut self).await {
            let chunk = chunk?;
            total += chunk.len();
            if total > limit {
                return Err(PayloadError::Overflow);
            }
            match &first {
                None => first = Some(chunk),
                Some(f) => {
                    if rest.is_empty() {
                        rest.extend_from_slice(f);
                    }
                    rest.extend_from_slice(&chunk);
                }
            }
        }
        Ok(if rest.is_empty() {
            first.unwrap_or_default()
        } else {
            rest.freeze()
        })
    }
}

impl Stream for H1Body {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(lease) = this.lease.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.step(&mut lease.conn.buf) {
                Ok(Step::Data(b)) => return Poll::Ready(Some(Ok(b))),
                Ok(Step::End) => {
                    if let Some(lease) = this.lease.take() {
                        lease.release(this.reusable);
                    }
                    return Poll::Ready(None);
                }
                Err(e) => {
                    this.lease = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Step::More) => {}
            }
            match poll_fill(&mut lease.conn, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    this.lease = None;
                    if this.framing == Framing::UntilClose {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(PayloadError::Incomplete(None))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.lease = None;
                    return Poll::Ready(Some(Err(PayloadError::Io(e))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
