//! Gateway settings: read from the environment and from `.env` (the environment wins), typed and
//! validated once at startup.
//!
//! Every setting is a plain environment variable (see `.env.example`). A bad value is reported as
//! a [`ConfigError`] naming the variable, the value and what is accepted; the server binary turns
//! it into one log line and exit code 2.

use crate::settings::{self, Raw};
use scira2api_models::ModelMap;
use scira2api_upstream::{
    CertificateDer, ProviderKind, ProxyConfig, ProxyKind, RetryPolicy, SciraBody, SciraConfig,
    load_ca_file,
};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

pub use crate::settings::ConfigError;

/// Whether the response cache is shared by all clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// One cache for everyone: identical requests from different keys share answers.
    Shared,
    /// Answers are kept per API key (clients never see each other's answers).
    PerKey,
}

/// What a rate-limit bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitScope {
    /// One bucket for all traffic.
    Global,
    /// One per API key (per client IP when auth is off).
    Key,
    /// One per client IP address.
    Ip,
}

/// Every gateway setting, validated.
#[derive(Clone)]
pub struct Config {
    /// Listen address.
    pub host: String,
    /// Listen port (0 = any free port).
    pub port: u16,
    /// actix worker threads (each with its own upstream connection pool).
    pub workers: usize,
    /// Client API keys; empty = no auth. Secret.
    pub api_keys: Vec<String>,
    /// Paths reachable without a key (exact, or a prefix for an entry ending in `/*`); `None`:
    /// the HTTP layer's route table decides (`/health`, `/v1/models`, `/v1/models/*`).
    pub public_paths: Option<Vec<String>>,
    /// Allowed CORS origins; `*` = any.
    pub cors_origins: Vec<String>,
    /// Upstream protocol.
    pub provider: ProviderKind,
    /// Upstream base URL (no trailing slash).
    pub base_url: String,
    /// Keys sent upstream as `Authorization: Bearer`. Secret.
    pub upstream_api_keys: Vec<String>,
    /// Response-head / non-stream / stream-idle timeout.
    pub client_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Attempts in all (1 = no retry), backoff base and cap.
    pub retry: RetryPolicy,
    /// HTTP CONNECT proxy URL. May hold a password: secret.
    pub http_proxy: Option<url::Url>,
    /// SOCKS5 proxy URL. May hold a password: secret.
    pub socks5_proxy: Option<url::Url>,
    /// Hosts reached without the proxy.
    pub no_proxy: Vec<String>,
    /// Extra CA certificates trusted for the upstream (`UPSTREAM_CA_FILE`).
    pub upstream_ca_file: Option<std::path::PathBuf>,
    /// The certificates read from `upstream_ca_file`.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Response and model-list caching.
    pub cache_enabled: bool,
    /// Model list cache lifetime.
    pub model_cache_ttl: Duration,
    /// Chat response cache lifetime.
    pub resp_cache_ttl: Duration,
    /// Upstream keep-alive.
    pub conn_pool_enabled: bool,
    /// Most upstream connections per worker and host. A stream holds its connection for the
    /// whole answer, and requests above the limit wait for one to free up, so the default is
    /// generous: 1,024 (the OpenAI Python SDK's own pool allows 1,000).
    pub max_conns_per_host: usize,
    /// Idle upstream connection lifetime.
    pub idle_conn_timeout: Duration,
    /// Longest reuse of one upstream connection.
    pub conn_lifetime: Duration,
    /// Most answers the response cache keeps.
    pub cache_max_entries: u64,
    /// About how many bytes the response cache may hold.
    pub cache_max_bytes: u64,
    /// Whether cached answers are shared by all clients or kept per API key.
    pub cache_scope: CacheScope,
    /// Rate limiting on/off.
    pub rate_limit_enabled: bool,
    /// What a rate-limit bucket belongs to.
    pub rate_limit_scope: RateLimitScope,
    /// An extra bucket for all traffic together: (refill per second, capacity).
    pub global_rate_limit: Option<(f64, u64)>,
    /// Most client keys with a bucket at once.
    pub rate_limit_max_keys: usize,
    /// Token refill per second.
    pub requests_per_second: f64,
    /// Bucket capacity.
    pub burst: u64,
    /// The model mapping table in force.
    pub model_map: ModelMap,
    /// Pairs from `MODEL_MAPPINGS` that could not be read (the default table is used then).
    pub bad_mapping_pairs: Vec<String>,
    /// Largest request body, and largest upstream body or stream line.
    pub max_body_bytes: usize,
    /// Log filter (`RUST_LOG` overrides it).
    pub log_level: String,
    /// Log request bodies (prompts) at debug level.
    pub log_bodies: bool,
    /// Grace period for in-flight requests on shutdown.
    pub shutdown_timeout: Duration,
    /// Longest time a client may take to send a request body once its headers are in (408).
    pub body_read_timeout: Duration,
    /// Most client connections open at once, for the whole server (split across workers);
    /// above it new connections wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Keep-alive comment interval on silent streams.
    pub heartbeat_interval: Duration,
    /// Scira provider settings.
    pub scira: SciraConfig,
    /// `CONFIG_FILE`: its path, when set.
    pub config_file: Option<std::path::PathBuf>,
    /// What the config file says (provider instances, model groups, router), when there is one.
    pub file: Option<crate::config_file::FileConfig>,
}

