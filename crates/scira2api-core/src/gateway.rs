//! The [`Gateway`]: the whole request path of scira2api behind one API, independent of the HTTP
//! framework, so other Rust services can embed it.
//!
//! [`GatewayState`] holds what all workers share (config, model catalog, upstream settings,
//! response cache, rate limiter); a [`Gateway`] is built per actix worker from it, because the
//! awc client inside is `!Send`.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::observed_stream::{ObservedStream, StreamMemory};
use crate::outcome::{CacheControl, CacheStatus, ChatContext, ChatOutcome, UsageSource};
use bytes::Bytes;
use log::{debug, warn};
use prometheus::IntCounter;
use scira2api_cache::CacheScope;
use scira2api_cache::{CacheStats, ResponseStore, TtlCell, cache_key};
use scira2api_limiter::{LimiterStats, RateLimiter};
use scira2api_models::{Catalog, Deployment, ModelEntry, Outcome, Router, Unavailable};
use scira2api_types::{
    Answer, ChatRequest, Error, RawObject, Usage, last_field_value, log_safe, top_level_value,
};
use scira2api_upstream::{ChatReply, Upstream, UpstreamConfig};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Token usage for an answer the upstream did not count: the prompt with OpenAI's chat framing,
/// the completion from the answer's text, with the upstream model's vocabulary.
pub(crate) fn estimate(req: &ChatRequest, internal_model: &str, answer: &Answer) -> Usage {
    let messages = req.messages().unwrap_or_default();
    let tools = req
        .object()
        .get::<serde_json::Value>("tools")
        .and_then(Result::ok);
    let prompt = scira2api_tokens::count_prompt(internal_model, &messages, tools.as_ref());
    let completion = scira2api_tokens::count_completion(internal_model, &answer.text());
    Usage::new(prompt, completion)
}

/// At most one upstream model-list fetch at a time, and none for a while after one failed.
#[derive(Default)]
struct FetchGate {
    inner: Mutex<(bool, Option<Instant>)>,
}

impl FetchGate {
    /// A ticket to fetch now, or `None` while another fetch runs or soon after one failed.
    fn try_begin(&self) -> Option<FetchTicket<'_>> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (running, failed_at) = *g;
        if running || failed_at.is_some_and(|t| t.elapsed() < MODEL_LIST_FAILURE_TTL) {
            return None;
        }
        g.0 = true;
        Some(FetchTicket {
            gate: self,
            ok: false,
        })
    }
}

/// A fetch in progress; dropped unfinished (the client left), it counts as failed.
struct FetchTicket<'a> {
    gate: &'a FetchGate,
    ok: bool,
}

impl Drop for FetchTicket<'_> {
    fn drop(&mut self) {
        let mut g = self.gate.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g = (false, (!self.ok).then(Instant::now));
    }
}

/// Which instance and model answered, and the deployment when a group's router chose it.
/// Which instance and model served a routed request, the deployment, and the tokens reserved
/// from its shared `tpm`.
type Served = (
    usize,
    String,
    Option<Arc<Deployment>>,
    Option<crate::tpm::TokenReservation>,
);

/// The 503 for a group whose deployments (and fallbacks) all rest.
fn all_resting(u: &Unavailable) -> Error {
    Error::upstream_status(
        503,
        "no_deployment_available",
        format!(
            "every deployment of `{}` (and of its fallbacks) is resting after failures; try again in {}s",
            log_safe(&u.group),
            u.retry_after.as_secs().max(1)
        ),
    )
    .retryable(true)
    .with_retry_after(Some(u.retry_after))
}

