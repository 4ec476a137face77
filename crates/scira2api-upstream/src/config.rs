//! Upstream settings and the state shared by every worker's client.

use crate::connect::{ConnStats, ProxyConfig};
use crate::keys::KeyRing;
use crate::retry::RetryPolicy;
use crate::scira::SciraConfig;
use rustls::pki_types::CertificateDer;
use scira2api_types::Secrets;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Which protocol the upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Any OpenAI-compatible `/v1/chat/completions` backend.
    OpenAi,
    /// The Scira AI service (`/api/search`).
    Scira,
    /// Anthropic's Messages API (`/v1/messages`, the key as `x-api-key`).
    Anthropic,
    /// Scira's official API (`api.scira.ai`: one JSON answer per request, the key as
    /// `x-api-key`).
    SciraApi,
}

/// Everything that differs between provider kinds is answered here, so that the crates above
/// never match on the kind themselves.
impl ProviderKind {
    /// Every kind, in the order settings list them.
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::OpenAi,
        ProviderKind::Scira,
        ProviderKind::SciraApi,
        ProviderKind::Anthropic,
    ];

    /// The name used in settings and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Scira => "scira",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::SciraApi => "scira-api",
        }
    }

    /// The kind a setting names (`openai`, `scira`).
    pub fn parse(name: &str) -> Option<ProviderKind> {
        ProviderKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// What settings accept, for error messages: "`openai`, `scira` or `anthropic`".
    pub fn accepted() -> String {
        let names: Vec<String> = ProviderKind::ALL
            .iter()
            .map(|k| format!("`{}`", k.as_str()))
            .collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }

    /// The kind for a LiteLLM `litellm_params.model` prefix (`openai/…`, `hosted_vllm/…`).
    pub fn from_litellm_prefix(prefix: &str) -> Option<ProviderKind> {
        match prefix {
            "openai" | "hosted_vllm" | "openai_like" => Some(ProviderKind::OpenAi),
            "scira" => Some(ProviderKind::Scira),
            "anthropic" => Some(ProviderKind::Anthropic),
            _ => None,
        }
    }

    /// The base URL when none is configured.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "https://api.openai.com",
            ProviderKind::Scira => "https://scira.ai",
            ProviderKind::Anthropic => "https://api.anthropic.com",
            ProviderKind::SciraApi => "https://api.scira.ai",
        }
    }

    /// The model table used when `MODEL_MAPPINGS` is unset: none for OpenAI-compatible
    /// backends (ids pass through), familiar names for Scira's ids.
    pub fn default_mappings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ProviderKind::OpenAi | ProviderKind::Anthropic => &[],
            ProviderKind::Scira => crate::scira::SCIRA_DEFAULT_MAPPINGS,
            ProviderKind::SciraApi => crate::scira_api::SCIRA_API_MAPPINGS,
        }
    }

    /// `owned_by` of the models the gateway lists for this kind.
    pub fn owned_by(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "scira2api",
            ProviderKind::Scira => crate::scira::SCIRA_OWNED_BY,
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::SciraApi => crate::scira::SCIRA_OWNED_BY,
        }
    }

    /// Whether the upstream has its own model list (`GET /v1/models`) to merge.
    pub fn has_model_list(self) -> bool {
        matches!(self, ProviderKind::OpenAi | ProviderKind::Anthropic)
    }

    /// Whether the upstream speaks Anthropic's Messages API: a Messages request goes to it as
    /// it is, a chat request is translated onto it.
    pub fn speaks_messages(self) -> bool {
        self == ProviderKind::Anthropic
    }

    /// Whether the upstream serves OpenAI's other endpoints (embeddings, legacy completions,
    /// moderations, images, audio, files, batches): only an OpenAI-compatible one does.
    pub fn serves_openai_endpoints(self) -> bool {
        self == ProviderKind::OpenAi
    }

    /// Whether the upstream may speak OpenAI's Responses API itself (`responses_api: native`).
    pub fn may_speak_responses(self) -> bool {
        self == ProviderKind::OpenAi
    }

    /// Whether every answer of this kind comes from a web search (Scira), so that a client's
    /// request for one is honoured rather than dropped.
    pub fn searches_web(self) -> bool {
        matches!(self, ProviderKind::Scira | ProviderKind::SciraApi)
    }

    /// Whether this kind's credentials are browser cookies (Scira's web endpoint) rather than
    /// API keys.
    pub fn uses_cookies(self) -> bool {
        self == ProviderKind::Scira
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
    /// The provider instance's name (in `x-gateway-provider`, logs and metrics).
    pub name: String,
    /// Extra headers sent with every request to this instance.
    pub headers: Vec<(String, String)>,
    /// Protocol of the upstream.
    pub provider: ProviderKind,
    /// Base URL, e.g. `https://api.openai.com` or `http://h/v1` (a trailing slash is dropped).
    pub base_url: String,
    /// Keys sent as `Authorization: Bearer`, rotated. Empty = none sent. Secret.
    pub api_keys: Vec<String>,
    /// Bound on the wait for the response head, on a whole non-stream answer, and on the
    /// silence between two events of a stream.
    pub client_timeout: Duration,
    /// Bound on opening a connection (TCP, proxy handshake and TLS).
    pub connect_timeout: Duration,
    /// Largest upstream body (non-stream) or line (stream) accepted.
    pub max_body_bytes: usize,
    /// Connection reuse.
    pub pool: PoolConfig,
    /// Retries.
    pub retry: RetryPolicy,
    /// Outbound proxy, if any.
    pub proxy: Option<ProxyConfig>,
    /// Extra trusted CA certificates (`UPSTREAM_CA_FILE`), beside the webpki roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Scira provider settings.
    pub scira: SciraConfig,
    /// Whether the upstream speaks OpenAI's Responses API itself (real OpenAI, Azure): then a
    /// Responses request goes to its `/v1/responses` with only `model` changed, instead of
    /// being translated onto chat completions.
    pub responses_native: bool,
    /// Send to a plain-`http://` upstream reached without a proxy through the gateway's lean
    /// HTTP/1.1 client instead of awc (`LEAN_HTTP1`, on by default): the same requests and
    /// errors for about a quarter of awc's instructions per request. https and proxied
    /// upstreams use awc.
    pub lean_http1: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            enabled: true,
            max_conns_per_host: 1024,
            idle_timeout: Duration::from_secs(90),
            lifetime: Duration::from_secs(300),
        }
    }
}

