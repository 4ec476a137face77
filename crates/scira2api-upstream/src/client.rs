//! The per-worker upstream client and the settings it is built from.

use crate::ChatReply;
use crate::openai::{ModelRewrite, OpenAiStreamDecoder};
use crate::stream::DecodedStream;
use awc::error::{ConnectError, SendRequestError};
use awc::http::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use bytes::Bytes;
use scira2api_models::ModelEntry;
use scira2api_types::{ChatRequest, Error, openai_error_message};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Which protocol the upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Any OpenAI-compatible `/v1/chat/completions` backend.
    OpenAi,
    /// The Scira AI service (`/api/search`).
    Scira,
}

impl ProviderKind {
    /// The name used in settings and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Scira => "scira",
        }
    }
}

/// Upstream connection reuse settings, applied to awc's connector.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Reuse connections (keep-alive); when off, every request opens its own connection.
    pub enabled: bool,
    /// Most connections per worker to one host.
    pub max_conns_per_host: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
    /// The longest a connection is reused, idle or not.
    pub lifetime: Duration,
}

/// Everything an [`Upstream`] needs; built once from the gateway config and shared by workers.
pub struct UpstreamConfig {
    /// Protocol of the upstream.
    pub provider: ProviderKind,
    /// Base URL without a trailing slash, e.g. `https://api.openai.com` or `http://h/v1`.
    pub base_url: String,
    /// Keys sent as `Authorization: Bearer`, rotated round-robin. Empty = none sent.
    pub api_keys: Vec<String>,
    /// Bound on the wait for the response head, on a whole non-stream answer, and on the
    /// silence between two events of a stream.
    pub client_timeout: Duration,
    /// Bound on opening a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Largest upstream body (non-stream) or line (stream) accepted.
    pub max_body_bytes: usize,
    /// Connection reuse.
    pub pool: PoolConfig,
    next_key: AtomicUsize,
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field(
                "api_keys",
                &format_args!("[{} masked]", self.api_keys.len()),
            )
            .field("client_timeout", &self.client_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("pool", &self.pool)
            .finish()
    }
}

impl UpstreamConfig {
    /// Settings with the given values; `base_url` loses any trailing slash.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        provider: ProviderKind,
        base_url: &str,
        api_keys: Vec<String>,
        client_timeout: Duration,
        connect_timeout: Duration,
        max_body_bytes: usize,
        pool: PoolConfig,
    ) -> Self {
        UpstreamConfig {
            provider,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_keys,
            client_timeout,
            connect_timeout,
            max_body_bytes,
            pool,
            next_key: AtomicUsize::new(0),
        }
    }

    /// The next key in round-robin order, if any are configured.
    fn next_key(&self) -> Option<&str> {
        if self.api_keys.is_empty() {
            return None;
        }
        let i = self.next_key.fetch_add(1, Ordering::Relaxed) % self.api_keys.len();
        Some(&self.api_keys[i])
    }

    /// `{base}/v1/{path}`, or `{base}/{path}` when the base already ends in `/v1`.
    fn v1_url(&self, path: &str) -> String {
        if self.base_url.ends_with("/v1") {
            format!("{}/{path}", self.base_url)
        } else {
            format!("{}/v1/{path}", self.base_url)
        }
    }
}

/// A worker's upstream client. Cheap to call concurrently from that worker's tasks.
pub struct Upstream {
    client: awc::Client,
    config: Arc<UpstreamConfig>,
    chat_url: String,
}

impl Upstream {
    /// Builds the awc client (connector with the pool and timeout settings) for this worker.
    pub fn new(config: Arc<UpstreamConfig>) -> Self {
        // awc's rustls needs a process-wide crypto provider; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pool = &config.pool;
        let connector = awc::Connector::new()
            .timeout(config.connect_timeout)
            .limit(pool.max_conns_per_host)
            .conn_keep_alive(pool.idle_timeout)
            .conn_lifetime(pool.lifetime);
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(config.client_timeout)
            .disable_redirects()
            .finish();
        let chat_url = config.v1_url("chat/completions");
        Upstream {
            client,
            config,
            chat_url,
        }
    }