/// State shared by every worker's [`Gateway`].
pub struct GatewayState {
    config: Config,
    pub(crate) catalog: Catalog,
    pub(crate) upstreams: Vec<Arc<UpstreamConfig>>,
    pub(crate) instance_names: Vec<Arc<str>>,
    pub(crate) router: Router,
    pub(crate) default_instance: usize,
    /// The instance serving `/v1/files` and `/v1/batches`, if any.
    pub(crate) files_instance: Option<usize>,
    route_attempts: u32,
    pub(crate) store: Option<Arc<dyn ResponseStore>>,
    /// Stored Responses API responses.
    pub(crate) responses: Arc<dyn scira2api_cache::ResponseObjects>,
    limiter: Option<Arc<dyn RateLimiter>>,
    shared: Option<crate::shared::SharedStore>,
    /// Each instance's own model list (fetched for the default instance and for config-file
    /// instances whose kind has one), with its fetch gate.
    model_lists: Vec<(TtlCell<Vec<ModelEntry>>, FetchGate)>,
    metrics: Metrics,
    history: crate::history::History,
    /// Token budgets (keys' `tpm`), when some key has one.
    token_limiter: Option<Arc<dyn scira2api_limiter::TokenLimiter>>,
    /// The deployments' `rpm`/`tpm` buckets (in Redis with `REDIS_URL`), when some has one.
    deployment_limits: Option<crate::deployment_limits::DeploymentLimits>,
    /// Each client key's own policy, in the order of `config.auth.api_keys`.
    key_policies: Vec<Option<Arc<crate::client::KeyPolicy>>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    activity: Arc<crate::Activity>,
    model_tokens: Mutex<HashMap<String, TokenCounters>>,
    /// Each thread's copy of the names it has met in `model_tokens`, so that counting needs
    /// neither the lock nor a clone of the counters.
    model_tokens_here:
        thread_local::ThreadLocal<std::cell::RefCell<HashMap<String, TokenCounters>>>,
    stream_memory: StreamMemory,
    started: Instant,
    start_unix: u64,
}

/// A model's `tokens_total` series (prompt, completion), resolved once per model name.
type TokenCounters = [IntCounter; 2];

/// Most distinct model names used as metric labels; others count as `other`.
const MAX_MODEL_LABELS: usize = 200;

/// `created` of the models the gateway itself lists: a fixed date (2025-01-01), so that the
/// list is the same on every replica and after every restart.
pub const MODELS_CREATED: u64 = 1_735_689_600;

/// Longest model name used as a metric label; longer ones count as `other`.
const MAX_LABEL_LEN: usize = 64;

/// How long a failed upstream model-list fetch is remembered (no new fetch meanwhile).
const MODEL_LIST_FAILURE_TTL: Duration = Duration::from_secs(30);

impl GatewayState {
    /// Builds the shared state from a validated config, with the in-memory response cache and
    /// rate limiter the config describes.
    pub fn new(config: Config) -> Arc<GatewayState> {
        let Some(shared) = crate::shared::SharedStore::of(&config) else {
            let store = config.cache.memory_store();
            let limiter = config.limiter.memory_limiter().or_else(|| {
                // Off by default, on for the keys that have a limit of their own.
                crate::client::own_limits(&config).then(|| {
                    Arc::new(scira2api_limiter::MemoryLimiter::new(
                        None,
                        None,
                        config.limiter.max_keys,
                    )) as Arc<dyn RateLimiter>
                })
            });
            return GatewayState::with_parts(config, store, limiter);
        };
        GatewayState::build(config, shared.store.clone(), shared.limiter(), Some(shared))
    }

    /// Builds the shared state with a response store and a rate limiter of your own (e.g. one
    /// shared by several replicas); `None` turns that part off.
    pub fn with_parts(
        config: Config,
        store: Option<Arc<dyn ResponseStore>>,
        limiter: Option<Arc<dyn RateLimiter>>,
    ) -> Arc<GatewayState> {
        GatewayState::build(config, store, limiter, None)
    }

