//! Rate limiting for scira2api: token buckets on the `ratelimit` crate, one per client key (in a
//! bounded map) plus an optional global bucket.
//!
//! A request is never queued: [`RateLimiter::check`] answers with a [`Decision`] that carries
//! what the OpenAI rate-limit headers need (limit, remaining, time to full) and, when refused,
//! how long to wait. The check is asynchronous so that the buckets can live in a shared store
//! (Redis, for several replicas) behind the same trait; an in-memory limiter answers with
//! [`Check::Now`], which allocates nothing and never yields.

#![deny(missing_docs)]

mod settings;
mod tokens;

pub use settings::{LimiterSettings, RateLimitScope};
pub use tokens::{MemoryTokens, TokenLimiter, token_decision};

use quick_cache::sync::Cache;
use ratelimit::{Ratelimiter, TryWaitError};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// The outcome of one rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The bucket's capacity (`x-ratelimit-limit-requests`).
    pub limit: u64,
    /// Requests left right now (`x-ratelimit-remaining-requests`).
    pub remaining: u64,
    /// Time until the bucket is full again (`x-ratelimit-reset-requests`).
    pub reset: Duration,
    /// When refused: the wait until a request can succeed (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// When refused: the limiter could not decide (its shared store is unreachable and the
    /// operator chose to fail closed), so the answer is a 503, not a 429.
    pub unavailable: bool,
}

impl Decision {
    /// A request let through with no bucket to report.
    pub const UNLIMITED: Decision = Decision {
        allowed: true,
        limit: u64::MAX,
        remaining: u64::MAX,
        reset: Duration::ZERO,
        retry_after: None,
        unavailable: false,
    };
}

/// A rate-limit decision: there at once, or on its way from a shared store.
pub enum Check<'a> {
    /// Decided in memory.
    Now(Decision),
    /// Being decided elsewhere (bounded by the store's own deadline).
    Later(Pin<Box<dyn Future<Output = Decision> + 'a>>),
}

impl Future for Check<'_> {
    type Output = Decision;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        match self.get_mut() {
            Check::Now(d) => Poll::Ready(*d),
            Check::Later(f) => f.as_mut().poll(cx),
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Requests let through.
    pub allowed: u64,
    /// Requests refused with 429.
    pub limited: u64,
    /// Client keys with a bucket right now.
    pub keys: u64,
}

/// A rate limiter: decides whether the client `key` may send a request now.
pub trait RateLimiter: Send + Sync {
    /// Takes one token for `key` (and from the global bucket, if any), or refuses. `own` is
    /// the key's own bucket (a per-key policy), used instead of the default per-key one; a
    /// key's bucket keeps the settings it was made with.
    fn check<'a>(&'a self, key: &'a str, own: Option<BucketConfig>) -> Check<'a>;
    /// Counters.
    fn stats(&self) -> LimiterStats;
}

/// Bucket settings.
#[derive(Debug, Clone, Copy)]
pub struct BucketConfig {
    /// Refill, tokens per second (> 0).
    pub per_second: f64,
    /// Capacity (>= 1).
    pub burst: u64,
}

/// How many distinct client keys keep a bucket by default; the least recently used are evicted.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

struct Bucket {
    limiter: Ratelimiter,
    config: BucketConfig,
    /// Time for one token to come back (computed once: float maths on every check is not free).
    interval: Duration,
}

impl Bucket {
    fn new(config: BucketConfig) -> Bucket {
        // ratelimit takes an integer rate per period: express the rate per 1000 s so fractional
        // rates (0.5/s) keep their precision. A new bucket starts full.
        let rate = (config.per_second * 1000.0).round().max(1.0) as u64;
        let limiter = Ratelimiter::builder(rate)
            .period(Duration::from_secs(1000))
            .max_tokens(config.burst)
            .initial_available(config.burst)
            .build()
            .unwrap_or_else(|_| Ratelimiter::new(0));
        let interval =
            Duration::try_from_secs_f64(1.0 / config.per_second).unwrap_or(Duration::MAX);
        Bucket {
            limiter,
            config,
            interval,
        }
    }

