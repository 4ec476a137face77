//! Gateway settings: read from the environment and from `.env` (the environment wins), typed and
//! validated once at startup.
//!
//! Every setting is a plain environment variable (see `.env.example`). A bad value is reported as
//! a [`ConfigError`] naming the variable, the value and what is accepted; the server binary turns
//! it into one log line and exit code 2.

use crate::sections::{AuthSettings, ServerSettings};
use crate::settings::{self, Raw};
use scira2api_cache::{CacheScope, CacheSettings};
use scira2api_limiter::{BucketConfig, LimiterSettings, RateLimitScope};
use scira2api_models::ModelMap;
use scira2api_upstream::{
    PoolConfig, ProviderKind, ProxyConfig, RetryPolicy, SciraBody, SciraConfig, UpstreamSettings,
    load_ca_file,
};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

pub use crate::settings::ConfigError;

/// Every gateway setting, validated, in one section per owner. Each section's defaults are its
/// own `Default` (one place for each); the environment only overrides them.
#[derive(Clone)]
pub struct Config {
    /// Listening and client bounds (HTTP surface, server binary).
    pub server: ServerSettings,
    /// Client keys and public paths (HTTP surface).
    pub auth: AuthSettings,
    /// The environment's provider instance (`PROVIDER`, `BASE_URL`, timeouts, retries, proxy,
    /// CA file, Scira settings); a config file's instances start from it.
    pub upstream: UpstreamSettings,
    /// Response and model-list caching.
    pub cache: CacheSettings,
    /// Rate limiting.
    pub limiter: LimiterSettings,
    /// The shared store for several replicas (`REDIS_URL`, …).
    pub redis: scira2api_redis::RedisSettings,
    /// The model mapping table in force.
    pub model_map: ModelMap,
    /// Pairs from `MODEL_MAPPINGS` that could not be read (the default table is used then).
    pub bad_mapping_pairs: Vec<String>,
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
        let mapping = ModelMap::parse(
            raw.str("MODEL_MAPPINGS").as_deref(),
            provider.default_mappings(),
        );
        let server = read_server(&raw)?;
        let mut config = Config {
            upstream: read_upstream(&raw, provider, server.max_body_bytes)?,
            auth: AuthSettings {
                api_keys: raw.list("APIKEY"),
                public_paths: raw.str_list("PUBLIC_PATHS"),
                admin_key: raw.str("ADMIN_KEY"),
            },
            server,
            cache: read_cache(&raw)?,
            limiter: read_limiter(&raw)?,
            redis: read_redis(&raw)?,
            model_map: mapping.map,
            bad_mapping_pairs: mapping.bad_pairs,
            config_file: raw.str("CONFIG_FILE").map(std::path::PathBuf::from),
            file: None,
        };
        if let Some(path) = config.config_file.clone() {
            let env = |name: &str| raw.str(name);
            let file = crate::config_file::load(&path, &env)?;
            config
                .auth
                .api_keys
                .extend(file.client_keys.iter().cloned());
            config.file = Some(file);
        }
        Ok(config)
    }

    /// The outbound proxy of the environment's instance: `SOCKS5_PROXY` when set, else
    /// `HTTP_PROXY`.
    pub fn proxy(&self) -> Option<ProxyConfig> {
        self.upstream.proxy.clone()
    }

    /// The environment's provider kind (`PROVIDER`).
    pub fn provider(&self) -> ProviderKind {
        self.upstream.provider
    }

    /// The gateway's own `owned_by` for models it lists.
    pub fn owned_by(&self) -> &'static str {
        self.upstream.provider.owned_by()
    }
}