    fn build(
        config: Config,
        store: Option<Arc<dyn ResponseStore>>,
        limiter: Option<Arc<dyn RateLimiter>>,
        shared: Option<crate::shared::SharedStore>,
    ) -> Arc<GatewayState> {
        let start_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let extra = if config.upstream.provider.uses_cookies() {
            config.upstream.scira.extra_models.clone()
        } else {
            Vec::new()
        };
        let catalog = Catalog::new(
            config.model_map.clone(),
            extra,
            config.owned_by(),
            MODELS_CREATED,
        );
        let inst = crate::instances::build(&config);
        let responses = match &shared {
            Some(s) => s.responses.clone(),
            None => config.cache.memory_responses(),
        };
        let mut catalog = catalog;
        catalog.add_groups(inst.router.groups().iter().map(|g| g.name.clone()));
        let history = crate::history::History::new(
            config.server.status_interval,
            config.server.status_history,
        );
        let deployment_limits = crate::deployment_limits::DeploymentLimits::of(
            &inst.router,
            shared.as_ref(),
            config.limiter.max_keys,
        );
        let state = Arc::new(GatewayState {
            deployment_limits,
            history,
            key_policies: crate::client::policies(&config),
            token_limiter: crate::client::token_limits(&config).then(|| match &shared {
                Some(s) => s.token_limiter(config.limiter.max_keys),
                None => Arc::new(scira2api_limiter::MemoryTokens::new(
                    config.limiter.max_keys,
                )) as Arc<dyn scira2api_limiter::TokenLimiter>,
            }),
            model_lists: (0..inst.upstreams.len())
                .map(|_| (TtlCell::new(config.cache.model_ttl), FetchGate::default()))
                .collect(),
            metrics: Metrics::new(),
            shutdown: tokio::sync::watch::Sender::new(false),
            activity: Arc::default(),
            model_tokens: Mutex::new(HashMap::new()),
            model_tokens_here: thread_local::ThreadLocal::new(),
            stream_memory: StreamMemory::default(),
            config,
            catalog,
            upstreams: inst.upstreams,
            instance_names: inst.names,
            router: inst.router,
            default_instance: inst.default,
            files_instance: inst.files,
            route_attempts: inst.attempts,
            store,
            responses,
            limiter,
            shared,
            started: Instant::now(),
            start_unix,
        });
        crate::history::start(&state);
        crate::shared::start_rest_sync(&state);
        state
    }

    /// The deployments' `rpm`/`tpm` buckets.
    pub(crate) fn deployment_limits(&self) -> Option<&crate::deployment_limits::DeploymentLimits> {
        self.deployment_limits.as_ref()
    }

    /// Token budgets (keys' `tpm`), when some key has one.
    pub fn token_limiter(&self) -> Option<&Arc<dyn scira2api_limiter::TokenLimiter>> {
        self.token_limiter.as_ref()
    }

    /// The policy of client key number `index` (of `config().auth.api_keys`), if it has one.
    pub fn key_policy(&self, index: usize) -> Option<&Arc<crate::client::KeyPolicy>> {
        self.key_policies.get(index)?.as_ref()
    }

    /// The status page's recent past.
    pub fn history(&self) -> &crate::history::History {
        &self.history
    }

    /// Adds the history sample of the interval that ends now (the sampling thread calls it).
    pub fn sample_history(&self) {
        self.history
            .record(Instant::now(), self.metrics.totals(self));
    }

    /// The shared store (Redis), when `REDIS_URL` is set.
    pub fn shared(&self) -> Option<&crate::shared::SharedStore> {
        self.shared.as_ref()
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
        &self.upstreams[self.default_instance]
    }

    /// Every provider instance (the environment's first), with its name.
    pub fn instances(&self) -> impl Iterator<Item = (&str, &UpstreamConfig)> {
        self.instance_names
            .iter()
            .map(|n| &**n)
            .zip(self.upstreams.iter().map(|u| &**u))
    }

    /// The model router (empty without a `CONFIG_FILE`).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Work in progress (requests until their response is written, streams until they end).
    pub fn activity(&self) -> &Arc<crate::Activity> {
        &self.activity
    }

    /// Ends every open stream now, each with an error event and `[DONE]` (the server calls it
    /// when the shutdown grace period is about to run out, so no stream is cut mid-air).
    pub fn cut_streams(&self) {
        self.shutdown.send_replace(true);
    }

