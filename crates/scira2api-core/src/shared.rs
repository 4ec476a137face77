//! The store several replicas share (`REDIS_URL`): the rate limiter's buckets, the response
//! cache and the upstream cool-downs in Redis instead of this process's memory, with what
//! `/health` and `/metrics` show of it.

use crate::GatewayState;
use crate::config::Config;
use crate::tpm::TokenReservation;
use scira2api_cache::ResponseStore;
use scira2api_limiter::{RateLimitScope, RateLimiter};
use scira2api_models::{Deployment, HealthState};
use scira2api_redis::{FailMode, Redis, RedisLimiter, RedisState, RedisStore, RestBoard};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Redis and the parts of the gateway kept in it.
pub struct SharedStore {
    redis: Redis,
    limiter: Option<Arc<RedisLimiter>>,
    pub(crate) store: Option<Arc<dyn ResponseStore>>,
    /// Stored Responses API responses.
    pub(crate) responses: Arc<dyn scira2api_cache::ResponseObjects>,
    fail_mode: FailMode,
}

impl SharedStore {
    /// The shared store the config describes (it starts connecting now, in the background), or
    /// `None` without `REDIS_URL`.
    pub(crate) fn of(config: &Config) -> Option<SharedStore> {
        let s = &config.redis;
        let url = s.url.as_deref()?;
        let redis = match Redis::connect(url, s.timeout, &s.prefix) {
            Ok(r) => r,
            Err(e) => {
                // The URL was checked at startup; a thread that cannot start is all that is left.
                log::error!("{e}; rate limits and the cache stay in this process");
                return None;
            }
        };
        let l = &config.limiter;
        let own = crate::client::own_limits(config);
        let limiter = (l.enabled || own).then(|| {
            let (per_key, global) = match l.scope {
                // Off but for the keys with a limit of their own.
                _ if !l.enabled => (None, None),
                RateLimitScope::Global => (None, Some(l.bucket)),
                RateLimitScope::Key | RateLimitScope::Ip => (Some(l.bucket), l.global),
            };
            Arc::new(RedisLimiter::new(
                redis.clone(),
                per_key,
                global,
                s.fail_mode,
                l.max_keys,
            ))
        });
        let c = &config.cache;
        let store = c.enabled.then(|| {
            let shared = Arc::new(RedisStore::new(
                redis.clone(),
                c.answer_ttl,
                c.max_entries,
                c.max_bytes,
            )) as Arc<dyn ResponseStore>;
            match c.front_entries {
                0 => shared,
                n => Arc::new(scira2api_cache::TieredStore::new(
                    shared,
                    n,
                    c.max_bytes,
                    c.answer_ttl,
                )) as Arc<dyn ResponseStore>,
            }
        });
        log::info!(
            "shared store: Redis {} (timeout {:?}, rate limits {}, cache {}, stored responses and cool-downs shared, RATE_LIMIT_FAIL_MODE={})",
            scira2api_redis::masked(url),
            s.timeout,
            if limiter.is_some() { "shared" } else { "off" },
            if store.is_some() { "shared" } else { "off" },
            s.fail_mode.as_str()
        );
        let responses = Arc::new(scira2api_redis::RedisResponses::new(
            redis.clone(),
            c.responses_ttl,
            scira2api_cache::MemoryResponses::new(
                c.responses_ttl,
                c.responses_max_entries,
                c.responses_max_bytes,
            ),
        ));
        Some(SharedStore {
            redis,
            limiter,
            store,
            responses,
            fail_mode: s.fail_mode,
        })
    }

    /// Token budgets in Redis, with the same fail mode as the request limits.
    pub(crate) fn token_limiter(
        &self,
        max_keys: usize,
    ) -> Arc<dyn scira2api_limiter::TokenLimiter> {
        Arc::new(scira2api_redis::RedisTokens::new(
            self.redis.clone(),
            self.fail_mode,
            max_keys,
        ))
    }

    pub(crate) fn limiter(&self) -> Option<Arc<dyn RateLimiter>> {
        self.limiter.clone().map(|l| l as Arc<dyn RateLimiter>)
    }

