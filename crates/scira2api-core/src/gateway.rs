//! The [`Gateway`]: the whole request path of scira2api behind one API, independent of the HTTP
//! framework, so other Rust services can embed it.
//!
//! [`GatewayState`] holds what all workers share (config, model catalog, upstream settings,
//! response cache, rate limiter); a [`Gateway`] is built per actix worker from it, because the
//! awc client inside is `!Send`.

use crate::config::{CacheScope, Config, RateLimitScope};
use bytes::Bytes;
use futures_util::Stream;
use log::{debug, warn};
use scira2api_cache::{CacheKey, CacheStats, MemoryStore, ResponseStore, TtlCell, cache_key};
use scira2api_limiter::{BucketConfig, LimiterStats, MemoryLimiter, RateLimiter};
use scira2api_models::{Catalog, ModelEntry};
use scira2api_types::{Answer, AnswerBuilder, ChatRequest, Error};
use scira2api_upstream::{
    ChatReply, FrameStream, PoolConfig, ProviderKind, Upstream, UpstreamConfig, UpstreamSettings,
};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the client asked the cache to behave (its `Cache-Control` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheControl {
    /// Use the cache.
    #[default]
    Default,
    /// `no-cache`: do not answer from the cache (the fresh answer may be stored).
    NoCache,
    /// `no-store`: neither read nor write the cache.
    NoStore,
}

/// What the cache did for a request (`x-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from the cache.
    Hit,
    /// Looked up, not found; answered by the upstream.
    Miss,
    /// The cache was not consulted (off, or the client said no).
    Bypass,
}

impl CacheStatus {
    /// `HIT`, `MISS` or `BYPASS`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// What the HTTP layer knows about the request beyond its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatContext<'a> {
    /// The client's API key, when it sent one (for `CACHE_SCOPE=per_key`).
    pub client_key: Option<&'a str>,
    /// The client's `Cache-Control`.
    pub cache_control: CacheControl,
}

/// A chat answer and how it was obtained.
pub struct ChatOutcome {
    /// The answer in OpenAI form.
    pub reply: ChatReply,
    /// What the cache did.
    pub cache: CacheStatus,
}

/// State shared by every worker's [`Gateway`].
pub struct GatewayState {
    config: Config,
    catalog: Catalog,
    upstream: Arc<UpstreamConfig>,
    store: Option<Arc<dyn ResponseStore>>,
    limiter: Option<Arc<dyn RateLimiter>>,
    models: TtlCell<Vec<ModelEntry>>,
    started: Instant,
    start_unix: u64,
}

/// The in-memory limiter the settings describe, or `None` when rate limiting is off.
fn memory_limiter(config: &Config) -> Option<Arc<dyn RateLimiter>> {
    if !config.rate_limit_enabled {
        return None;
    }
    let main = BucketConfig {
        per_second: config.requests_per_second,
        burst: config.burst,
    };
    let extra = config
        .global_rate_limit
        .map(|(per_second, burst)| BucketConfig { per_second, burst });
    let limiter = match config.rate_limit_scope {
        RateLimitScope::Global => MemoryLimiter::new(None, Some(main), 1),
        RateLimitScope::Key | RateLimitScope::Ip => {
            MemoryLimiter::new(Some(main), extra, config.rate_limit_max_keys)
        }
    };
    Some(Arc::new(limiter))
}

fn upstream_settings(config: &Config) -> UpstreamSettings {
    UpstreamSettings {
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
    }
}

impl GatewayState {
    /// Builds the shared state from a validated config, with the in-memory response cache and
    /// rate limiter the config describes.
    pub fn new(config: Config) -> Arc<GatewayState> {
        let store = config.cache_enabled.then(|| {
            Arc::new(MemoryStore::new(
                config.resp_cache_ttl,
                config.cache_max_entries,
                config.cache_max_bytes,
            )) as Arc<dyn ResponseStore>
        });
        let limiter = memory_limiter(&config);
        GatewayState::with_parts(config, store, limiter)
    }

