//! The per-worker upstream client and the settings it is built from.

use crate::ChatReply;
use crate::keys::{KeyOutcome, KeyRing};
use crate::openai::{ModelRewrite, OpenAiStreamDecoder};
use crate::scira::{self, SciraConfig, SciraStreamDecoder};
use crate::stream::DecodedStream;
use awc::error::{ConnectError, SendRequestError};
use awc::http::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use bytes::Bytes;
use scira2api_models::ModelEntry;
use scira2api_types::{ChatRequest, ChunkEncoder, Error, openai_error_message};
use std::fmt;
use std::sync::Arc;
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

/// The plain settings an [`UpstreamConfig`] is built from.
#[derive(Clone)]
pub struct UpstreamSettings {
    /// Protocol of the upstream.
    pub provider: ProviderKind,
    /// Base URL, e.g. `https://api.openai.com` or `http://h/v1` (a trailing slash is dropped).
    pub base_url: String,
    /// Keys sent as `Authorization: Bearer`, rotated. Empty = none sent. Secret.
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
    /// Scira provider settings.
    pub scira: SciraConfig,
}

/// Everything an [`Upstream`] needs; built once from the settings and shared by all workers
/// (credential rotation state included).
pub struct UpstreamConfig {
    settings: UpstreamSettings,
    base_url: String,
    keys: KeyRing,
    cookies: KeyRing,
    user_ids: KeyRing,
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("UpstreamConfig")
            .field("provider", &s.provider)
            .field("base_url", &self.base_url)
            .field("api_keys", &self.keys)
            .field("client_timeout", &s.client_timeout)
            .field("connect_timeout", &s.connect_timeout)
            .field("max_body_bytes", &s.max_body_bytes)
            .field("pool", &s.pool)
            .field("scira", &s.scira)
            .finish()
    }
}

