//! Request rate limits in Redis: the same token buckets as the in-memory limiter (per client key,
//! and a global one), shared by every replica. One Lua script per decision checks and consumes
//! every bucket that applies atomically, on Redis's own clock (`TIME`), in one round trip; it is
//! sent by hash and loaded again when Redis answers `NOSCRIPT` (after a restart or a
//! `SCRIPT FLUSH`). When Redis cannot answer, [`FailMode`] decides.

use crate::conn::Redis;
use redis::Script;
use scira2api_limiter::{BucketConfig, Check, Decision, LimiterStats, MemoryLimiter, RateLimiter};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the limiter does when Redis cannot answer (`RATE_LIMIT_FAIL_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Let the request through (counted).
    Open,
    /// Refuse it with a 503 and `Retry-After`.
    Closed,
    /// Decide with this replica's own in-memory buckets (the default).
    Local,
}

impl FailMode {
    /// Reads `open`, `closed` or `local`.
    pub fn parse(s: &str) -> Option<FailMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "open" => Some(FailMode::Open),
            "closed" => Some(FailMode::Closed),
            "local" => Some(FailMode::Local),
            _ => None,
        }
    }

    /// The decision without Redis: let through (`open`), refuse as unavailable (`closed`), or
    /// what this replica's own memory says (`local`).
    pub(crate) fn decide(self, local: impl FnOnce() -> Decision) -> Decision {
        match self {
            FailMode::Open => Decision::UNLIMITED,
            FailMode::Closed => Decision {
                allowed: false,
                unavailable: true,
                retry_after: Some(Duration::from_secs(1)),
                ..Decision::UNLIMITED
            },
            FailMode::Local => local(),
        }
    }

    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
            FailMode::Local => "local",
        }
    }
}

/// Checks every bucket in `KEYS` (each with its rate per ms and burst in `ARGV`, after the cost)
/// and consumes the cost from all of them, or from none. Returns `{allowed, bucket, tokens left
/// (floor), wait ms}`; `bucket` is the 1-based index of the bucket that refused, or 1.
pub(crate) const BUCKETS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost = tonumber(ARGV[1])
local tokens = {}
local refused, wait = 0, 0
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local v = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tk, ts = tonumber(v[1]), tonumber(v[2])
  if tk == nil or ts == nil then tk, ts = burst, now end
  if now > ts then tk = math.min(burst, tk + (now - ts) * rate) end
  tokens[i] = tk
  if tk < cost then
    local w = math.ceil((cost - tk) / rate)
    if w > wait then refused, wait = i, w end
  end
end
if refused > 0 then
  return {0, refused, math.floor(tokens[refused]), wait}
end
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local left = tokens[i] - cost
  redis.call('HSET', KEYS[i], 't', tostring(left), 'ts', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil((burst - left) / rate) + 1000)
end
return {1, 1, math.floor(tokens[1] - cost), 0}
";

/// Token buckets in Redis; see the module docs.
pub struct RedisLimiter {
    redis: Redis,
    per_key: Option<BucketConfig>,
    global: Option<BucketConfig>,
    fail: FailMode,
    local: MemoryLimiter,
    script: Script,
    allowed: AtomicU64,
    limited: AtomicU64,
    /// Decisions made without Redis (by the fail mode).
    unshared: AtomicU64,
}

impl RedisLimiter {
    /// Buckets per client key (`None`: none) and for all traffic (`None`: none) in `redis`;
    /// `fail` when it cannot answer (`local` keeps up to `max_keys` keys in memory).
    pub fn new(
        redis: Redis,
        per_key: Option<BucketConfig>,
        global: Option<BucketConfig>,
        fail: FailMode,
        max_keys: usize,
    ) -> Self {
        RedisLimiter {
            local: MemoryLimiter::new(per_key, global, max_keys),
            redis,
            per_key,
            global,
            fail,
            script: Script::new(BUCKETS),
            allowed: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            unshared: AtomicU64::new(0),
        }
    }

    /// Decisions made without Redis, by the fail mode.
    pub fn unshared(&self) -> u64 {
        self.unshared.load(Ordering::Relaxed)
    }

    /// The fail mode.
    pub fn fail_mode(&self) -> FailMode {
        self.fail
    }

    fn buckets(&self, key: &str, own: Option<BucketConfig>) -> Vec<(String, BucketConfig)> {
        let mut out = Vec::with_capacity(2);
        if let Some(c) = own.or(self.per_key) {
            out.push((self.redis.key(&format!("rl:k:{key}")), c));
        }
        if let Some(c) = self.global {
            out.push((self.redis.key("rl:global"), c));
        }
        out
    }

    /// What the fail mode decides.
    fn without_redis(&self, key: &str, own: Option<BucketConfig>) -> Decision {
        self.unshared.fetch_add(1, Ordering::Relaxed);
        self.fail.decide(|| self.local.decide(key, own))
    }

    async fn decide(&self, key: &str, own: Option<BucketConfig>) -> Decision {
        let buckets = self.buckets(key, own);
        if buckets.is_empty() {
            return Decision::UNLIMITED;
        }
        let script = &self.script;
        let answer = self
            .redis
            .run(|mut conn| {
                let mut call = script.prepare_invoke();
                call.arg(1);
                for (k, c) in &buckets {
                    call.key(k).arg(c.per_second / 1000.0).arg(c.burst);
                }
                async move { call.invoke_async::<Vec<i64>>(&mut conn).await }
            })
            .await;
        let v = match answer {
            Ok(v) if v.len() == 4 => v,
            Ok(v) => {
                log::warn!("the rate-limit script answered {v:?}");
                return self.without_redis(key, own);
            }
            Err(_) => return self.without_redis(key, own),
        };
        let allowed = v[0] == 1;
        let Some((_, c)) = usize::try_from(v[1] - 1).ok().and_then(|i| buckets.get(i)) else {
            return self.without_redis(key, own);
        };
        let remaining = u64::try_from(v[2]).unwrap_or(0).min(c.burst);
        let per_token = Duration::try_from_secs_f64(1.0 / c.per_second).unwrap_or(Duration::MAX);
        let reset =
            per_token.saturating_mul(u32::try_from(c.burst - remaining).unwrap_or(u32::MAX));
        if allowed {
            self.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.limited.fetch_add(1, Ordering::Relaxed);
        }
        Decision {
            allowed,
            limit: c.burst,
            remaining,
            reset,
            retry_after: (!allowed)
                .then(|| Duration::from_millis(u64::try_from(v[3]).unwrap_or(1).max(1))),
            unavailable: false,
        }
    }
}

impl RateLimiter for RedisLimiter {
    fn check<'a>(&'a self, key: &'a str, own: Option<BucketConfig>) -> Check<'a> {
        if !self.redis.available() {
            // Nothing waits on a Redis that is known to be away.
            return Check::Now(self.without_redis(key, own));
        }
        Check::Later(Box::pin(self.decide(key, own)))
    }

    fn stats(&self) -> LimiterStats {
        let local = self.local.stats();
        LimiterStats {
            allowed: self.allowed.load(Ordering::Relaxed) + local.allowed,
            limited: self.limited.load(Ordering::Relaxed) + local.limited,
            keys: local.keys,
        }
    }
}
