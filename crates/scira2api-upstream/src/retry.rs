//! When to try an upstream request again, and how long to wait first.
//!
//! Only failures a second try can fix are retried: connection errors, timeouts before the
//! response head, and 408/429/500/502/503/504/529 — never 400/401/403/404/422 or a quota error, never
//! once the answer has started (the caller stops retrying as soon as it has a response), and
//! never after the client has gone (the request future is dropped with the client).
//! Waits use exponential backoff with full jitter, or the upstream's own `Retry-After`, capped.

use std::time::Duration;

/// Retry settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Backoff base: the first wait is at most this long.
    pub base_delay: Duration,
    /// Longest wait, for backoff and for a `Retry-After` alike.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(8),
        }
    }
}

pub use scira2api_types::retryable_status;

/// Error codes that are retried once at most, whatever `RETRY` says: failures that a second
/// try can fix but that usually repeat, on upstreams that spend the user's quota on every try
/// (Scira's bare 500).
const RETRIED_ONCE_AT_MOST: &[&str] = &["scira_server_error"];

/// Whether `e` may only be retried once.
pub(crate) fn retried_once_at_most(e: &scira2api_types::Error) -> bool {
    e.code().is_some_and(|c| RETRIED_ONCE_AT_MOST.contains(&c))
}

impl RetryPolicy {
    /// The wait after `failed` failed attempts (1 for the first retry). With the upstream's own
    /// wait, that (capped); otherwise full jitter: uniform in `[0, min(max, base * 2^(failed-1))]`,
    /// with `unit` the uniform random number in `[0, 1)`.
    pub fn delay(&self, failed: u32, upstream_wait: Option<Duration>, unit: f64) -> Duration {
        if let Some(wait) = upstream_wait {
            return wait.min(self.max_delay);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << failed.saturating_sub(1).min(20))
            .min(self.max_delay);
        exp.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 422, 501] {
            assert!(!retryable_status(s), "{s}");
        }
    }

    #[test]
    fn full_jitter_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(1),
        };
        assert_eq!(p.delay(1, None, 0.999_999).as_millis(), 199);
        assert_eq!(p.delay(2, None, 0.5), Duration::from_millis(200));
        assert_eq!(p.delay(3, None, 1.0), Duration::from_millis(800));
        assert_eq!(p.delay(9, None, 1.0), Duration::from_secs(1), "capped");
        assert_eq!(p.delay(3, None, 0.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(2)), 0.1),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(60)), 0.1),
            Duration::from_secs(8)
        );
    }
}
