//! Token limits (TPM) in Redis: the same budgets as [`MemoryTokens`], shared by every replica.
//! A reservation is the request-limit script with a cost (one atomic call on Redis's clock); a
//! settlement is a second small script, sent in the background. Without Redis the fail mode
//! decides, as for request limits.

use crate::conn::Redis;
use crate::limiter::{BUCKETS, FailMode};
use redis::Script;
use scira2api_limiter::{Check, Decision, MemoryTokens, TokenLimiter, token_decision};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Refills the bucket `KEYS[1]` (rate per ms `ARGV[2]`, capacity `ARGV[3]`) and adds `ARGV[1]`
/// (negative: takes), never above the capacity. A bucket that has expired is full: nothing to
/// give back.
const SETTLE: &str = r"
local v = redis.call('HMGET', KEYS[1], 't', 'ts')
local tk, ts = tonumber(v[1]), tonumber(v[2])
if tk == nil or ts == nil then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
if now > ts then tk = math.min(burst, tk + (now - ts) * rate) end
tk = math.min(burst, tk + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 't', tostring(tk), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tk) / rate) + 1000)
return 1
";

/// Token budgets in Redis; see the module docs.
pub struct RedisTokens {
    redis: Redis,
    reserve: Script,
    settle: Arc<Script>,
    fail: FailMode,
    local: MemoryTokens,
    unshared: AtomicU64,
}

impl RedisTokens {
    /// Budgets in `redis`; `fail` when it cannot answer (`local` keeps up to `max_keys` keys
    /// in memory).
    pub fn new(redis: Redis, fail: FailMode, max_keys: usize) -> RedisTokens {
        RedisTokens {
            redis,
            reserve: Script::new(BUCKETS),
            settle: Arc::new(Script::new(SETTLE)),
            fail,
            local: MemoryTokens::new(max_keys),
            unshared: AtomicU64::new(0),
        }
    }

    /// Reservations decided without Redis, by the fail mode.
    pub fn unshared(&self) -> u64 {
        self.unshared.load(Ordering::Relaxed)
    }

    fn without_redis(&self, key: &str, tpm: u64, tokens: u64) -> Decision {
        self.unshared.fetch_add(1, Ordering::Relaxed);
        self.fail.decide(|| self.local.take(key, tpm, tokens))
    }

    fn bucket(&self, key: &str) -> String {
        self.redis.key(&format!("tpm:k:{key}"))
    }

    async fn decide(&self, key: &str, tpm: u64, tokens: u64) -> Decision {
        let cost = tokens.min(tpm);
        let (bucket, script) = (self.bucket(key), &self.reserve);
        let per_ms = tpm as f64 / 60_000.0;
        let answer = self
            .redis
            .run(|mut conn| {
                let mut call = script.prepare_invoke();
                call.arg(cost).key(&bucket).arg(per_ms).arg(tpm);
                async move { call.invoke_async::<Vec<i64>>(&mut conn).await }
            })
            .await;
        match answer {
            // {allowed, bucket, tokens left (floor), wait ms}
            Ok(v) if v.len() == 4 => {
                let allowed = v[0] == 1;
                let mut d = token_decision(tpm, v[2] as f64, allowed, cost);
                if !allowed {
                    d.retry_after = Some(Duration::from_millis(
                        u64::try_from(v[3]).unwrap_or(1).max(1),
                    ));
                }
                d
            }
            _ => self.without_redis(key, tpm, tokens),
        }
    }
}

impl TokenLimiter for RedisTokens {
    fn reserve<'a>(&'a self, key: &'a str, tpm: u64, tokens: u64) -> Check<'a> {
        if !self.redis.available() {
            return Check::Now(self.without_redis(key, tpm, tokens));
        }
        Check::Later(Box::pin(self.decide(key, tpm, tokens)))
    }

    fn settle(&self, key: &str, tpm: u64, refund: i64) {
        if refund == 0 {
            return;
        }
        if !self.redis.available() {
            // Redis is away: the budget in force meanwhile is this replica's own.
            self.local.give_back(key, tpm, refund);
            return;
        }
        let (redis, script, bucket) = (self.redis.clone(), self.settle.clone(), self.bucket(key));
        let per_ms = tpm as f64 / 60_000.0;
        let job = async move {
            let _ = redis
                .run(|mut conn| {
                    let mut call = script.prepare_invoke();
                    call.key(&bucket).arg(refund).arg(per_ms).arg(tpm);
                    async move { call.invoke_async::<i64>(&mut conn).await }
                })
                .await;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(job);
            }
            Err(_) => log::debug!("a token settlement outside a runtime was not sent to Redis"),
        }
    }
}