    /// A future that completes when [`GatewayState::cut_streams`] is called.
    pub fn streams_cut(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|cut| *cut).await;
        }
    }

    /// Memory held by streams' rebuilt answers, bounded gateway-wide.
    pub fn stream_memory(&self) -> &StreamMemory {
        &self.stream_memory
    }

    /// The token counters of a client-chosen model name, and whether they are its own series:
    /// at most `MAX_MODEL_LABELS` names get their own, the rest count as `other`. Resolved once
    /// per name.
    fn token_counters(&self, model: &str) -> (TokenCounters, bool) {
        let mut known = self.model_tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = known.get(model) {
            return (c.clone(), true);
        }
        let label = if known.len() < MAX_MODEL_LABELS && model.len() <= MAX_LABEL_LEN {
            model
        } else {
            "other"
        };
        let tokens = &self.metrics.tokens;
        let c = [
            tokens.with_label_values(&[label, "prompt"]),
            tokens.with_label_values(&[label, "completion"]),
        ];
        let own = label == model;
        if own {
            known.insert(model.to_owned(), c.clone());
        }
        (c, own)
    }

    /// Counts an answer's tokens for `model`.
    pub(crate) fn record_usage(&self, model: &str, usage: &Usage, source: UsageSource) {
        let count = |[prompt, completion]: &TokenCounters| {
            prompt.inc_by(usage.prompt_tokens);
            completion.inc_by(usage.completion_tokens);
        };
        let here = self.model_tokens_here.get_or_default();
        let known = here.borrow().get(model).map(count).is_some();
        if !known {
            let (counters, own) = self.token_counters(model);
            count(&counters);
            // Only names with a series of their own (so at most `MAX_MODEL_LABELS` of them).
            if own {
                here.borrow_mut().insert(model.to_owned(), counters);
            }
        }
        let hot = &self.metrics.hot;
        match source {
            UsageSource::Upstream => hot.usage_upstream.inc(),
            UsageSource::Estimated => hot.usage_estimated.inc(),
        }
    }
}

/// One worker's gateway: parses, maps, forwards and translates chat requests.
pub struct Gateway {
    state: Arc<GatewayState>,
    pub(crate) upstreams: Vec<Upstream>,
}