impl Config {
    /// Reads the process environment plus `.env` in the working directory (when present; the
    /// environment wins over it).
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_env_and_file(Path::new(".env"))
    }

    /// Like [`Config::from_env`] with an explicit dotenv file.
    pub fn from_env_and_file(dotenv: &Path) -> Result<Config, ConfigError> {
        Config::from_vars(settings::merge(read_dotenv(dotenv)?, std::env::vars()))
    }

    /// Like [`Config::from_env`], with `defaults` under and `overrides` over what the environment
    /// and `.env` say (used by the server's demo mode).
    pub fn from_env_layered(
        defaults: &[(&str, &str)],
        overrides: &[(&str, &str)],
    ) -> Result<Config, ConfigError> {
        let mut file_vars: Vec<(String, String)> = defaults
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        file_vars.extend(read_dotenv(Path::new(".env"))?);
        let mut vars = settings::merge(file_vars, std::env::vars());
        vars.extend(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        Config::from_vars(vars)
    }

    /// Builds the config from a set of variables (what the environment would hold).
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Config, ConfigError> {
        let raw = Raw::new(vars)?;
        let name = raw.str("PROVIDER").unwrap_or_else(|| "openai".to_owned());
        let provider = ProviderKind::parse(&name)
            .ok_or_else(|| ConfigError::new("PROVIDER", &name, &ProviderKind::accepted()))?;
        let base_url = raw.http_url("BASE_URL", provider.default_base_url())?;
        let mapping = ModelMap::parse(
            raw.str("MODEL_MAPPINGS").as_deref(),
            provider.default_mappings(),
        );
        let requests_per_second = raw.positive_f64("REQUESTS_PER_SECOND", 1.0)?;
        let burst = raw.u64_min("BURST", 10, 1)?;
        let retry_default = RetryPolicy::default();
        let scira_default = SciraConfig::default();
        let scira_body = match raw.str("SCIRA_BODY").as_deref().unwrap_or("v5") {
            "v5" | "v6" => SciraBody::V5,
            "v4" => SciraBody::V4,
            other => {
                return Err(ConfigError::new(
                    "SCIRA_BODY",
                    other,
                    "`v5` (current, also `v6`) or `v4`",
                ));
            }
        };
        let scira_path = raw
            .str("SCIRA_PATH")
            .unwrap_or_else(|| scira_default.path.clone());
        if !scira_path.starts_with('/') {
            return Err(ConfigError::new(
                "SCIRA_PATH",
                &scira_path,
                "a path starting with `/`",
            ));
        }
        let config = Config {
            host: raw.str("HOST").unwrap_or_else(|| "0.0.0.0".to_owned()),
            port: raw.port("PORT", 8080)?,
            workers: raw.u64_min(
                "WORKERS",
                std::thread::available_parallelism()
                    .map(|n| n.get() as u64)
                    .unwrap_or(1),
                1,
            )? as usize,
            api_keys: raw.list("APIKEY"),
            public_paths: raw.str_list("PUBLIC_PATHS"),
            cors_origins: raw
                .str_list("CORS_ORIGINS")
                .unwrap_or_else(|| vec!["*".to_owned()]),
            provider,
            base_url,
            upstream_api_keys: raw.list("UPSTREAM_API_KEY"),
            client_timeout: raw.duration("CLIENT_TIMEOUT", Duration::from_secs(600))?,
            connect_timeout: raw.duration("CONNECT_TIMEOUT", Duration::from_secs(10))?,
            // Defaults are the owners' (`RetryPolicy::default()`, `SciraConfig::default()`): one
            // place for each.
            retry: RetryPolicy {
                attempts: raw
                    .u64_min("RETRY", u64::from(retry_default.attempts), 1)?
                    .min(100) as u32,
                base_delay: raw.duration("RETRY_BASE_DELAY", retry_default.base_delay)?,
                max_delay: raw.duration("RETRY_MAX_DELAY", retry_default.max_delay)?,
            },
            http_proxy: raw.proxy_url("HTTP_PROXY", &["http"])?,
            socks5_proxy: raw.proxy_url("SOCKS5_PROXY", &["socks5", "socks5h"])?,
            no_proxy: raw.list("NO_PROXY"),
            upstream_ca_file: raw.str("UPSTREAM_CA_FILE").map(std::path::PathBuf::from),
            extra_roots: Vec::new(),
            cache_enabled: raw.bool("CACHE_ENABLED", true)?,
            model_cache_ttl: raw.duration("MODEL_CACHE_TTL", Duration::from_secs(3600))?,
            resp_cache_ttl: raw.duration("RESP_CACHE_TTL", Duration::from_secs(300))?,
            conn_pool_enabled: raw.bool("CONN_POOL_ENABLED", true)?,
            max_conns_per_host: raw.u64_min("MAX_CONNS_PER_HOST", 1024, 1)? as usize,
            idle_conn_timeout: raw.duration("IDLE_CONN_TIMEOUT", Duration::from_secs(90))?,
            conn_lifetime: raw.duration("CONN_LIFETIME", Duration::from_secs(300))?,
            cache_max_entries: raw.u64_min("CACHE_MAX_ENTRIES", 10_000, 1)?,
            cache_max_bytes: raw.u64_min("CACHE_MAX_BYTES", 64 * 1024 * 1024, 1024)?,
            cache_scope: match raw.str("CACHE_SCOPE").as_deref().unwrap_or("shared") {
                "shared" => CacheScope::Shared,
                "per_key" => CacheScope::PerKey,
                other => {
                    return Err(ConfigError::new(
                        "CACHE_SCOPE",
                        other,
                        "`shared` or `per_key`",
                    ));
                }
            },
            rate_limit_enabled: raw.bool("RATE_LIMIT_ENABLED", true)?,
            rate_limit_scope: match raw.str("RATE_LIMIT_SCOPE").as_deref().unwrap_or("key") {
                "key" => RateLimitScope::Key,
                "ip" => RateLimitScope::Ip,
                "global" => RateLimitScope::Global,
                other => {
                    return Err(ConfigError::new(
                        "RATE_LIMIT_SCOPE",
                        other,
                        "`key`, `ip` or `global`",
                    ));
                }
            },
            global_rate_limit: match raw.str("GLOBAL_REQUESTS_PER_SECOND") {
                None => None,
                Some(_) => {
                    let rps = raw.positive_f64("GLOBAL_REQUESTS_PER_SECOND", 1.0)?;
                    let default_burst = rps.ceil().max(1.0) as u64;
                    Some((rps, raw.u64_min("GLOBAL_BURST", default_burst, 1)?))
                }
            },
            rate_limit_max_keys: raw.u64_min("RATE_LIMIT_MAX_KEYS", 100_000, 1)? as usize,
            requests_per_second,
            burst,
            model_map: mapping.map,
            bad_mapping_pairs: mapping.bad_pairs,
            max_body_bytes: raw.u64_min("MAX_BODY_BYTES", 16 * 1024 * 1024, 1024)? as usize,
            log_level: raw.str("LOG_LEVEL").unwrap_or_else(|| "info".to_owned()),
            log_bodies: raw.bool("LOG_BODIES", false)?,
            shutdown_timeout: raw.duration("SHUTDOWN_TIMEOUT", Duration::from_secs(30))?,
            body_read_timeout: raw.duration("BODY_READ_TIMEOUT", Duration::from_secs(30))?,
            max_connections: raw.u64_min("MAX_CONNECTIONS", 10_000, 1)? as usize,
            heartbeat_interval: raw.duration("HEARTBEAT_INTERVAL", Duration::from_secs(15))?,
            scira: SciraConfig {
                path: scira_path,
                group: raw.str("SCIRA_GROUP").unwrap_or(scira_default.group),
                timezone: raw.str("SCIRA_TIMEZONE").unwrap_or(scira_default.timezone),
                body: scira_body,
                user_agent: raw
                    .str("SCIRA_USER_AGENT")
                    .unwrap_or(scira_default.user_agent),
                cookies: raw.list_sep("SCIRA_COOKIE", '|'),
                user_ids: raw.list("SCIRA_USER_IDS"),
                extra_models: raw.list("SCIRA_MODELS"),
            },
            config_file: raw.str("CONFIG_FILE").map(std::path::PathBuf::from),
            file: None,
        };
        let mut config = config;
        if let Some(path) = &config.upstream_ca_file {
            config.extra_roots = load_ca_file(path).map_err(|e| {
                ConfigError::new(
                    "UPSTREAM_CA_FILE",
                    &path.display().to_string(),
                    &format!("a readable PEM CA bundle ({e})"),
                )
            })?;
        }
        if let Some(path) = config.config_file.clone() {
            let env = |name: &str| raw.str(name);
            let file = crate::config_file::load(&path, &env)?;
            config.api_keys.extend(file.client_keys.iter().cloned());
            config.file = Some(file);
        }
        if !matches!(
            config.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace" | "off"
        ) {
            return Err(ConfigError::new(
                "LOG_LEVEL",
                &config.log_level,
                "one of error, warn, info, debug, trace, off",
            ));
        }
        Ok(config)
    }

    /// The outbound proxy in force: `SOCKS5_PROXY` when set, else `HTTP_PROXY`.
    pub fn proxy(&self) -> Option<ProxyConfig> {
        let (url, kind) = match (&self.socks5_proxy, &self.http_proxy) {
            (Some(u), _) => (
                u,
                ProxyKind::Socks5 {
                    remote_dns: u.scheme() == "socks5h",
                },
            ),
            (None, Some(u)) => (u, ProxyKind::Http),
            (None, None) => return None,
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let auth = (!url.username().is_empty())
            .then(|| (decode(url.username()), decode(url.password().unwrap_or(""))));
        Some(ProxyConfig {
            kind,
            host: url
                .host_str()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: url.port_or_known_default().unwrap_or(1080),
            auth,
            no_proxy: self.no_proxy.clone(),
        })
    }

    /// The gateway's own `owned_by` for models it lists.
    pub fn owned_by(&self) -> &'static str {
        self.provider.owned_by()
    }
}