    /// The shared settings.
    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    fn post(&self, url: &str) -> awc::ClientRequest {
        let mut req = self
            .client
            .post(url)
            .insert_header((CONTENT_TYPE, "application/json"));
        if let Some(key) = self.config.next_key() {
            req = req.bearer_auth(key);
        }
        if !self.config.pool.enabled {
            req = req.force_close();
        }
        req
    }

    /// Sends a chat request for `internal_model` and returns the answer in OpenAI form, with
    /// `model` set to the name the client asked for.
    pub async fn chat(&self, req: &ChatRequest, internal_model: &str) -> Result<ChatReply, Error> {
        let rewrite = ModelRewrite::new(&req.model, internal_model);
        let body = req.upstream_body(internal_model);
        let mut http = self.post(&self.chat_url);
        if req.stream {
            http = http.insert_header((ACCEPT, "text/event-stream"));
        }
        let resp = http
            .send_body(body)
            .await
            .map_err(|e| send_error(e, &self.config))?;
        if !resp.status().is_success() {
            return Err(error_from_response(resp).await);
        }
        if req.stream {
            let decoder = OpenAiStreamDecoder::new(rewrite);
            let stream = DecodedStream::new(
                Box::pin(resp),
                decoder,
                self.config.client_timeout,
                self.config.max_body_bytes,
            );
            Ok(ChatReply::Stream(stream.boxed()))
        } else {
            let mut resp = resp.timeout(self.config.client_timeout);
            let body = resp
                .body()
                .limit(self.config.max_body_bytes)
                .await
                .map_err(|e| body_error(e, &self.config))?;
            Ok(ChatReply::Json(rewrite.apply(body)))
        }
    }

    /// Fetches the upstream's own model list (`GET /v1/models`), for providers that have one.
    pub async fn models(&self) -> Result<Vec<ModelEntry>, Error> {
        if self.config.provider != ProviderKind::OpenAi {
            return Ok(Vec::new());
        }
        let mut req = self.client.get(self.config.v1_url("models"));
        if let Some(key) = self.config.next_key() {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| send_error(e, &self.config))?;
        if !resp.status().is_success() {
            return Err(error_from_response(resp).await);
        }
        let mut resp = resp.timeout(self.config.client_timeout);
        let body = resp
            .body()
            .limit(self.config.max_body_bytes)
            .await
            .map_err(|e| body_error(e, &self.config))?;
        parse_model_list(&body)
    }
}

fn parse_model_list(body: &[u8]) -> Result<Vec<ModelEntry>, Error> {
    #[derive(serde::Deserialize)]
    struct List {
        data: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        id: String,
        #[serde(default)]
        created: u64,
        #[serde(default)]
        owned_by: Option<String>,
    }
    let list: List = serde_json::from_slice(body)
        .map_err(|e| Error::upstream(format!("the upstream model list is not OpenAI JSON: {e}")))?;
    Ok(list
        .data
        .into_iter()
        .map(|m| ModelEntry {
            id: m.id,
            object: "model",
            created: m.created,
            owned_by: m.owned_by.unwrap_or_else(|| "upstream".to_owned()),
        })
        .collect())
}

/// The host of the base URL, for messages (never includes credentials).
fn host_of(config: &UpstreamConfig) -> &str {
    let rest = config
        .base_url
        .split("://")
        .nth(1)
        .unwrap_or(&config.base_url);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit('@').next().unwrap_or(authority)
}

fn send_error(e: SendRequestError, config: &UpstreamConfig) -> Error {
    let host = host_of(config);
    match e {
        SendRequestError::Timeout => Error::UpstreamTimeout(format!(
            "{host} did not answer within {} (CLIENT_TIMEOUT)",
            crate::stream::humantime_short(config.client_timeout)
        )),
        SendRequestError::Connect(ConnectError::Timeout) => Error::UpstreamTimeout(format!(
            "could not connect to {host} within {} (CONNECT_TIMEOUT)",
            crate::stream::humantime_short(config.connect_timeout)
        )),
        SendRequestError::Connect(c) => {
            Error::upstream(format!("could not connect to {host}: {c}"))
        }
        other => Error::upstream(format!("request to {host} failed: {other}")),
    }
}