impl UpstreamConfig {
    /// Builds the shared config (and its credential rings) from settings.
    pub fn new(settings: UpstreamSettings) -> Self {
        UpstreamConfig {
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            keys: KeyRing::new(settings.api_keys.clone()),
            cookies: KeyRing::new(settings.scira.cookies.clone()),
            user_ids: KeyRing::new(settings.scira.user_ids.clone()),
            settings,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// Upstream API keys in rotation.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Scira cookies in rotation.
    pub fn cookies(&self) -> &KeyRing {
        &self.cookies
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

/// What an upstream status says about the credential used.
fn key_outcome(status: u16, retry: Option<Duration>) -> KeyOutcome {
    match status {
        200..=299 => KeyOutcome::Ok,
        401 | 403 | 429 => KeyOutcome::Rejected(retry),
        _ => KeyOutcome::Neutral,
    }
}

impl Upstream {
    /// Builds the awc client (connector with the pool and timeout settings) for this worker.
    pub fn new(config: Arc<UpstreamConfig>) -> Self {
        // awc's rustls needs a process-wide crypto provider; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let s = &config.settings;
        let connector = awc::Connector::new()
            .timeout(s.connect_timeout)
            .limit(s.pool.max_conns_per_host)
            .conn_keep_alive(s.pool.idle_timeout)
            .conn_lifetime(s.pool.lifetime);
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(s.client_timeout)
            .disable_redirects()
            .finish();
        let chat_url = match s.provider {
            ProviderKind::OpenAi => config.v1_url("chat/completions"),
            ProviderKind::Scira => format!("{}{}", config.base_url, s.scira.path),
        };
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

    fn settings(&self) -> &UpstreamSettings {
        &self.config.settings
    }

    fn request(&self, req: awc::ClientRequest) -> awc::ClientRequest {
        if self.settings().pool.enabled {
            req
        } else {
            req.force_close()
        }
    }

    /// Sends a chat request for `internal_model` and returns the answer in OpenAI form, with
    /// `model` set to the name the client asked for.
    pub async fn chat(&self, req: &ChatRequest, internal_model: &str) -> Result<ChatReply, Error> {
        match self.settings().provider {
            ProviderKind::OpenAi => self.chat_openai(req, internal_model).await,
            ProviderKind::Scira => self.chat_scira(req, internal_model).await,
        }
    }

    async fn chat_openai(
        &self,
        req: &ChatRequest,
        internal_model: &str,
    ) -> Result<ChatReply, Error> {
        let rewrite = ModelRewrite::new(&req.model, internal_model);
        let body = req.upstream_body(internal_model);
        let mut http = self
            .request(self.client.post(&self.chat_url))
            .insert_header((CONTENT_TYPE, "application/json"));
        let key = self.config.keys.pick();
        if let Some(k) = key {
            http = http.bearer_auth(k.value);
        }
        if req.stream {
            http = http.insert_header((ACCEPT, "text/event-stream"));
        }
        let resp = http
            .send_body(body)
            .await
            .map_err(|e| send_error(e, &self.config))?;
        if let Some(k) = key {
            self.config.keys.report(
                k.index,
                key_outcome(resp.status().as_u16(), retry_after(resp.headers())),
            );
        }
        if !resp.status().is_success() {
            return Err(error_from_response(resp).await);
        }
        if req.stream {
            let s = self.settings();
            let stream = DecodedStream::new(
                Box::pin(resp),
                OpenAiStreamDecoder::new(rewrite),
                s.client_timeout,
                s.max_body_bytes,
            );
            Ok(ChatReply::Stream(stream.primed().await?.boxed()))
        } else {
            let body = self.read_body(resp).await?;
            Ok(ChatReply::Json(rewrite.apply(body)))
        }
    }

    async fn chat_scira(
        &self,
        req: &ChatRequest,
        internal_model: &str,
    ) -> Result<ChatReply, Error> {
        let s = self.settings();
        let messages = req.messages()?;
        let user_id = self.config.user_ids.pick();
        let body = scira::body(
            &s.scira,
            internal_model,
            &messages,
            user_id.map(|u| u.value),
        )?;
        let origin = scira::origin(&self.config.base_url);
        let mut http = self
            .request(self.client.post(&self.chat_url))
            .insert_header((CONTENT_TYPE, "application/json"))
            .insert_header((ACCEPT, "*/*"))
            .insert_header(("referer", format!("{origin}/")))
            .insert_header(("origin", origin))
            .insert_header(("user-agent", s.scira.user_agent.as_str()));
        let cookie = self.config.cookies.pick();
        if let Some(c) = cookie {
            http = http.insert_header(("cookie", c.value));
        }
        let resp = http
            .send_body(body)
            .await
            .map_err(|e| send_error(e, &self.config))?;
        if let Some(c) = cookie {
            self.config.cookies.report(
                c.index,
                key_outcome(resp.status().as_u16(), retry_after(resp.headers())),
            );
        }
        if !resp.status().is_success() {
            return Err(scira::error_from_response(resp).await);
        }
        if req.stream {
            let decoder =
                SciraStreamDecoder::new(ChunkEncoder::new(req.model.clone(), req.include_usage));
            let stream =
                DecodedStream::new(Box::pin(resp), decoder, s.client_timeout, s.max_body_bytes);
            Ok(ChatReply::Stream(stream.primed().await?.boxed()))
        } else {
            let body = self.read_body(resp).await?;
            let completion = scira::collect(&body)?;
            Ok(ChatReply::Json(completion.to_json(&req.model)))
        }
    }

    /// Reads a whole body within `CLIENT_TIMEOUT` and `MAX_BODY_BYTES`.
    async fn read_body<S>(&self, resp: awc::ClientResponse<S>) -> Result<Bytes, Error>
    where
        S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
    {
        let s = self.settings();
        let mut resp = resp.timeout(s.client_timeout);
        resp.body()
            .limit(s.max_body_bytes)
            .await
            .map_err(|e| body_error(e, &self.config))
    }

    /// Fetches the upstream's own model list (`GET /v1/models`), for providers that have one.
    pub async fn models(&self) -> Result<Vec<ModelEntry>, Error> {
        if self.settings().provider != ProviderKind::OpenAi {
            return Ok(Vec::new());
        }
        let mut req = self.request(self.client.get(self.config.v1_url("models")));
        if let Some(key) = self.config.keys.pick() {
            req = req.bearer_auth(key.value);
        }
        let resp = req.send().await.map_err(|e| send_error(e, &self.config))?;
        if !resp.status().is_success() {
            return Err(error_from_response(resp).await);
        }
        let body = self.read_body(resp).await?;
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
            crate::stream::humantime_short(config.settings.client_timeout)
        )),
        SendRequestError::Connect(ConnectError::Timeout) => Error::UpstreamTimeout(format!(
            "could not connect to {host} within {} (CONNECT_TIMEOUT)",
            crate::stream::humantime_short(config.settings.connect_timeout)
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
            config.settings.max_body_bytes
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
        retryable: matches!(status, 408 | 429 | 500..=599),
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
        UpstreamConfig::new(UpstreamSettings {
            provider: ProviderKind::OpenAi,
            base_url: base.to_owned(),
            api_keys: vec!["k1".into(), "k2".into()],
            client_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_body_bytes: 1024,
            pool: PoolConfig {
                enabled: true,
                max_conns_per_host: 10,
                idle_timeout: Duration::from_secs(90),
                lifetime: Duration::from_secs(300),
            },
            scira: SciraConfig::default(),
        })
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
        assert_eq!(c.keys().pick().unwrap().value, "k1");
        assert_eq!(c.keys().pick().unwrap().value, "k2");
        assert_eq!(c.keys().pick().unwrap().value, "k1");
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
