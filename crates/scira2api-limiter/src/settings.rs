//! The rate-limit section of the gateway's settings, with its defaults (one place for them).

use crate::{BucketConfig, DEFAULT_MAX_KEYS, MemoryLimiter, RateLimiter};
use std::sync::Arc;

/// What a rate-limit bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitScope {
    /// One bucket for all traffic.
    Global,
    /// One per API key (per client IP when auth is off).
    Key,
    /// One per client IP address.
    Ip,
}

/// Rate limiting as configured (`RATE_LIMIT_*`, `REQUESTS_PER_SECOND`, `BURST`,
/// `GLOBAL_REQUESTS_PER_SECOND`, `GLOBAL_BURST`).
#[derive(Debug, Clone)]
pub struct LimiterSettings {
    /// Rate limiting on/off.
    pub enabled: bool,
    /// What a bucket belongs to.
    pub scope: RateLimitScope,
    /// The bucket of each key (or of everyone, for [`RateLimitScope::Global`]).
    pub bucket: BucketConfig,
    /// An extra bucket for all traffic together, beside per-key or per-IP buckets.
    pub global: Option<BucketConfig>,
    /// Most keys with a bucket at once (least recently used are evicted).
    pub max_keys: usize,
    /// The completion a token reservation (a key's `tpm`) counts for a request that sets no
    /// `max_tokens` (`TPM_DEFAULT_MAX_TOKENS`).
    pub tpm_default_max_tokens: u64,
}

impl Default for LimiterSettings {
    fn default() -> Self {
        LimiterSettings {
            enabled: true,
            scope: RateLimitScope::Key,
            bucket: BucketConfig {
                per_second: 1.0,
                burst: 10,
            },
            global: None,
            max_keys: DEFAULT_MAX_KEYS,
            tpm_default_max_tokens: 1024,
        }
    }
}

impl LimiterSettings {
    /// The in-memory limiter these settings describe, or `None` when rate limiting is off.
    pub fn memory_limiter(&self) -> Option<Arc<dyn RateLimiter>> {
        if !self.enabled {
            return None;
        }
        let limiter = match self.scope {
            RateLimitScope::Global => MemoryLimiter::new(None, Some(self.bucket), 1),
            RateLimitScope::Key | RateLimitScope::Ip => {
                MemoryLimiter::new(Some(self.bucket), self.global, self.max_keys)
            }
        };
        Some(Arc::new(limiter))
    }
}