fn body_error(e: awc::error::PayloadError, config: &UpstreamConfig) -> Error {
    let host = host_of(config);
    match e {
        awc::error::PayloadError::Overflow => Error::upstream(format!(
            "the answer from {host} is larger than MAX_BODY_BYTES ({} bytes)",
            config.max_body_bytes
        )),
        other => Error::upstream(format!("reading the answer from {host} failed: {other}")),
    }
}

/// `retry-after-ms` (preferred) or `retry-after` in seconds.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_millis(ms as u64));
        }
    }
    get("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Turns a non-2xx upstream answer into an [`Error`]: an OpenAI error object is kept as it was,
/// anything else becomes a 502 that says what came back.
pub(crate) async fn error_from_response<S>(mut resp: awc::ClientResponse<S>) -> Error
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
    let body = resp.body().limit(1 << 20).await.unwrap_or_default();
    if let Some(message) = openai_error_message(&body) {
        return Error::UpstreamApi {
            status,
            body,
            message,
            retry_after,
        };
    }
    Error::Upstream {
        status: 502,
        kind: "upstream_error",
        code: "upstream_error",
        message: format!(
            "the upstream answered HTTP {status} with {}",
            describe_body(&body)
        ),
        retry_after,
    }
}

/// A short, safe description of a body for error messages.
pub(crate) fn describe_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return "an empty body".to_owned();
    }
    let lower = trimmed
        .get(..trimmed.len().min(64))
        .unwrap_or("")
        .to_ascii_lowercase();
    if lower.starts_with("<!doctype") || lower.starts_with("<html") {
        return "an HTML page (a firewall, a bot check, or a wrong BASE_URL?)".to_owned();
    }
    let snippet: String = trimmed.chars().take(200).collect();
    format!("a non-OpenAI body: {snippet}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(base: &str) -> UpstreamConfig {
        UpstreamConfig::new(
            ProviderKind::OpenAi,
            base,
            vec!["k1".into(), "k2".into()],
            Duration::from_secs(1),
            Duration::from_secs(1),
            1024,
            PoolConfig {
                enabled: true,
                max_conns_per_host: 10,
                idle_timeout: Duration::from_secs(90),
                lifetime: Duration::from_secs(300),
            },
        )
    }

    #[test]
    fn v1_url_handles_both_base_forms() {
        assert_eq!(
            cfg("https://api.openai.com/").v1_url("models"),
            "https://api.openai.com/v1/models"
        );
        assert_eq!(
            cfg("http://h:1/v1").v1_url("chat/completions"),
            "http://h:1/v1/chat/completions"
        );
    }

    #[test]
    fn keys_rotate_and_debug_masks_them() {
        let c = cfg("http://h");
        assert_eq!(c.next_key(), Some("k1"));
        assert_eq!(c.next_key(), Some("k2"));
        assert_eq!(c.next_key(), Some("k1"));
        assert!(!format!("{c:?}").contains("k1"));
        assert_eq!(host_of(&cfg("http://user:pw@h:8/x")), "h:8");
    }

    #[test]
    fn describes_bodies() {
        assert_eq!(describe_body(b""), "an empty body");
        assert!(describe_body(b"<!DOCTYPE html><html>").contains("HTML page"));
        assert!(describe_body(b"oops").contains("oops"));
    }

    #[test]
    fn parses_model_list() {
        let l = parse_model_list(br#"{"object":"list","data":[{"id":"a","object":"model","created":5,"owned_by":"o"},{"id":"b"}]}"#).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].created, 5);
        assert_eq!(l[1].owned_by, "upstream");
        assert!(parse_model_list(b"[]").is_err());
    }
}
