//! The mock's HTTP server, its shared state, faults and request record.

use crate::SciraFormat;
use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Default behaviour of the mock, changeable at run time through [`MockServer::options`].
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Content deltas per streamed answer.
    pub chunks: usize,
    /// Pause between two streamed events.
    pub chunk_delay: Duration,
    /// Pause before the response head.
    pub latency: Duration,
    /// Format of generated Scira answers.
    pub scira_format: SciraFormat,
    /// A Scira body to replay byte for byte instead of generating one.
    pub scira_body: Option<Bytes>,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            chunks: 4,
            chunk_delay: Duration::ZERO,
            latency: Duration::ZERO,
            scira_format: SciraFormat::V6,
            scira_body: None,
        }
    }
}

/// A failure to inject into the next request (one fault per request, in queue order).
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status, extra headers and body.
    Status {
        /// HTTP status.
        status: u16,
        /// Extra response headers.
        headers: Vec<(String, String)>,
        /// The body, sent as `application/json` when it starts with `{`.
        body: Bytes,
    },
    /// Wait this long before answering normally.
    Hang(Duration),
    /// Send the head and this many stream events, then break the connection.
    CutAfter(usize),
    /// Break the connection before any byte of the response (a reset).
    Reset,
    /// Send the head and this many stream events, then an API error event and a clean end
    /// (the Messages endpoint: `event: error` with `overloaded_error`, as Anthropic ends a
    /// stream it cannot finish).
    ErrorAfter(usize),
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl Recorded {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// State shared by the mock's workers and the test that drives it.
#[derive(Debug, Default)]
pub struct MockState {
    options: Mutex<MockOptions>,
    faults: Mutex<VecDeque<Fault>>,
    recorded: Mutex<Vec<Recorded>>,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    /// Streams whose client went away before the end.
    pub aborted: AtomicUsize,
    /// Files and batches uploaded.
    pub(crate) store: Mutex<crate::uploads::Store>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MockState {
    /// Current options.
    pub fn options(&self) -> MockOptions {
        lock(&self.options).clone()
    }

    pub(crate) fn next_fault(&self) -> Option<Fault> {
        lock(&self.faults).pop_front()
    }

    fn record(&self, req: &HttpRequest, body: &Bytes) {
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        lock(&self.recorded).push(Recorded {
            method: req.method().to_string(),
            path: req.uri().to_string(),
            headers,
            body: body.clone(),
        });
    }
}

/// A running mock server.
pub struct MockServer {
    addr: SocketAddr,
    tls: bool,
    state: Arc<MockState>,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockServer {
    /// Starts the mock on `127.0.0.1` with an ephemeral port, on its own thread and runtime.
    pub fn start() -> std::io::Result<MockServer> {
        MockServer::start_on("127.0.0.1:0", MockOptions::default(), 1)
    }

    /// Starts the mock on `addr` with `options` and `workers` threads.
    pub fn start_on(
        addr: &str,
        options: MockOptions,
        workers: usize,
    ) -> std::io::Result<MockServer> {
        MockServer::launch(addr, options, workers, None)
    }

    /// Starts the mock on `127.0.0.1` serving HTTPS with this certificate chain and key.
    pub fn start_tls(
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> std::io::Result<MockServer> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(std::io::Error::other)?;
        MockServer::launch("127.0.0.1:0", MockOptions::default(), 1, Some(tls))
    }

    fn launch(
        addr: &str,
        options: MockOptions,
        workers: usize,
        tls: Option<rustls::ServerConfig>,
    ) -> std::io::Result<MockServer> {
        let state = Arc::new(MockState {
            options: Mutex::new(options),
            ..MockState::default()
        });
        let listener = std::net::TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let st = state.clone();
        let tls_flag = tls.is_some();
        let thread = std::thread::Builder::new()
            .name("mock-upstream".into())
            .spawn(move || {
                let sys = actix_rt::System::new();
                sys.block_on(async move {
                    let conn_state = st.clone();
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(web::Data::from(st.clone()))
                            .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                            .route("/v1/chat/completions", web::post().to(chat))
                            .route("/chat/completions", web::post().to(chat))
                            .route("/v1/responses", web::post().to(responses))
                            .route("/v1/messages", web::post().to(messages))
                            .route("/v1/embeddings", web::post().to(embeddings))
                            .route("/v1/completions", web::post().to(completions))
                            .route("/v1/moderations", web::post().to(moderations))
                            .route("/v1/images/generations", web::post().to(image_generations))
                            .route("/v1/audio/speech", web::post().to(speech))
                            .route("/v1/audio/transcriptions", web::post().to(audio))
                            .route("/v1/audio/translations", web::post().to(audio))
                            .route("/v1/images/edits", web::post().to(image_edits))
                            .route("/v1/files", web::route().to(files))
                            .route("/v1/files/{tail:.*}", web::route().to(files))
                            .route("/v1/batches", web::route().to(files))
                            .route("/v1/batches/{tail:.*}", web::route().to(files))
                            .route("/v1/models", web::get().to(crate::openai::models))
                            .route("/api/search", web::post().to(search))
                            .route("/api/xsearch", web::post().to(scira_api_x))
                            .route("/api/reddit", web::post().to(scira_api_reddit))
                            .route("/api/people", web::post().to(scira_api_people))
                            .default_service(web::to(not_found))
                    })
                    .workers(workers.max(1))
                    .on_connect(move |conn, _| {
                        // Nagle off, as a real upstream streaming events would have it.
                        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                            let _ = tcp.set_nodelay(true);
                        }
                        conn_state.connections.fetch_add(1, Ordering::SeqCst);
                    })
                    .disable_signals()
                    .shutdown_timeout(1);
                    let server = match tls {
                        Some(tls) => server.listen_rustls_0_23(listener, tls),
                        None => server.listen(listener),
                    };
                    match server {
                        Ok(s) => {
                            let s = s.run();
                            let _ = tx.send(Ok(s.handle()));
                            let _ = s.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })?;
        let is_tls = tls_flag;
        let handle = rx
            .recv()
            .map_err(|e| std::io::Error::other(format!("mock thread died: {e}")))??;
        Ok(MockServer {
            addr: local,
            tls: is_tls,
            state,
            handle,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (`https://` for a TLS mock).
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// The shared state (counters).
    pub fn state(&self) -> &Arc<MockState> {
        &self.state
    }

    /// Changes the options.
    pub fn options(&self, f: impl FnOnce(&mut MockOptions)) {
        f(&mut lock(&self.state.options));
    }

    /// Queues a fault for a coming request.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.state.faults).push_back(fault);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.recorded).clone()
    }

    /// The last request received.
    pub fn last_request(&self) -> Option<Recorded> {
        lock(&self.state.recorded).last().cloned()
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            let handle = self.handle.clone();
            // stop() is a future; run it on a throwaway runtime so this works from any context.
            let stopper = std::thread::spawn(move || {
                actix_rt::System::new().block_on(handle.stop(false));
            });
            let _ = stopper.join();
            let _ = t.join();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The response for a queued [`Fault::Status`].
pub(crate) fn status_response(
    status: u16,
    headers: &[(String, String)],
    body: &Bytes,
) -> HttpResponse {
    let code = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = HttpResponse::build(code);
    if body.starts_with(b"{") {
        resp.content_type("application/json");
    } else if body.starts_with(b"<") {
        resp.content_type("text/html");
    }
    for (k, v) in headers {
        resp.insert_header((k.as_str(), v.as_str()));
    }
    resp.body(body.clone())
}

/// Applies the next queued fault: a response to send instead (`Err`), or how many events to
/// send before cutting the stream (`Ok(Some(n))`), after any hang.
pub(crate) async fn apply_fault(state: &Arc<MockState>) -> Result<Option<usize>, HttpResponse> {
    apply_fault_with_error(state).await.map(|(cut, _)| cut)
}

/// [`apply_fault`], and for endpoints that can end a stream with an error event, after how
/// many events to send it ([`Fault::ErrorAfter`]).
pub(crate) async fn apply_fault_with_error(
    state: &Arc<MockState>,
) -> Result<(Option<usize>, Option<usize>), HttpResponse> {
    Ok(match state.next_fault() {
        Some(Fault::ErrorAfter(n)) => (None, Some(n)),
        other => (apply(state, other).await?, None),
    })
}

async fn apply(
    state: &Arc<MockState>,
    fault: Option<Fault>,
) -> Result<Option<usize>, HttpResponse> {
    match fault {
        Some(Fault::Status {
            status,
            headers,
            body,
        }) => Err(status_response(status, &headers, &body)),
        Some(Fault::Hang(d)) => {
            actix_rt::time::sleep(d).await;
            Ok(None)
        }
        Some(Fault::CutAfter(n)) => Ok(Some(n)),
        Some(Fault::Reset) => Err(reset(state.clone())),
        Some(Fault::ErrorAfter(_)) | None => Ok(None),
    }
}

/// A response that breaks the connection before its head is written.
pub(crate) fn reset(state: Arc<MockState>) -> HttpResponse {
    HttpResponse::Ok().streaming(crate::pace::Paced::new(
        Vec::new(),
        Duration::ZERO,
        Some(0),
        state,
    ))
}

async fn chat(req: HttpRequest, state: web::Data<MockState>, body: Bytes) -> HttpResponse {
    state.record(&req, &body);
    crate::openai::chat(state.into_inner(), body).await
}

async fn responses(req: HttpRequest, state: web::Data<MockState>, body: Bytes) -> HttpResponse {
    state.record(&req, &body);
    crate::responses::responses(state.into_inner(), body).await
}

async fn messages(req: HttpRequest, state: web::Data<MockState>, body: Bytes) -> HttpResponse {
    state.record(&req, &body);
    crate::messages::messages(state.into_inner(), &req, body).await
}

macro_rules! recorded {
    ($($name:ident => $handler:path),* $(,)?) => {$(
        async fn $name(req: HttpRequest, state: web::Data<MockState>, body: Bytes) -> HttpResponse {
            state.record(&req, &body);
            $handler(state.into_inner(), body).await
        }
    )*};
}

macro_rules! recorded_with_request {
    ($($name:ident => $handler:path),* $(,)?) => {$(
        async fn $name(req: HttpRequest, state: web::Data<MockState>, body: Bytes) -> HttpResponse {
            state.record(&req, &body);
            $handler(state.into_inner(), req, body).await
        }
    )*};
}

recorded_with_request! {
    audio => crate::uploads::audio,
    image_edits => crate::uploads::image_edits,
    files => crate::uploads::files,
}

recorded! {
    embeddings => crate::endpoints::embeddings,
    completions => crate::endpoints::completions,
    moderations => crate::endpoints::moderations,
    image_generations => crate::endpoints::image_generations,
    speech => crate::endpoints::speech,
}

async fn search(req: HttpRequest, state: web::Data<MockState>, body: Bytes) -> HttpResponse {
    state.record(&req, &body);
    // The official API authenticates with a key; the web endpoint never sends one.
    if req.headers().contains_key("x-api-key") {
        return crate::scira_api::answer(state.into_inner(), &req, "search", body).await;
    }
    crate::scira::search(state.into_inner(), body).await
}

async fn scira_api_x(req: HttpRequest, state: web::Data<MockState>, body: Bytes) -> HttpResponse {
    state.record(&req, &body);
    crate::scira_api::answer(state.into_inner(), &req, "xsearch", body).await
}

async fn scira_api_reddit(
    req: HttpRequest,
    state: web::Data<MockState>,
    body: Bytes,
) -> HttpResponse {
    state.record(&req, &body);
    crate::scira_api::answer(state.into_inner(), &req, "reddit", body).await
}

async fn scira_api_people(
    req: HttpRequest,
    state: web::Data<MockState>,
    body: Bytes,
) -> HttpResponse {
    state.record(&req, &body);
    crate::scira_api::answer(state.into_inner(), &req, "people", body).await
}

async fn not_found(req: HttpRequest, state: web::Data<MockState>, body: Bytes) -> HttpResponse {
    state.record(&req, &body);
    HttpResponse::NotFound()
        .content_type("application/json")
        .body(r#"{"error":{"message":"mock: no such route","type":"invalid_request_error","param":null,"code":"unknown_url"}}"#)
}