fn read_server(raw: &Raw) -> Result<ServerSettings, ConfigError> {
    let d = ServerSettings::default();
    let log_level = raw.str("LOG_LEVEL").unwrap_or(d.log_level);
    if !matches!(
        log_level.as_str(),
        "error" | "warn" | "info" | "debug" | "trace" | "off"
    ) {
        return Err(ConfigError::new(
            "LOG_LEVEL",
            &log_level,
            "one of error, warn, info, debug, trace, off",
        ));
    }
    Ok(ServerSettings {
        host: raw.str("HOST").unwrap_or(d.host),
        port: raw.port("PORT", d.port)?,
        workers: raw.u64_min("WORKERS", d.workers as u64, 1)? as usize,
        cors_origins: raw.str_list("CORS_ORIGINS").unwrap_or(d.cors_origins),
        max_body_bytes: raw.u64_min("MAX_BODY_BYTES", d.max_body_bytes as u64, 1024)? as usize,
        max_upload_bytes: raw.u64_min("MAX_UPLOAD_BYTES", d.max_upload_bytes as u64, 1024)?
            as usize,
        body_read_timeout: raw.duration("BODY_READ_TIMEOUT", d.body_read_timeout)?,
        max_connections: raw.u64_min("MAX_CONNECTIONS", d.max_connections as u64, 1)? as usize,
        shutdown_timeout: raw.duration("SHUTDOWN_TIMEOUT", d.shutdown_timeout)?,
        heartbeat_interval: raw.duration("HEARTBEAT_INTERVAL", d.heartbeat_interval)?,
        log_level,
        log_bodies: raw.bool("LOG_BODIES", d.log_bodies)?,
        status_interval: raw.duration("STATUS_SAMPLE_INTERVAL", d.status_interval)?,
        status_history: raw.duration("STATUS_HISTORY", d.status_history)?,
    })
}

fn read_upstream(
    raw: &Raw,
    provider: ProviderKind,
    max_body_bytes: usize,
) -> Result<UpstreamSettings, ConfigError> {
    let d = UpstreamSettings::default();
    let pool = PoolConfig::default();
    let retry = RetryPolicy::default();
    let extra_roots = match raw.str("UPSTREAM_CA_FILE") {
        None => Vec::new(),
        Some(path) => load_ca_file(Path::new(&path)).map_err(|e| {
            ConfigError::new(
                "UPSTREAM_CA_FILE",
                &path,
                &format!("a readable PEM CA bundle ({e})"),
            )
        })?,
    };
    let responses_native = match raw.str("UPSTREAM_RESPONSES_API").as_deref() {
        None | Some("translate") => d.responses_native,
        Some("native") if !provider.may_speak_responses() => {
            return Err(ConfigError::new(
                "UPSTREAM_RESPONSES_API",
                "native",
                &format!(
                    "`translate` for PROVIDER={} (it does not speak the Responses API)",
                    provider.as_str()
                ),
            ));
        }
        Some("native") => true,
        Some(other) => {
            return Err(ConfigError::new(
                "UPSTREAM_RESPONSES_API",
                other,
                "`translate` (onto chat completions, the default) or `native` (the upstream speaks the Responses API)",
            ));
        }
    };
    let http = raw.proxy_url("HTTP_PROXY", &["http"])?;
    let socks5 = raw.proxy_url("SOCKS5_PROXY", &["socks5", "socks5h"])?;
    Ok(UpstreamSettings {
        name: provider.as_str().to_owned(),
        headers: d.headers,
        provider,
        base_url: raw.http_url("BASE_URL", provider.default_base_url())?,
        api_keys: raw.list("UPSTREAM_API_KEY"),
        client_timeout: raw.duration("CLIENT_TIMEOUT", d.client_timeout)?,
        connect_timeout: raw.duration("CONNECT_TIMEOUT", d.connect_timeout)?,
        max_body_bytes,
        pool: PoolConfig {
            enabled: raw.bool("CONN_POOL_ENABLED", pool.enabled)?,
            max_conns_per_host: raw.u64_min(
                "MAX_CONNS_PER_HOST",
                pool.max_conns_per_host as u64,
                1,
            )? as usize,
            idle_timeout: raw.duration("IDLE_CONN_TIMEOUT", pool.idle_timeout)?,
            lifetime: raw.duration("CONN_LIFETIME", pool.lifetime)?,
        },
        retry: RetryPolicy {
            attempts: raw.u64_min("RETRY", u64::from(retry.attempts), 1)?.min(100) as u32,
            base_delay: raw.duration("RETRY_BASE_DELAY", retry.base_delay)?,
            max_delay: raw.duration("RETRY_MAX_DELAY", retry.max_delay)?,
        },
        proxy: socks5
            .or(http)
            .and_then(|u| ProxyConfig::from_url(&u, raw.list("NO_PROXY"))),
        extra_roots,
        scira: read_scira(raw)?,
        responses_native,
        lean_http1: raw.bool("LEAN_HTTP1", d.lean_http1)?,
    })
}

