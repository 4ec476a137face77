//! The [`Gateway`]: the whole request path of scira2api behind one API, independent of the HTTP
//! framework, so other Rust services can embed it.
//!
//! [`GatewayState`] holds what all workers share (config, model catalog, upstream settings);
//! a [`Gateway`] is built per actix worker from it, because the awc client inside is `!Send`.

use crate::Config;
use log::{debug, warn};
use scira2api_models::{Catalog, ModelEntry};
use scira2api_types::{ChatRequest, Error};
use scira2api_upstream::{ChatReply, PoolConfig, Upstream, UpstreamConfig, UpstreamSettings};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// State shared by every worker's [`Gateway`].
pub struct GatewayState {
    config: Config,
    catalog: Catalog,
    upstream: Arc<UpstreamConfig>,
    started: Instant,
    start_unix: u64,
}

impl GatewayState {
    /// Builds the shared state from a validated config.
    pub fn new(config: Config) -> Arc<GatewayState> {
        let start_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let extra = match config.provider {
            scira2api_upstream::ProviderKind::Scira => config.scira.extra_models.clone(),
            scira2api_upstream::ProviderKind::OpenAi => Vec::new(),
        };
        let catalog = Catalog::new(
            config.model_map.clone(),
            extra,
            config.owned_by(),
            start_unix,
        );
        let upstream = Arc::new(UpstreamConfig::new(UpstreamSettings {
            provider: config.provider,
            base_url: config.base_url.clone(),
            api_keys: config.upstream_api_keys.clone(),
            client_timeout: config.client_timeout,
            connect_timeout: config.connect_timeout,
            max_body_bytes: config.max_body_bytes,
            pool: PoolConfig {
                enabled: config.conn_pool_enabled,
                max_conns_per_host: config.max_conns_per_host,
                idle_timeout: config.idle_conn_timeout,
                lifetime: config.conn_lifetime,
            },
            retry: config.retry,
            proxy: config.proxy(),
            extra_roots: config.extra_roots.clone(),
            scira: config.scira.clone(),
        }));
        Arc::new(GatewayState {
            config,
            catalog,
            upstream,
            started: Instant::now(),
            start_unix,
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Time since the state was built.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Start time, Unix seconds.
    pub fn start_unix(&self) -> u64 {
        self.start_unix
    }
}

/// One worker's gateway: parses, maps, forwards and translates chat requests.
pub struct Gateway {
    state: Arc<GatewayState>,
    upstream: Upstream,
}

impl Gateway {
    /// A gateway for the current worker thread.
    pub fn new(state: Arc<GatewayState>) -> Gateway {
        let upstream = Upstream::new(state.upstream.clone());
        Gateway { state, upstream }
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<GatewayState> {
        &self.state
    }

    /// Answers one chat completion request (already parsed and validated). The reply is in
    /// OpenAI form with `model` as the client sent it.
    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatReply, Error> {
        let internal = self.state.catalog.map().to_internal(&req.model);
        debug!(
            "chat model={} upstream_model={} stream={}",
            req.model, internal, req.stream
        );
        self.upstream.chat(req, internal).await
    }

    /// The model list: the mapping table's names, configured extras, and the upstream's own list
    /// when it can be fetched (a failure is logged and the rest is still served).
    pub async fn models(&self) -> Vec<ModelEntry> {
        let upstream = match self.upstream.models().await {
            Ok(list) => list,
            Err(e) => {
                warn!("could not fetch the upstream model list: {e}");
                Vec::new()
            }
        };
        self.state.catalog.list(&upstream)
    }

    /// One model, or 404 `model_not_found`.
    pub async fn model(&self, id: &str) -> Result<ModelEntry, Error> {
        self.models()
            .await
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| Error::ModelNotFound(id.to_owned()))
    }
}