/// The defaults of every upstream setting (`CLIENT_TIMEOUT` 600 s, `CONNECT_TIMEOUT` 10 s,
/// 16 MiB bodies, keep-alive on, the retry and Scira defaults): one place for them.
impl Default for UpstreamSettings {
    fn default() -> Self {
        let provider = ProviderKind::OpenAi;
        UpstreamSettings {
            name: provider.as_str().to_owned(),
            headers: Vec::new(),
            provider,
            base_url: provider.default_base_url().to_owned(),
            api_keys: Vec::new(),
            client_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            max_body_bytes: 16 * 1024 * 1024,
            pool: PoolConfig::default(),
            retry: RetryPolicy::default(),
            proxy: None,
            extra_roots: Vec::new(),
            scira: SciraConfig::default(),
            responses_native: false,
            lean_http1: true,
        }
    }
}

/// Counters of upstream traffic, shared by every worker (for metrics).
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// Requests sent upstream (every attempt counts).
    pub requests: AtomicU64,
    /// Attempts that were retries.
    pub retries: AtomicU64,
    /// Connection counters.
    pub connections: Arc<ConnStats>,
}

/// Everything an [`crate::Upstream`] needs; built once and shared by all workers (credential
/// rotation state and counters included).
pub struct UpstreamConfig {
    pub(crate) settings: UpstreamSettings,
    pub(crate) base_url: String,
    pub(crate) keys: KeyRing,
    pub(crate) cookies: KeyRing,
    pub(crate) user_ids: KeyRing,
    pub(crate) proxy: Option<Arc<ProxyConfig>>,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) stats: Arc<UpstreamStats>,
    /// Every configured secret, redacted from upstream text before it is passed on or logged.
    pub(crate) secrets: Secrets,
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("UpstreamConfig")
            .field("provider", &s.provider)
            .field("base_url", &self.host())
            .field("api_keys", &self.keys)
            .field("client_timeout", &s.client_timeout)
            .field("connect_timeout", &s.connect_timeout)
            .field("max_body_bytes", &s.max_body_bytes)
            .field("pool", &s.pool)
            .field("retry", &s.retry)
            .field("proxy", &self.proxy)
            .field("extra_roots", &s.extra_roots.len())
            .field("scira", &s.scira)
            .field("responses_native", &s.responses_native)
            .finish()
    }
}