/// The variables of a dotenv file; none when the file does not exist.
fn read_dotenv(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let iter = dotenvy::from_path_iter(path).map_err(|e| ConfigError::file(path, e))?;
    iter.map(|item| item.map_err(|e| ConfigError::file(path, e)))
        .collect()
}

fn count(n: usize, what: &str) -> String {
    match n {
        0 => "none".to_owned(),
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// One line with the effective settings; secrets are shown only as counts or masked.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        write!(
            f,
            "listen={}:{} workers={} provider={} base_url={} apikey={} upstream_api_key={} client_timeout={} \
             connect_timeout={} retry={} http_proxy={} socks5_proxy={} cache={} model_cache_ttl={} \
             resp_cache_ttl={} conn_pool={} max_conns_per_host={} rate_limit={} requests_per_second={} \
             burst={} model_mappings={} max_body_bytes={} body_read_timeout={} max_connections={} shutdown_timeout={} heartbeat={} log_level={}",
            self.host,
            self.port,
            self.workers,
            self.provider.as_str(),
            settings::mask_str(&self.base_url),
            count(self.api_keys.len(), "key"),
            count(self.upstream_api_keys.len(), "key"),
            d(self.client_timeout),
            d(self.connect_timeout),
            self.retry.attempts,
            self.http_proxy
                .as_ref()
                .map(settings::mask_url)
                .unwrap_or_else(|| "none".into()),
            self.socks5_proxy
                .as_ref()
                .map(settings::mask_url)
                .unwrap_or_else(|| "none".into()),
            self.cache_enabled,
            d(self.model_cache_ttl),
            d(self.resp_cache_ttl),
            self.conn_pool_enabled,
            self.max_conns_per_host,
            self.rate_limit_enabled,
            self.requests_per_second,
            self.burst,
            count(self.model_map.len(), "pair"),
            self.max_body_bytes,
            d(self.body_read_timeout),
            self.max_connections,
            d(self.shutdown_timeout),
            d(self.heartbeat_interval),
            self.log_level,
        )?;
        if let (Some(path), Some(file)) = (&self.config_file, &self.file) {
            write!(
                f,
                " config_file={} ({}: {} and {})",
                path.display(),
                if file.litellm {
                    "LiteLLM format"
                } else {
                    "native format"
                },
                count(file.providers.len(), "provider"),
                count(file.groups.len(), "model group"),
            )?;
        }
        if self.provider.uses_cookies() {
            write!(
                f,
                " scira_path={} scira_group={} scira_timezone={} scira_body={:?} scira_cookie={} scira_user_ids={}",
                self.scira.path,
                self.scira.group,
                self.scira.timezone,
                self.scira.body,
                count(self.scira.cookies.len(), "cookie"),
                count(self.scira.user_ids.len(), "id"),
            )?;
        }
        Ok(())
    }
}