    /// `connecting`, `up` or `down`.
    pub fn state(&self) -> RedisState {
        self.redis.state()
    }

    /// What the limiter does without Redis.
    pub fn fail_mode(&self) -> FailMode {
        self.fail_mode
    }

    /// Redis calls that failed or timed out.
    pub fn errors(&self) -> u64 {
        self.redis.errors()
    }

    /// Rate-limit decisions made without Redis (by the fail mode).
    pub fn unshared_decisions(&self) -> u64 {
        self.limiter.as_ref().map_or(0, |l| l.unshared())
    }
}

/// How often each replica syncs its cool-downs with the others: a rest started on one replica
/// is honoured by every other within about this long.
pub const REST_SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// Starts sharing the cool-downs of `state` through its Redis (deployments of its model
/// groups, and credentials of instances with several): a thread of its own that, every
/// [`REST_SYNC_INTERVAL`], publishes the rests this replica started since the last sync and
/// rests here what the others started. Nothing to share (no groups, no instance with two
/// credentials) or no Redis: nothing starts.
pub(crate) fn start_rest_sync(state: &Arc<GatewayState>) {
    let Some(shared) = state.shared() else {
        return;
    };
    let rings = state
        .instances()
        .any(|(_, u)| u.keys().len() > 1 || u.cookies().len() > 1);
    if state.router().groups().is_empty() && !rings {
        return;
    }
    let board = RestBoard::new(shared.redis.clone());
    let weak = Arc::downgrade(state);
    let spawned = std::thread::Builder::new()
        .name("scira2api-rests".to_owned())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!(
                        "cannot start the cool-down sync ({e}): cool-downs stay per replica"
                    );
                    return;
                }
            };
            rt.block_on(async move {
                let mut seen = HashMap::new();
                loop {
                    tokio::time::sleep(REST_SYNC_INTERVAL).await;
                    let Some(state) = weak.upgrade() else { break };
                    sync_rests(&state, &board, &mut seen).await;
                }
            });
        });
    if let Err(e) = spawned {
        log::error!("cannot start the cool-down sync ({e}): cool-downs stay per replica");
    }
}

/// The board's name of a deployment.
fn deployment_field(group: &str, d: &Deployment) -> String {
    format!("d:{group}|{}|{}", d.instance_name, d.model)
}

/// One sync: this replica's new rests out, everyone's rests in. A failed call publishes
/// nothing and is tried again next time (the rests stay new until they are published).
async fn sync_rests(state: &GatewayState, board: &RestBoard, seen: &mut HashMap<String, u64>) {
    let now = Instant::now();
    let mut news = Vec::new();
    let mut marks = Vec::new();
    for g in state.router().groups() {
        for d in &g.deployments {
            let field = deployment_field(&g.name, d);
            let started = d.rests_started();
            if seen.get(&field) != Some(&started) {
                if let HealthState::Resting(left) = d.state(now) {
                    news.push((field.clone(), left));
                }
                marks.push((field, started));
            }
        }
    }
    for (name, upstream) in state.instances() {
        for (kind, ring) in [("key", upstream.keys()), ("cookie", upstream.cookies())] {
            if ring.len() < 2 {
                continue;
            }
            let ring_name = format!("{kind}:{name}");
            let started = ring.rests_started();
            if seen.get(&ring_name) == Some(&started) {
                continue;
            }
            for (i, rest) in ring.rests().into_iter().enumerate() {
                if let (Some(left), Some(fp)) = (rest, ring.fingerprint(i)) {
                    news.push((format!("{ring_name}:{fp}"), left));
                }
            }
            marks.push((ring_name, started));
        }
    }
    let Ok(rests) = board.sync(&news).await else {
        return;
    };
    seen.extend(marks);
    if !news.is_empty() {
        log::debug!("cool-downs shared with the other replicas: {}", news.len());
    }
    let now = Instant::now();
    for (field, left) in rests {
        apply_rest(state, &field, left, now);
    }
}