    /// Builds the shared state with a response store and a rate limiter of your own (e.g. one
    /// shared by several replicas); `None` turns that part off.
    pub fn with_parts(
        config: Config,
        store: Option<Arc<dyn ResponseStore>>,
        limiter: Option<Arc<dyn RateLimiter>>,
    ) -> Arc<GatewayState> {
        let start_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let extra = match config.provider {
            ProviderKind::Scira => config.scira.extra_models.clone(),
            ProviderKind::OpenAi => Vec::new(),
        };
        let catalog = Catalog::new(
            config.model_map.clone(),
            extra,
            config.owned_by(),
            start_unix,
        );
        let upstream = Arc::new(UpstreamConfig::new(upstream_settings(&config)));
        Arc::new(GatewayState {
            models: TtlCell::new(config.model_cache_ttl),
            config,
            catalog,
            upstream,
            store,
            limiter,
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

    /// The rate limiter, when rate limiting is on.
    pub fn limiter(&self) -> Option<&dyn RateLimiter> {
        self.limiter.as_deref()
    }

    /// Rate limiter counters (zero when off).
    pub fn limiter_stats(&self) -> LimiterStats {
        self.limiter.as_ref().map(|l| l.stats()).unwrap_or_default()
    }

    /// Response cache counters (zero when off).
    pub fn cache_stats(&self) -> CacheStats {
        self.store.as_ref().map(|s| s.stats()).unwrap_or_default()
    }

    /// The shared upstream config and its counters.
    pub fn upstream(&self) -> &UpstreamConfig {
        &self.upstream
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

    /// Answers one chat completion request (already parsed and validated), from the response
    /// cache when it can. The reply is in OpenAI form with `model` as the client sent it.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        ctx: ChatContext<'_>,
    ) -> Result<ChatOutcome, Error> {
        let state = &self.state;
        let internal = state.catalog.map().to_internal(&req.model);
        debug!(
            "chat model={} upstream_model={} stream={}",
            req.model, internal, req.stream
        );
        let store = state
            .store
            .as_ref()
            .filter(|_| ctx.cache_control != CacheControl::NoStore);
        let key = store.map(|_| {
            let scope = match state.config.cache_scope {
                CacheScope::Shared => None,
                CacheScope::PerKey => Some(ctx.client_key.unwrap_or("")),
            };
            cache_key(
                state.config.provider.as_str(),
                internal,
                req.object(),
                scope,
            )
        });
        let mut status = CacheStatus::Bypass;
        if let (Some(store), Some(key), CacheControl::Default) = (store, key, ctx.cache_control) {
            if let Some(hit) = store.get(key).await {
                debug!("cache hit for model={}", req.model);
                return Ok(ChatOutcome {
                    reply: replay(&hit, req),
                    cache: CacheStatus::Hit,
                });
            }
            status = CacheStatus::Miss;
        }
        let reply = self.upstream.chat(req, internal).await?;
        let reply = match (store, key, reply) {
            (Some(store), Some(key), ChatReply::Json(body)) => {
                if let Some(answer) = Answer::from_completion(&body).filter(Answer::is_complete) {
                    store.put(key, answer).await;
                }
                ChatReply::Json(body)
            }
            (Some(store), Some(key), ChatReply::Stream(frames)) => {
                ChatReply::Stream(Box::pin(CachingStream {
                    frames,
                    builder: Some(AnswerBuilder::default()),
                    store: store.clone(),
                    key,
                }))
            }
            (_, _, reply) => reply,
        };
        Ok(ChatOutcome {
            reply,
            cache: status,
        })
    }

    /// The model list: the mapping table's names, configured extras, and the upstream's own list
    /// (fetched at most once per `MODEL_CACHE_TTL` when caching is on; when a fetch fails, the
    /// last good list is served and the failure is not cached).
    pub async fn models(&self) -> Vec<ModelEntry> {
        let cell = &self.state.models;
        let cached = if self.state.config.cache_enabled {
            cell.fresh()
        } else {
            None
        };
        let upstream = match cached {
            Some(list) => list,
            None => match self.upstream.models().await {
                Ok(list) => cell.set(list),
                Err(e) => {
                    warn!("could not fetch the upstream model list: {e}");
                    cell.last().unwrap_or_default()
                }
            },
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

/// A cached answer as the client asked for it: a body, or a stream with fresh id and time.
fn replay(answer: &Answer, req: &ChatRequest) -> ChatReply {
    if req.stream {
        let mut frames = answer.to_sse(&req.model, req.include_usage);
        frames.pop(); // `[DONE]`: the SSE writer ends every stream with it
        ChatReply::Stream(Box::pin(futures_util::stream::iter(
            frames.into_iter().map(Ok),
        )))
    } else {
        ChatReply::Json(answer.to_completion_json(&req.model))
    }
}

/// Passes a stream through unchanged while rebuilding its answer; a stream that ends cleanly
/// with a complete answer is stored. One that fails, or is dropped because the client left, is
/// not.
struct CachingStream {
    frames: FrameStream,
    builder: Option<AnswerBuilder>,
    store: Arc<dyn ResponseStore>,
    key: CacheKey,
}

impl Stream for CachingStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let item = this.frames.as_mut().poll_next(cx);
        match &item {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(b) = this.builder.as_mut() {
                    b.push_frame(frame);
                }
            }
            Poll::Ready(Some(Err(_))) => this.builder = None,
            Poll::Ready(None) => {
                let answer = this
                    .builder
                    .take()
                    .map(AnswerBuilder::finish)
                    .filter(Answer::is_complete);
                if let Some(answer) = answer {
                    let store = this.store.clone();
                    let key = this.key;
                    actix_rt::spawn(async move { store.put(key, answer).await });
                }
            }
            Poll::Pending => {}
        }
        item
    }
}