impl Gateway {
    /// A gateway for the current worker thread.
    pub fn new(state: Arc<GatewayState>) -> Gateway {
        let upstreams = state.upstreams.iter().cloned().map(Upstream::new).collect();
        Gateway { state, upstreams }
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<GatewayState> {
        &self.state
    }

    /// Answers one chat completion request (already parsed and validated), from the response
    /// cache when it can. The reply is in OpenAI form with `model` as the client sent it, and its
    /// usage is always known: reported by the upstream, or estimated and marked so.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        ctx: ChatContext<'_>,
    ) -> Result<ChatOutcome, Error> {
        crate::client::admit_model(&req.model)?;
        let state = &self.state;
        let group = state.router.group(&req.model);
        let internal = match group {
            // The model of whichever deployment answers; the first one's for the cache key.
            Some(g) => g.deployments[0].model.as_str(),
            None => state.catalog.map().to_internal(&req.model),
        };
        debug!(
            "chat model={} upstream_model={} stream={}",
            log_safe(&req.model),
            log_safe(internal),
            req.stream
        );
        let store = state
            .store
            .as_ref()
            .filter(|_| ctx.cache_control != CacheControl::NoStore);
        let key = store.map(|_| {
            let scope = match state.config.cache.scope {
                CacheScope::Shared => None,
                CacheScope::PerKey => Some(ctx.client_key.unwrap_or("")),
            };
            // Any deployment of a group answers the same question: one cache entry per group.
            match group {
                Some(g) => cache_key("group", &g.name, req.object(), scope),
                None => cache_key(
                    state.config.upstream.provider.as_str(),
                    internal,
                    req.object(),
                    scope,
                ),
            }
        });
        let mut status = CacheStatus::Bypass;
        if let (Some(store), Some(key), CacheControl::Default) = (store, key, ctx.cache_control) {
            if let Some(hit) = store.get(key).await {
                debug!("cache hit for model={}", req.model);
                let source = if hit.usage_estimated {
                    UsageSource::Estimated
                } else {
                    UsageSource::Upstream
                };
                let usage = hit.usage.map(|u| (u, source));
                let reply = match replay(&hit, req) {
                    ChatReply::Stream(frames) => {
                        let s = ObservedStream::new(frames, state.clone(), req, internal)
                            .replaying(hit.usage, hit.usage_estimated)
                            .observed_by(ctx.observation.clone());
                        ChatReply::Stream(Box::pin(s))
                    }
                    json => json,
                };
                let provider: Arc<str> = Arc::from("cache");
                if let Some(o) = &ctx.observation {
                    o.answered(CacheStatus::Hit, &provider, usage);
                }
                return Ok(ChatOutcome {
                    reply,
                    cache: CacheStatus::Hit,
                    upstream_time: Duration::ZERO,
                    retries: 0,
                    usage,
                    provider,
                    dropped: Vec::new(),
                });
            }
            status = CacheStatus::Miss;
        }
        let asked = if self.counts_tokens(req) {
            Some(self.tokens_asked(req, internal).await)
        } else {
            None
        };
        let tokens = self.reserve_tokens(asked).await?;
        let retries = Cell::new(0);
        let started = Instant::now();
        let (result, served) = match group {
            None => {
                let up = &self.upstreams[state.default_instance];
                let result = up.chat(req, internal, &retries).await;
                (
                    result,
                    (state.default_instance, internal.to_owned(), None, None),
                )
            }
            Some(_) => {
                let send = async |up: &Upstream, model: &str, attempts: u32| {
                    up.chat_with(req, model, &retries, Some(attempts)).await
                };
                let tokens = asked.map(|(p, c)| p.saturating_add(c));
                // Boxed: the routed path's future is the larger, and inline it would size (and
                // have every chat request copy) the whole chat future by it.
                Box::pin(self.route_within(
                    &req.model,
                    &retries,
                    state.route_attempts,
                    tokens,
                    send,
                ))
                .await
            }
        };
        let (instance, served_model, deployment, held) = served;
        // The key's reservation and the deployment's, settled together.
        let reservations: Vec<crate::tpm::TokenReservation> =
            tokens.into_iter().chain(held).collect();
        let internal = served_model.as_str();
        let provider = state.instance_names[instance].clone();
        let dropped = self.upstreams[instance].dropped_params(req);
        let upstream_time = started.elapsed();
        if let Some(o) = &ctx.observation {
            o.called(retries.get() + 1, upstream_time);
        }
        state
            .metrics
            .upstream_time
            .observe(upstream_time.as_secs_f64());
        let reply = result.inspect_err(|e| {
            let code = e.code().unwrap_or("upstream_error");
            state
                .metrics
                .upstream_errors
                .with_label_values(&[code])
                .inc();
        })?;
        let mut usage = None;
        let reported = reply.usage;
        let reply = match reply.reply {
            ChatReply::Json(body) => {
                let (body, answer, u) = self.settle_usage(req, internal, body, reported).await;
                if let Some((u, source)) = u {
                    state.record_usage(&req.model, &u, source);
                    if let Some(d) = &deployment {
                        d.record_tokens(u.total_tokens, Instant::now());
                    }
                    for t in reservations {
                        t.settle(u.total_tokens);
                    }
                }
                usage = u;
                if let (Some(store), Some(key)) = (store, key) {
                    let answer = answer.or_else(|| Answer::from_completion(&body));
                    if let Some(mut answer) = answer.filter(Answer::is_complete) {
                        // Stored with its usage, estimated ones marked, so that a replay
                        // never answers `"usage": null`.
                        if let Some((u, source)) = usage {
                            answer.usage = Some(u);
                            answer.usage_estimated = source == UsageSource::Estimated;
                            store.put(key, answer).await;
                        }
                    }
                }
                ChatReply::Json(body)
            }
            ChatReply::Stream(frames) => {
                let s = ObservedStream::new(frames, state.clone(), req, internal)
                    .caching(store.cloned().zip(key))
                    .charging(deployment)
                    .reserving(reservations)
                    .observed_by(ctx.observation.clone());
                ChatReply::Stream(Box::pin(s))
            }
        };
        if let Some(o) = &ctx.observation {
            o.answered(status, &provider, usage);
        }
        Ok(ChatOutcome {
            reply,
            cache: status,
            upstream_time,
            retries: retries.get(),
            usage,
            provider,
            dropped,
        })
    }

    /// Sends a request for the model group `model` with `send` (an instance, the deployment's
    /// model, the attempts to spend on it): a deployment picked by the router, and on a
    /// retryable failure before the first byte the next one (then the fallback groups), within
    /// the router's attempt budget. Returns the result and which instance and model served it.
    pub(crate) async fn route<T>(
        &self,
        model: &str,
        retries: &Cell<u32>,
        send: impl AsyncFn(&Upstream, &str, u32) -> Result<T, Error>,
    ) -> (Result<T, Error>, Served) {
        self.route_within(model, retries, self.state.route_attempts, None, send)
            .await
    }