    fn take(&self) -> Result<(), Duration> {
        match self.limiter.try_wait() {
            Ok(()) => Ok(()),
            Err(TryWaitError::Insufficient(wait)) => Err(wait.max(Duration::from_millis(1))),
            Err(_) => Err(self.interval),
        }
    }

    fn decision(&self, allowed: bool, retry_after: Option<Duration>) -> Decision {
        let remaining = self.limiter.available().min(self.config.burst);
        let missing = self.config.burst - remaining;
        Decision {
            allowed,
            limit: self.config.burst,
            remaining,
            reset: match missing {
                0 => Duration::ZERO,
                n => self
                    .interval
                    .saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)),
            },
            retry_after,
            unavailable: false,
        }
    }
}

/// In-memory buckets: per client key in a bounded map (quick_cache), plus an optional global
/// bucket. Keys evicted from the map start again with a full bucket.
pub struct MemoryLimiter {
    per_key: Option<BucketConfig>,
    buckets: Cache<String, Arc<Bucket>>,
    global: Option<Bucket>,
    allowed: AtomicU64,
    limited: AtomicU64,
}

impl MemoryLimiter {
    /// A limiter with per-key buckets (`None` = no per-key limit), a global bucket (`None` = none)
    /// and room for `max_keys` keys.
    pub fn new(
        per_key: Option<BucketConfig>,
        global: Option<BucketConfig>,
        max_keys: usize,
    ) -> Self {
        MemoryLimiter {
            per_key,
            buckets: Cache::new(max_keys.max(1)),
            global: global.map(Bucket::new),
            allowed: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        }
    }

    fn bucket(&self, key: &str, own: Option<BucketConfig>) -> Option<Arc<Bucket>> {
        let config = own.or(self.per_key)?;
        if let Some(b) = self.buckets.get(key) {
            return Some(b);
        }
        let fresh = Arc::new(Bucket::new(config));
        // Two first requests of a key may race; both then count against the bucket that stays.
        self.buckets
            .get_or_insert_with(key, || Ok::<_, ()>(fresh))
            .ok()
    }

    fn refuse(&self, d: Decision) -> Decision {
        self.limited.fetch_add(1, Ordering::Relaxed);
        d
    }
}

impl MemoryLimiter {
    /// [`RateLimiter::check`], synchronously.
    pub fn decide(&self, key: &str, own: Option<BucketConfig>) -> Decision {
        let bucket = self.bucket(key, own);
        if let Some(b) = &bucket {
            if let Err(wait) = b.take() {
                return self.refuse(b.decision(false, Some(wait)));
            }
        }
        if let Some(g) = &self.global {
            if let Err(wait) = g.take() {
                // The key's token is not given back: a refused request still counts for its
                // sender, which keeps floods from one key from draining the global bucket.
                return self.refuse(g.decision(false, Some(wait)));
            }
        }
        self.allowed.fetch_add(1, Ordering::Relaxed);
        match (&bucket, &self.global) {
            (Some(b), _) => b.decision(true, None),
            (None, Some(g)) => g.decision(true, None),
            (None, None) => Decision::UNLIMITED,
        }
    }
}

impl RateLimiter for MemoryLimiter {
    fn check<'a>(&'a self, key: &'a str, own: Option<BucketConfig>) -> Check<'a> {
        Check::Now(self.decide(key, own))
    }

    fn stats(&self) -> LimiterStats {
        LimiterStats {
            allowed: self.allowed.load(Ordering::Relaxed),
            limited: self.limited.load(Ordering::Relaxed),
            keys: self.buckets.len() as u64,
        }
    }
}