/// Rests here what the board says another replica rested.
fn apply_rest(state: &GatewayState, field: &str, left: Duration, now: Instant) {
    if field.starts_with("d:") {
        for g in state.router().groups() {
            for d in &g.deployments {
                if deployment_field(&g.name, d) == field {
                    d.rest_from_peer(left, now);
                }
            }
        }
        return;
    }
    let Some((ring_name, fp)) = field.rsplit_once(':') else {
        return;
    };
    for (name, upstream) in state.instances() {
        for (kind, ring) in [("key", upstream.keys()), ("cookie", upstream.cookies())] {
            if ring_name
                .strip_prefix(kind)
                .and_then(|r| r.strip_prefix(':'))
                != Some(name)
            {
                continue;
            }
            if let Some(i) = (0..ring.len()).find(|&i| ring.fingerprint(i).as_deref() == Some(fp)) {
                ring.rest_from_peer(i, left);
            }
        }
    }
}

/// The `rpm` and `tpm` of the model groups' deployments, shared by every replica: a request
/// bucket (`rpm` a minute, holding `rpm`) and a token budget per deployment in Redis, checked
/// when a deployment is picked (one call for each limit it has). Each replica's own minute
/// window still applies beside them; when Redis cannot answer, that window is all there is.
pub(crate) struct DeploymentLimits {
    requests: RedisLimiter,
    tokens: Arc<scira2api_redis::RedisTokens>,
    /// Each deployment's name in Redis (`group|instance|model`), by its address.
    ids: HashMap<usize, Arc<str>>,
}

/// What the shared limits say about one pick.
pub(crate) enum Admit {
    /// It may take the request (with its tokens reserved, when it has a `tpm`).
    Yes(Option<TokenReservation>),
    /// It is at its `rpm` or `tpm` across the replicas.
    No,
}

impl DeploymentLimits {
    /// The shared limits of `router`'s deployments, or `None` when none has an `rpm`/`tpm`.
    pub(crate) fn of(
        shared: &SharedStore,
        router: &scira2api_models::Router,
        max_keys: usize,
    ) -> Option<Self> {
        let mut ids = HashMap::new();
        for g in router.groups() {
            for d in g
                .deployments
                .iter()
                .filter(|d| d.rpm.is_some() || d.tpm.is_some())
            {
                ids.insert(
                    Arc::as_ptr(d) as usize,
                    Arc::from(format!("d:{}|{}|{}", g.name, d.instance_name, d.model)),
                );
            }
        }
        if ids.is_empty() {
            return None;
        }
        // Open: without Redis, each replica's own window decides.
        Some(DeploymentLimits {
            requests: RedisLimiter::new(shared.redis.clone(), None, None, FailMode::Open, max_keys),
            tokens: Arc::new(scira2api_redis::RedisTokens::new(
                shared.redis.clone(),
                FailMode::Open,
                max_keys,
            )),
            ids,
        })
    }

    /// Takes one request from `d`'s shared `rpm` and reserves `tokens` from its shared `tpm`.
    pub(crate) async fn admit(&self, d: &Arc<Deployment>, tokens: Option<u64>) -> Admit {
        let Some(id) = self.ids.get(&(Arc::as_ptr(d) as usize)) else {
            return Admit::Yes(None);
        };
        if let Some(rpm) = d.rpm {
            let own = scira2api_limiter::BucketConfig {
                per_second: rpm as f64 / 60.0,
                burst: rpm,
            };
            let decision = match self.requests.check(id, Some(own)) {
                scira2api_limiter::Check::Now(d) => d,
                scira2api_limiter::Check::Later(f) => f.await,
            };
            if !decision.allowed {
                return Admit::No;
            }
        }
        let (Some(tpm), Some(n)) = (d.tpm, tokens) else {
            return Admit::Yes(None);
        };
        let decision = match scira2api_limiter::TokenLimiter::reserve(&*self.tokens, id, tpm, n) {
            scira2api_limiter::Check::Now(d) => d,
            scira2api_limiter::Check::Later(f) => f.await,
        };
        if !decision.allowed {
            return Admit::No;
        }
        Admit::Yes(Some(TokenReservation::new(
            self.tokens.clone(),
            id.clone(),
            tpm,
            n.min(tpm),
        )))
    }
}