/// Same as `Display`: secrets stay masked in debug output too.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Config({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// `.env.example` documents every setting with its default: loading it must change nothing.
    #[test]
    fn env_example_lists_the_defaults() {
        let text = include_str!("../../../.env.example");
        let pairs: Vec<(&str, &str)> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        assert!(pairs.len() > 30, "read {} settings", pairs.len());
        let example = cfg(&pairs).unwrap();
        assert_eq!(example.to_string(), cfg(&[]).unwrap().to_string());
        // The Scira settings are only shown for that provider (whose BASE_URL default differs,
        // as the file says).
        let scira = |extra: &[(&str, &str)]| {
            let mut all: Vec<_> = extra
                .iter()
                .filter(|(k, _)| *k != "BASE_URL")
                .copied()
                .collect();
            all.push(("PROVIDER", "scira"));
            cfg(&all).unwrap().to_string()
        };
        assert_eq!(scira(&pairs), scira(&[]));
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.provider, ProviderKind::OpenAi);
        assert_eq!(c.base_url, "https://api.openai.com");
        assert_eq!(c.client_timeout, Duration::from_secs(600));
        assert_eq!(c.retry.attempts, 3);
        assert_eq!(c.retry.base_delay, Duration::from_millis(200));
        assert_eq!(c.retry.max_delay, Duration::from_secs(8));
        assert!(c.proxy().is_none());
        assert!(c.cache_enabled && c.conn_pool_enabled && c.rate_limit_enabled);
        assert_eq!(c.model_cache_ttl, Duration::from_secs(3600));
        assert_eq!(c.resp_cache_ttl, Duration::from_secs(300));
        assert_eq!((c.requests_per_second, c.burst), (1.0, 10));
        assert_eq!(c.max_body_bytes, 16 * 1024 * 1024);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert!(c.api_keys.is_empty());
        let s = cfg(&[("PROVIDER", "scira")]).unwrap();
        assert_eq!(s.base_url, "https://scira.ai");
        assert_eq!(s.model_map.to_internal("gpt-4o"), "scira-default");
    }

    #[test]
    fn durations_and_lists() {
        let c = cfg(&[
            ("CLIENT_TIMEOUT", "250ms"),
            ("CONNECT_TIMEOUT", "7"),
            ("MODEL_CACHE_TTL", "5m"),
            ("RESP_CACHE_TTL", "1h"),
            ("APIKEY", " a , b ,"),
            ("BASE_URL", "http://127.0.0.1:9/v1/"),
        ])
        .unwrap();
        assert_eq!(c.client_timeout, Duration::from_millis(250));
        assert_eq!(c.connect_timeout, Duration::from_secs(7));
        assert_eq!(c.model_cache_ttl, Duration::from_secs(300));
        assert_eq!(c.resp_cache_ttl, Duration::from_secs(3600));
        assert_eq!(c.api_keys, ["a", "b"]);
        assert_eq!(c.base_url, "http://127.0.0.1:9/v1");
    }

    #[test]
    fn bad_values_name_variable_value_and_accepted() {
        for (k, v, want) in [
            ("PORT", "abc", "PORT"),
            ("RETRY", "-1", "RETRY"),
            ("CLIENT_TIMEOUT", "soon", "CLIENT_TIMEOUT"),
            ("PROVIDER", "foo", "PROVIDER"),
            ("BASE_URL", "not a url", "BASE_URL"),
            ("BURST", "0", "BURST"),
            ("REQUESTS_PER_SECOND", "0", "REQUESTS_PER_SECOND"),
            ("CACHE_ENABLED", "maybe", "CACHE_ENABLED"),
            ("HTTP_PROXY", "ftp://x", "HTTP_PROXY"),
            ("LOG_LEVEL", "loud", "LOG_LEVEL"),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(v), "{e}");
            assert!(e.contains("expected"), "{e}");
        }
    }

    #[test]
    fn display_masks_secrets() {
        let c = cfg(&[
            ("APIKEY", "sekret1"),
            ("UPSTREAM_API_KEY", "sk-upstream"),
            ("SOCKS5_PROXY", "socks5://u:pw@h:1080"),
        ])
        .unwrap();
        let s = c.to_string();
        assert!(
            !s.contains("sekret1") && !s.contains("sk-upstream") && !s.contains("pw@"),
            "{s}"
        );
        assert!(s.contains("apikey=1 key"), "{s}");
        let c = cfg(&[("BASE_URL", "https://user:hunter2@up.example/v1")]).unwrap();
        assert!(!c.to_string().contains("hunter2"), "{c}");
        let e = cfg(&[("BASE_URL", "ftp://user:hunter2@up.example")]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn proxies() {
        let c = cfg(&[
            ("HTTP_PROXY", "http://us%40r:p%3Ass@127.0.0.1:3128"),
            ("NO_PROXY", "localhost,.internal"),
        ])
        .unwrap();
        let p = c.proxy().unwrap();
        assert_eq!(p.kind, ProxyKind::Http);
        assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 3128));
        assert_eq!(p.auth, Some(("us@r".to_owned(), "p:ss".to_owned())));
        assert!(p.bypass("a.internal"));
        let c = cfg(&[
            ("HTTP_PROXY", "http://h:1"),
            ("SOCKS5_PROXY", "socks5h://s:1080"),
        ])
        .unwrap();
        assert_eq!(
            c.proxy().unwrap().kind,
            ProxyKind::Socks5 { remote_dns: true }
        );
        assert!(!c.to_string().contains("p%3Ass"));
        let e = cfg(&[("UPSTREAM_CA_FILE", "/nonexistent/ca.pem")]).unwrap_err();
        assert_eq!(e.var, "UPSTREAM_CA_FILE");
    }

    #[test]
    fn malformed_mapping_falls_back_with_bad_pairs() {
        let c = cfg(&[("MODEL_MAPPINGS", "a:b,oops")]).unwrap();
        assert_eq!(c.bad_mapping_pairs, ["oops"]);
        assert_eq!(c.model_map.to_internal("a"), "a");
    }

    #[test]
    fn dotenv_file_is_read() {
        let dir = std::env::temp_dir().join(format!("scira2api-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(".env");
        std::fs::write(
            &file,
            "# comment\nSCIRA2API_TEST_BAD_ONLY_IN_FILE=1\nPORT=not-a-port\n",
        )
        .unwrap();
        // PORT from the file is read (and rejected) unless the environment sets PORT.
        let r = Config::from_env_and_file(&file);
        if std::env::var("PORT").is_err() {
            assert_eq!(r.unwrap_err().var, "PORT");
        }
        std::fs::write(&file, "not a dotenv line\n").unwrap();
        assert!(Config::from_env_and_file(&file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