/// A duration in OpenAI's header format: `120ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s` (integer
/// arithmetic only: this runs on every limited request).
pub fn format_reset(d: Duration) -> String {
    if d.is_zero() {
        return "0ms".to_owned();
    }
    let ms = d.as_millis() as u64;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        let (secs, frac) = (ms / 1000, ms % 1000);
        if frac == 0 {
            return format!("{secs}s");
        }
        let mut f = format!("{frac:03}");
        while f.ends_with('0') {
            f.pop();
        }
        return format!("{secs}.{f}s");
    }
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rps: f64, burst: u64) -> MemoryLimiter {
        MemoryLimiter::new(
            Some(BucketConfig {
                per_second: rps,
                burst,
            }),
            None,
            1000,
        )
    }

    #[test]
    fn burst_then_refused_with_retry_after() {
        let l = limiter(1.0, 3);
        let d: Vec<_> = (0..4).map(|_| l.decide("k", None)).collect();
        assert!(d[..3].iter().all(|d| d.allowed));
        assert_eq!(
            d.iter().map(|d| d.remaining).collect::<Vec<_>>()[..3],
            [2, 1, 0]
        );
        assert_eq!(d[0].limit, 3);
        assert!(!d[3].allowed);
        let wait = d[3].retry_after.unwrap();
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            d[2].reset >= Duration::from_millis(2900),
            "{:?}",
            d[2].reset
        );
        assert_eq!(
            l.stats(),
            LimiterStats {
                allowed: 3,
                limited: 1,
                keys: 1
            }
        );
    }

    #[test]
    fn refills_after_the_advertised_wait() {
        let l = limiter(20.0, 1);
        assert!(l.decide("k", None).allowed);
        let refused = l.decide("k", None);
        assert!(!refused.allowed);
        std::thread::sleep(refused.retry_after.unwrap() + Duration::from_millis(5));
        assert!(l.decide("k", None).allowed);
    }

    #[test]
    fn keys_are_independent_and_the_map_is_bounded() {
        let l = MemoryLimiter::new(
            Some(BucketConfig {
                per_second: 1.0,
                burst: 1,
            }),
            None,
            100,
        );
        assert!(l.decide("a", None).allowed);
        assert!(!l.decide("a", None).allowed);
        assert!(l.decide("b", None).allowed);
        for i in 0..10_000 {
            l.decide(&format!("flood-{i}"), None);
        }
        assert!(l.stats().keys <= 200, "bounded: {}", l.stats().keys);
    }

    #[test]
    fn a_keys_own_bucket_replaces_the_default_one() {
        let l = limiter(1.0, 1);
        let own = Some(BucketConfig {
            per_second: 1.0,
            burst: 3,
        });
        let d: Vec<bool> = (0..4).map(|_| l.decide("team", own).allowed).collect();
        assert_eq!(d, [true, true, true, false]);
        assert_eq!(l.decide("team", own).limit, 3);
        assert!(l.decide("other", None).allowed && !l.decide("other", None).allowed);
        // Without a default bucket only keys with their own are limited.
        let only_own = MemoryLimiter::new(None, None, 10);
        assert!((0..50).all(|_| only_own.decide("anyone", None).allowed));
        assert_eq!(only_own.decide("team", own).remaining, 2);
    }

    #[test]
    fn global_bucket_limits_everyone() {
        let l = MemoryLimiter::new(
            None,
            Some(BucketConfig {
                per_second: 1.0,
                burst: 2,
            }),
            10,
        );
        assert!(l.decide("a", None).allowed);
        assert!(l.decide("b", None).allowed);
        assert!(!l.decide("c", None).allowed);
    }

    #[test]
    fn fractional_rates() {
        let b = Bucket::new(BucketConfig {
            per_second: 0.5,
            burst: 1,
        });
        assert!(b.take().is_ok());
        let wait = b.take().unwrap_err();
        assert!(
            wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
    }

    #[test]
    fn header_durations() {
        assert_eq!(format_reset(Duration::from_millis(120)), "120ms");
        assert_eq!(format_reset(Duration::from_secs(1)), "1s");
        assert_eq!(format_reset(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_reset(Duration::from_secs(3723)), "1h2m3s");
    }
}
