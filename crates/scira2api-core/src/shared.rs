//! The store several replicas share (`REDIS_URL`): the rate limiter's buckets, the response
//! cache and the upstream cool-downs in Redis instead of this process's memory, with what
//! `/health` and `/metrics` show of it.

use crate::GatewayState;
use crate::config::Config;
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

    /// Request buckets and token budgets of deployments in Redis; without Redis they let
    /// everything through (each replica's own window then decides).
    pub(crate) fn deployment_stores(
        &self,
        max_keys: usize,
    ) -> (
        Arc<dyn RateLimiter>,
        Arc<dyn scira2api_limiter::TokenLimiter>,
    ) {
        (
            Arc::new(RedisLimiter::new(
                self.redis.clone(),
                None,
                None,
                FailMode::Open,
                max_keys,
            )),
            Arc::new(scira2api_redis::RedisTokens::new(
                self.redis.clone(),
                FailMode::Open,
                max_keys,
            )),
        )
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

/// A deployment's name in Redis (the board of rests, its limits' buckets): group, instance and
/// model, the same on every replica.
pub(crate) fn deployment_field(group: &str, d: &Deployment) -> String {
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