    /// [`Gateway::route`] with at most `budget` attempts in all (1 for a body that can be sent
    /// only once: the router's pick, and no other), reserving `tokens` from a picked
    /// deployment's `tpm` (deployments at their `rpm`/`tpm` are passed over).
    pub(crate) async fn route_within<T>(
        &self,
        model: &str,
        retries: &Cell<u32>,
        budget: u32,
        tokens: Option<u64>,
        send: impl AsyncFn(&Upstream, &str, u32) -> Result<T, Error>,
    ) -> (Result<T, Error>, Served) {
        let state = &self.state;
        let router = &state.router;
        let mut tried: Vec<*const Deployment> = Vec::new();
        let mut limited = 0usize;
        let mut used = 0u32;
        let mut last: Option<(Error, usize, String)> = None;
        loop {
            let ticket = match router.pick(model, &tried, fastrand::f64(), Instant::now()) {
                Ok(Some(t)) => t,
                Ok(None) | Err(_) if last.is_some() => {
                    let (e, i, m) = last.take().unwrap_or_else(|| unreachable!());
                    return (Err(e.exhausted()), (i, m, None, None));
                }
                Ok(None) => {
                    return (
                        Err(Error::Internal(format!("no group `{model}`"))),
                        (state.default_instance, model.to_owned(), None, None),
                    );
                }
                Err(u) => {
                    return (
                        Err(all_resting(&u)),
                        (state.default_instance, model.to_owned(), None, None),
                    );
                }
            };
            let d = ticket.deployment().clone();
            let chain_size = router.chain_size(model);
            let mut held = None;
            if let Some(limits) = &state.deployment_limits {
                match limits.admit(&d, tokens).await {
                    crate::deployment_limits::Admit::Yes(r) => held = r,
                    crate::deployment_limits::Admit::No => {
                        debug!(
                            "deployment {}/{} is at its rpm/tpm; trying the next",
                            d.instance_name, d.model
                        );
                        drop(ticket);
                        limited += 1;
                        if limited >= chain_size {
                            let e = Error::RateLimited {
                                message: format!(
                                    "Every deployment of `{model}` is at its rpm or tpm limit; please try again shortly."
                                ),
                                retry_after: Some(Duration::from_secs(1)),
                            };
                            return (Err(e), (d.instance, d.model.clone(), None, None));
                        }
                        tried.push(Arc::as_ptr(&d));
                        continue;
                    }
                }
            }
            // Another untried deployment to move to: one attempt here. Otherwise what is left
            // of the budget, with backoff, on this one.
            let left = budget.saturating_sub(used).max(1);
            let attempts = if tried.len() + 1 < chain_size {
                1
            } else {
                left
            };
            let before = retries.get();
            let result = send(&self.upstreams[d.instance], &d.model, attempts).await;
            used += 1 + (retries.get() - before);
            match result {
                Ok(reply) => {
                    ticket.finish(Outcome::Success, &router.policy);
                    return (Ok(reply), (d.instance, d.model.clone(), Some(d), held));
                }
                Err(e) => {
                    let outcome = match (e.status(), e.should_retry()) {
                        (429, _) => Outcome::RateLimited(e.retry_after()),
                        (_, true) => Outcome::Failure,
                        (s, false) if s >= 500 => Outcome::Failure,
                        _ => Outcome::Neutral,
                    };
                    ticket.finish(outcome, &router.policy);
                    if !e.should_retry() || used >= budget {
                        let e = if e.should_retry() && used > 1 {
                            e.exhausted()
                        } else {
                            e
                        };
                        return (Err(e), (d.instance, d.model.clone(), None, None));
                    }
                    debug!(
                        "deployment {}/{} failed ({}); trying the next",
                        d.instance_name,
                        d.model,
                        e.code().unwrap_or("error")
                    );
                    retries.set(retries.get() + 1);
                    tried.push(Arc::as_ptr(&d));
                    last = Some((e, d.instance, d.model.clone()));
                }
            }
        }
    }