/// A rustls client config trusting the webpki roots plus `extra`.
fn tls_config(extra: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut roots = actix_tls::connect::rustls_0_23::webpki_roots_cert_store();
    for cert in extra {
        if let Err(e) = roots.add(cert.clone()) {
            log::warn!("UPSTREAM_CA_FILE: a certificate was not accepted: {e}");
        }
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Reads the PEM certificates of a CA bundle file.
pub fn load_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

impl UpstreamConfig {
    /// Builds the shared config (credential rings, TLS config, counters) from settings.
    pub fn new(settings: UpstreamSettings) -> Self {
        // awc's rustls needs a process-wide crypto provider; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut secrets: Vec<String> = settings.api_keys.clone();
        secrets.extend(settings.scira.cookies.iter().cloned());
        if let Some((_, password)) = settings.proxy.as_ref().and_then(|p| p.auth.as_ref()) {
            secrets.push(password.clone());
        }
        if let Ok(u) = url::Url::parse(&settings.base_url) {
            if let Some(p) = u.password() {
                secrets.push(p.to_owned());
            }
        }
        UpstreamConfig {
            secrets: Secrets::new(secrets),
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            keys: KeyRing::new(settings.api_keys.clone()),
            cookies: KeyRing::new(settings.scira.cookies.clone()),
            user_ids: KeyRing::new(settings.scira.user_ids.clone()),
            proxy: settings.proxy.clone().map(Arc::new),
            tls: (!settings.extra_roots.is_empty()).then(|| tls_config(&settings.extra_roots)),
            stats: Arc::new(UpstreamStats::default()),
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

    /// Traffic counters.
    pub fn stats(&self) -> &Arc<UpstreamStats> {
        &self.stats
    }

    /// The upstream host (never credentials), for messages.
    pub fn host(&self) -> &str {
        let rest = self.base_url.split("://").nth(1).unwrap_or(&self.base_url);
        let authority = rest.split('/').next().unwrap_or(rest);
        authority.rsplit('@').next().unwrap_or(authority)
    }

    /// `{base}/v1/{path}`, or `{base}/{path}` when the base already ends in `/v1`.
    pub(crate) fn v1_url(&self, path: &str) -> String {
        if self.base_url.ends_with("/v1") {
            format!("{}/{path}", self.base_url)
        } else {
            format!("{}/v1/{path}", self.base_url)
        }
    }

    /// Whether requests to the upstream go through the proxy.
    pub(crate) fn proxied(&self) -> Option<&ProxyConfig> {
        self.proxy.as_deref().filter(|p| {
            let host = self.host();
            let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
            !p.bypass(name.trim_start_matches('[').trim_end_matches(']'))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn cfg(base: &str) -> UpstreamConfig {
        UpstreamConfig::new(UpstreamSettings {
            name: "test".into(),
            headers: Vec::new(),
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
            retry: RetryPolicy::default(),
            proxy: None,
            extra_roots: Vec::new(),
            lean_http1: true,
            scira: SciraConfig::default(),
            responses_native: false,
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
        assert_eq!(cfg("http://user:pw@h:8/x").host(), "h:8");
    }

    #[test]
    fn ca_file_errors_are_clear() {
        let dir = std::env::temp_dir().join(format!("scira2api-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("ca.pem");
        std::fs::write(&f, "not a pem").unwrap();
        assert!(load_ca_file(&f).unwrap_err().contains("no PEM"));
        assert!(
            load_ca_file(&dir.join("missing.pem"))
                .unwrap_err()
                .contains("cannot read")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
