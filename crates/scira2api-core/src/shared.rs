//! The store several replicas share (`REDIS_URL`): the rate limiter's buckets and the response
//! cache in Redis instead of this process's memory, with what `/health` and `/metrics` show of
//! it.

use crate::config::Config;
use scira2api_cache::ResponseStore;
use scira2api_limiter::{RateLimitScope, RateLimiter};
use scira2api_redis::{FailMode, Redis, RedisLimiter, RedisState, RedisStore};
use std::sync::Arc;

/// Redis and the parts of the gateway kept in it.
pub struct SharedStore {
    redis: Redis,
    limiter: Option<Arc<RedisLimiter>>,
    pub(crate) store: Option<Arc<dyn ResponseStore>>,
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
        let limiter = l.enabled.then(|| {
            let (per_key, global) = match l.scope {
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
            Arc::new(RedisStore::new(
                redis.clone(),
                c.answer_ttl,
                c.max_entries,
                c.max_bytes,
            )) as Arc<dyn ResponseStore>
        });
        log::info!(
            "shared store: Redis {} (timeout {:?}, rate limits {}, cache {}, RATE_LIMIT_FAIL_MODE={})",
            scira2api_redis::masked(url),
            s.timeout,
            if limiter.is_some() { "shared" } else { "off" },
            if store.is_some() { "shared" } else { "off" },
            s.fail_mode.as_str()
        );
        Some(SharedStore {
            redis,
            limiter,
            store,
            fail_mode: s.fail_mode,
        })
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