    /// The usage of a non-stream answer: the upstream's (`reported` when the upstream read it
    /// on its way), or estimated (on a blocking thread, so a vocabulary still loading never
    /// stalls this worker) and written into the body.
    async fn settle_usage(
        &self,
        req: &ChatRequest,
        internal: &str,
        body: Bytes,
        reported: Option<Usage>,
    ) -> (Bytes, Option<Answer>, Option<(Usage, UsageSource)>) {
        if let Some(u) = reported {
            return (body, None, Some((u, UsageSource::Upstream)));
        }
        // Not read on the way (a translated answer, say): a scan and a tiny parse; from the
        // end first, where such an answer keeps it (the body is one checked JSON object).
        if let Some(r) =
            last_field_value(&body, "usage").or_else(|| top_level_value(&body, "usage"))
        {
            if let Some(u) = Usage::from_json(&body[r]) {
                return (body, None, Some((u, UsageSource::Upstream)));
            }
        }
        let Ok(obj) = RawObject::parse(body.clone()) else {
            return (body, None, None);
        };
        let Some(answer) = Answer::from_completion(&body) else {
            return (body, None, None);
        };
        let (r, m, a) = (req.clone(), internal.to_owned(), answer.clone());
        let Ok(u) = actix_rt::task::spawn_blocking(move || estimate(&r, &m, &a)).await else {
            return (body, Some(answer), None);
        };
        let usage_json = serde_json::to_string(&u).unwrap_or_default();
        let body = obj.with_replaced(&[("usage", &usage_json)]);
        (body, Some(answer), Some((u, UsageSource::Estimated)))
    }

    /// The model list: the mapping table's names, configured extras, and the upstream's own list
    /// (fetched at most once per `MODEL_CACHE_TTL` when caching is on; when a fetch fails, the
    /// last good list is served and the failure is not cached); for a key with a model list,
    /// only its models.
    pub async fn models(&self) -> Vec<ModelEntry> {
        let state = &self.state;
        // The default instance's list as it reports it; each config-file instance's list
        // owned by the instance's name. Fetched together.
        let wanted: Vec<usize> = (0..self.upstreams.len())
            .filter(|&i| {
                i == state.default_instance
                    || (i > 0
                        && self.upstreams[i]
                            .config()
                            .settings()
                            .provider
                            .has_model_list())
            })
            .collect();
        let lists =
            futures_util::future::join_all(wanted.iter().map(|&i| self.model_list(i))).await;
        // With a config file every entry names the instance it came from; without one the
        // single upstream's list is passed as it reports it.
        let rename = state.config.file.is_some();
        let mut upstream: Vec<ModelEntry> = Vec::new();
        for (&i, list) in wanted.iter().zip(lists) {
            upstream.extend(list.iter().cloned().map(|mut m| {
                if rename {
                    m.owned_by = state.instance_names[i].to_string();
                }
                m
            }));
        }
        let mut list = state.catalog.list(&upstream);
        // A key with a model list sees only its models.
        if let Some(policy) = crate::client::current() {
            list.retain(|m| policy.allows(&m.id));
        }
        list
    }

    /// One instance's own list: cached for `MODEL_CACHE_TTL`, fetched by one request at a time,
    /// not tried again for a while after a failure (the last good list meanwhile).
    async fn model_list(&self, instance: usize) -> Arc<Vec<ModelEntry>> {
        let state = &self.state;
        let (cell, gate) = &state.model_lists[instance];
        let cached = if state.config.cache.enabled {
            cell.fresh()
        } else {
            None
        };
        if let Some(list) = cached {
            return list;
        }
        // Another request is fetching, or the last fetch failed moments ago: the last good list,
        // without another upstream call.
        let Some(mut ticket) = gate.try_begin() else {
            return cell.last().unwrap_or_default();
        };
        let result = self.upstreams[instance].models().await;
        ticket.ok = result.is_ok();
        match result {
            Ok(list) => cell.set(list),
            Err(e) => {
                warn!(
                    "could not fetch the model list of {} (next try in {}s): {e}",
                    state.instance_names[instance],
                    MODEL_LIST_FAILURE_TTL.as_secs()
                );
                cell.last().unwrap_or_default()
            }
        }
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