fn read_scira(raw: &Raw) -> Result<SciraConfig, ConfigError> {
    let d = SciraConfig::default();
    let body = match raw.str("SCIRA_BODY").as_deref().unwrap_or("v5") {
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
    let path = raw.str("SCIRA_PATH").unwrap_or(d.path);
    if !path.starts_with('/') {
        return Err(ConfigError::new(
            "SCIRA_PATH",
            &path,
            "a path starting with `/`",
        ));
    }
    let group = raw.str("SCIRA_GROUP").unwrap_or(d.group);
    if !scira2api_upstream::SCIRA_GROUPS.contains(&group.as_str()) {
        return Err(ConfigError::new(
            "SCIRA_GROUP",
            &group,
            &format!(
                "one of Scira's groups: {}",
                scira2api_upstream::SCIRA_GROUPS.join(", ")
            ),
        ));
    }
    Ok(SciraConfig {
        path,
        group,
        timezone: raw.str("SCIRA_TIMEZONE").unwrap_or(d.timezone),
        body,
        user_agent: raw.str("SCIRA_USER_AGENT").unwrap_or(d.user_agent),
        cookies: raw.list_sep("SCIRA_COOKIE", '|'),
        user_ids: raw.list("SCIRA_USER_IDS"),
        extra_models: raw.list("SCIRA_MODELS"),
        citations: raw.bool("SCIRA_CITATIONS", d.citations)?,
    })
}

fn read_cache(raw: &Raw) -> Result<CacheSettings, ConfigError> {
    let d = CacheSettings::default();
    Ok(CacheSettings {
        enabled: raw.bool("CACHE_ENABLED", d.enabled)?,
        model_ttl: raw.duration("MODEL_CACHE_TTL", d.model_ttl)?,
        answer_ttl: raw.duration("RESP_CACHE_TTL", d.answer_ttl)?,
        max_entries: raw.u64_min("CACHE_MAX_ENTRIES", d.max_entries, 1)?,
        max_bytes: raw.u64_min("CACHE_MAX_BYTES", d.max_bytes, 1024)?,
        responses_ttl: raw.duration("RESPONSES_STORE_TTL", d.responses_ttl)?,
        responses_max_entries: raw.u64_min(
            "RESPONSES_STORE_MAX_ENTRIES",
            d.responses_max_entries,
            1,
        )?,
        responses_max_bytes: raw.u64_min(
            "RESPONSES_STORE_MAX_BYTES",
            d.responses_max_bytes,
            1024,
        )?,
        front_entries: raw.u64_min("CACHE_FRONT_ENTRIES", d.front_entries, 0)?,
        scope: match raw.str("CACHE_SCOPE").as_deref() {
            None => d.scope,
            Some("shared") => CacheScope::Shared,
            Some("per_key") => CacheScope::PerKey,
            Some(other) => {
                return Err(ConfigError::new(
                    "CACHE_SCOPE",
                    other,
                    "`shared` or `per_key`",
                ));
            }
        },
    })
}

fn read_limiter(raw: &Raw) -> Result<LimiterSettings, ConfigError> {
    let d = LimiterSettings::default();
    let global = match raw.str("GLOBAL_REQUESTS_PER_SECOND") {
        None => None,
        Some(_) => {
            let per_second = raw.positive_f64("GLOBAL_REQUESTS_PER_SECOND", 1.0)?;
            let default_burst = per_second.ceil().max(1.0) as u64;
            Some(BucketConfig {
                per_second,
                burst: raw.u64_min("GLOBAL_BURST", default_burst, 1)?,
            })
        }
    };
    Ok(LimiterSettings {
        enabled: raw.bool("RATE_LIMIT_ENABLED", d.enabled)?,
        scope: match raw.str("RATE_LIMIT_SCOPE").as_deref() {
            None => d.scope,
            Some("key") => RateLimitScope::Key,
            Some("ip") => RateLimitScope::Ip,
            Some("global") => RateLimitScope::Global,
            Some(other) => {
                return Err(ConfigError::new(
                    "RATE_LIMIT_SCOPE",
                    other,
                    "`key`, `ip` or `global`",
                ));
            }
        },
        bucket: BucketConfig {
            per_second: raw.positive_f64("REQUESTS_PER_SECOND", d.bucket.per_second)?,
            burst: raw.u64_min("BURST", d.bucket.burst, 1)?,
        },
        global,
        max_keys: raw.u64_min("RATE_LIMIT_MAX_KEYS", d.max_keys as u64, 1)? as usize,
        tpm_default_max_tokens: raw.u64_min(
            "TPM_DEFAULT_MAX_TOKENS",
            d.tpm_default_max_tokens,
            1,
        )?,
    })
}

fn read_redis(raw: &Raw) -> Result<scira2api_redis::RedisSettings, ConfigError> {
    use scira2api_redis::FailMode;
    let d = scira2api_redis::RedisSettings::default();
    let url = raw.str("REDIS_URL").filter(|u| !u.trim().is_empty());
    if let Some(u) = &url {
        if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
            return Err(ConfigError::new(
                "REDIS_URL",
                &scira2api_redis::masked(u),
                "a redis:// or rediss:// URL",
            ));
        }
    }
    let fail_mode = match raw.str("RATE_LIMIT_FAIL_MODE") {
        None => d.fail_mode,
        Some(m) => FailMode::parse(&m).ok_or_else(|| {
            ConfigError::new("RATE_LIMIT_FAIL_MODE", &m, "`open`, `closed` or `local`")
        })?,
    };
    Ok(scira2api_redis::RedisSettings {
        url,
        timeout: raw.duration("REDIS_TIMEOUT", d.timeout)?,
        prefix: raw.str("REDIS_KEY_PREFIX").unwrap_or(d.prefix),
        fail_mode,
    })
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

/// A proxy as it may be shown: `scheme://user:***@host:port`.
fn show_proxy(p: &ProxyConfig) -> String {
    let d = p.describe();
    match (&p.auth, d.split_once("://")) {
        (Some((user, _)), Some((scheme, rest))) => format!("{scheme}://{user}:***@{rest}"),
        _ => d,
    }
}

/// One line with the effective settings; secrets are shown only as counts or masked.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let (s, u, c, l) = (&self.server, &self.upstream, &self.cache, &self.limiter);
        write!(
            f,
            "listen={}:{} workers={} provider={} base_url={} apikey={} admin_key={} upstream_api_key={} client_timeout={} \
             connect_timeout={} retry={} proxy={} cache={} model_cache_ttl={} \
             resp_cache_ttl={} conn_pool={} max_conns_per_host={} lean_http1={} rate_limit={} requests_per_second={} \
             burst={} model_mappings={} max_body_bytes={} max_upload_bytes={} body_read_timeout={} max_connections={} shutdown_timeout={} heartbeat={} log_level={} redis={} redis_timeout={} redis_key_prefix={} rate_limit_fail_mode={}",
            s.host,
            s.port,
            s.workers,
            u.provider.as_str(),
            settings::mask_str(&u.base_url),
            count(self.auth.api_keys.len(), "key"),
            if self.auth.admin_key.is_some() {
                "set"
            } else {
                "none"
            },
            count(u.api_keys.len(), "key"),
            d(u.client_timeout),
            d(u.connect_timeout),
            u.retry.attempts,
            u.proxy.as_ref().map_or_else(|| "none".into(), show_proxy),
            c.enabled,
            d(c.model_ttl),
            d(c.answer_ttl),
            u.pool.enabled,
            u.pool.max_conns_per_host,
            u.lean_http1,
            l.enabled,
            l.bucket.per_second,
            l.bucket.burst,
            count(self.model_map.len(), "pair"),
            s.max_body_bytes,
            s.max_upload_bytes,
            d(s.body_read_timeout),
            s.max_connections,
            d(s.shutdown_timeout),
            d(s.heartbeat_interval),
            s.log_level,
            self.redis
                .url
                .as_deref()
                .map_or_else(|| "none".to_owned(), scira2api_redis::masked),
            d(self.redis.timeout),
            self.redis.prefix,
            self.redis.fail_mode.as_str(),
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
        if u.provider.uses_cookies() {
            write!(
                f,
                " scira_path={} scira_group={} scira_timezone={} scira_body={:?} scira_cookie={} scira_user_ids={}",
                u.scira.path,
                u.scira.group,
                u.scira.timezone,
                u.scira.body,
                count(u.scira.cookies.len(), "cookie"),
                count(u.scira.user_ids.len(), "id"),
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

/// The `--demo` model table for a provider kind: `gpt-4o` and `gpt-4o-mini` mapped to models
/// the mock serves as that kind would (Scira's anonymous models, the official API's search).
pub fn demo_model_mappings(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Scira => "gpt-4o:scira-default,gpt-4o-mini:scira-qwen-4b",
        ProviderKind::SciraApi => "gpt-4o:scira-search,gpt-4o-mini:scira-search",
        ProviderKind::OpenAi | ProviderKind::Anthropic => {
            "gpt-4o:mock-gpt,gpt-4o-mini:mock-gpt-mini"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scira2api_upstream::ProxyKind;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn redis_settings_are_checked_and_their_password_never_shown() {
        let c = cfg(&[
            ("REDIS_URL", "redis://:pw-secret@h:1"),
            ("RATE_LIMIT_FAIL_MODE", "closed"),
        ])
        .unwrap();
        let shown = c.to_string();
        assert!(
            shown.contains("redis=redis://***@h:1") && !shown.contains("pw-secret"),
            "{shown}"
        );
        assert!(shown.contains("rate_limit_fail_mode=closed"), "{shown}");
        for (k, v) in [
            ("REDIS_URL", "http://h"),
            ("RATE_LIMIT_FAIL_MODE", "maybe"),
            ("REDIS_TIMEOUT", "soon"),
        ] {
            let e = cfg(&[(k, v)]).err().unwrap().to_string();
            assert!(e.contains(k), "{e}");
        }
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
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.server.host, "0.0.0.0");
        assert_eq!(c.upstream.provider, ProviderKind::OpenAi);
        assert_eq!(c.upstream.base_url, "https://api.openai.com");
        assert_eq!(c.upstream.client_timeout, Duration::from_secs(600));
        assert_eq!(c.upstream.retry.attempts, 3);
        assert_eq!(c.upstream.retry.base_delay, Duration::from_millis(200));
        assert_eq!(c.upstream.retry.max_delay, Duration::from_secs(8));
        assert!(c.proxy().is_none());
        assert!(c.cache.enabled && c.upstream.pool.enabled && c.limiter.enabled);
        assert_eq!(c.cache.model_ttl, Duration::from_secs(3600));
        assert_eq!(c.cache.answer_ttl, Duration::from_secs(300));
        assert_eq!(
            (c.limiter.bucket.per_second, c.limiter.bucket.burst),
            (1.0, 10)
        );
        assert_eq!(c.server.max_body_bytes, 16 * 1024 * 1024);
        assert_eq!(c.server.shutdown_timeout, Duration::from_secs(30));
        assert!(c.auth.api_keys.is_empty());
        let s = cfg(&[("PROVIDER", "scira")]).unwrap();
        assert_eq!(s.upstream.base_url, "https://scira.ai");
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
        assert_eq!(c.upstream.client_timeout, Duration::from_millis(250));
        assert_eq!(c.upstream.connect_timeout, Duration::from_secs(7));
        assert_eq!(c.cache.model_ttl, Duration::from_secs(300));
        assert_eq!(c.cache.answer_ttl, Duration::from_secs(3600));
        assert_eq!(c.auth.api_keys, ["a", "b"]);
        assert_eq!(c.upstream.base_url, "http://127.0.0.1:9/v1");
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
