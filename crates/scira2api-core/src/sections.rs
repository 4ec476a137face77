//! The server and auth sections of the settings, with their defaults.
//!
//! They are used by the HTTP surface and the server binary; they are defined here, in the crate
//! that reads the environment, because `scira2api-http` depends on this crate and not the other
//! way round. The upstream, cache and rate-limit sections live next to their crates
//! ([`scira2api_upstream::UpstreamSettings`], [`scira2api_cache::CacheSettings`],
//! [`scira2api_limiter::LimiterSettings`]).

use std::time::Duration;

/// How the HTTP server listens and bounds its clients.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Listen address (`HOST`).
    pub host: String,
    /// Listen port (`PORT`; 0 = any free port).
    pub port: u16,
    /// actix worker threads (`WORKERS`; each with its own upstream connection pool).
    pub workers: usize,
    /// Allowed CORS origins (`CORS_ORIGINS`); `*` = any.
    pub cors_origins: Vec<String>,
    /// Largest request body (`MAX_BODY_BYTES`; the upstream section bounds upstream bodies).
    pub max_body_bytes: usize,
    /// Largest streamed upload (`MAX_UPLOAD_BYTES`: multipart audio and image uploads, files,
    /// batches), which is passed on as it arrives and never held whole.
    pub max_upload_bytes: usize,
    /// Longest time a client may take to send a request body once its headers are in (408);
    /// for a streamed upload, the longest pause between two of its chunks.
    pub body_read_timeout: Duration,
    /// Most client connections open at once, for the whole server (split across workers);
    /// above it new connections wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Grace period for in-flight requests on shutdown.
    pub shutdown_timeout: Duration,
    /// Keep-alive comment interval on silent streams.
    pub heartbeat_interval: Duration,
    /// Log filter (`LOG_LEVEL`; `RUST_LOG` overrides it).
    pub log_level: String,
    /// Log request bodies (prompts) at debug level.
    pub log_bodies: bool,
    /// How often the status page's history takes a sample (`STATUS_SAMPLE_INTERVAL`).
    pub status_interval: Duration,
    /// How far back the status page's history reaches (`STATUS_HISTORY`): with the interval,
    /// the fixed number of samples kept.
    pub status_history: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            host: "0.0.0.0".to_owned(),
            port: 8080,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cors_origins: vec!["*".to_owned()],
            max_body_bytes: 16 * 1024 * 1024,
            max_upload_bytes: 512 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            shutdown_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(15),
            log_level: "info".to_owned(),
            log_bodies: false,
            status_interval: Duration::from_secs(5),
            status_history: Duration::from_secs(15 * 60),
        }
    }
}

/// Who may call the gateway.
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// Client API keys (`APIKEY`, plus a config file's keys); empty = no auth. Secret.
    pub api_keys: Vec<String>,
    /// Paths reachable without a key (exact, or a prefix for an entry ending in `/*`); `None`:
    /// the HTTP layer's route table decides (`/health`, `/v1/models`, `/v1/models/*`).
    pub public_paths: Option<Vec<String>>,
    /// The operator's key (`ADMIN_KEY`): when set, the status page's data and the metrics need
    /// it, and only it (client keys do not open them). Secret.
    pub admin_key: Option<String>,
}

/// Shows how many keys there are, never the keys.
impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("api_keys", &self.api_keys.len())
            .field("public_paths", &self.public_paths)
            .field("admin_key", &self.admin_key.is_some())
            .finish()
    }
}
