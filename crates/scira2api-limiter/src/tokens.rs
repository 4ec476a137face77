//! Token limits (TPM): a budget of tokens per minute per key, as a bucket holding `tpm` tokens
//! and refilling `tpm` a minute. A request reserves what it may use when it is admitted (its
//! prompt plus the completion it allows), so that a burst of requests cannot overshoot the
//! budget while their answers are still being written; when the answer ends, the reservation
//! is settled with what was really used (the difference given back, or taken).

use crate::{Check, Decision};
use quick_cache::sync::Cache;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Budgets of tokens per minute, with reservations settled afterwards.
pub trait TokenLimiter: Send + Sync {
    /// Takes `tokens` (at most `tpm`: a request larger than the whole budget passes when the
    /// budget is full) from `key`'s budget of `tpm` tokens a minute, or refuses, taking nothing.
    fn reserve<'a>(&'a self, key: &'a str, tpm: u64, tokens: u64) -> Check<'a>;
    /// Settles a reservation: gives `refund` tokens back, or takes `-refund` more when the
    /// answer used more than was reserved. Never waits (a shared store is told in the
    /// background).
    fn settle(&self, key: &str, tpm: u64, refund: i64);
}

/// One key's budget.
#[derive(Debug)]
struct Budget {
    /// Tokens available (negative after an answer used more than it reserved).
    tokens: f64,
    at: Instant,
}

impl Budget {
    fn refill(&mut self, tpm: u64, now: Instant) {
        let per_ms = tpm as f64 / 60_000.0;
        let ms = now.saturating_duration_since(self.at).as_secs_f64() * 1000.0;
        self.tokens = (self.tokens + ms * per_ms).min(tpm as f64);
        self.at = now;
    }
}

/// The time `missing` tokens take to come back at `tpm` a minute.
fn refill_time(tpm: u64, missing: f64) -> Duration {
    if missing <= 0.0 || tpm == 0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(missing * 60.0 / tpm as f64).unwrap_or(Duration::MAX)
}

/// What a budget's state tells a client.
pub fn token_decision(tpm: u64, tokens: f64, allowed: bool, cost: u64) -> Decision {
    let left = tokens.max(0.0);
    Decision {
        allowed,
        limit: tpm,
        remaining: left.floor() as u64,
        reset: refill_time(tpm, tpm as f64 - tokens),
        retry_after: (!allowed)
            .then(|| refill_time(tpm, cost as f64 - tokens).max(Duration::from_millis(1))),
        unavailable: false,
    }
}

/// Token budgets in this process's memory, in a bounded map (the least recently used keys are
/// forgotten, and start again with a full budget).
pub struct MemoryTokens {
    budgets: Cache<String, Arc<Mutex<Budget>>>,
}

impl MemoryTokens {
    /// Room for `max_keys` keys.
    pub fn new(max_keys: usize) -> MemoryTokens {
        MemoryTokens {
            budgets: Cache::new(max_keys.max(1)),
        }
    }

    fn budget(&self, key: &str, tpm: u64, now: Instant) -> Arc<Mutex<Budget>> {
        if let Some(b) = self.budgets.get(key) {
            return b;
        }
        let fresh = Arc::new(Mutex::new(Budget {
            tokens: tpm as f64,
            at: now,
        }));
        self.budgets
            .get_or_insert_with(key, || Ok::<_, ()>(fresh.clone()))
            .unwrap_or(fresh)
    }

    /// [`TokenLimiter::reserve`], synchronously.
    pub fn take(&self, key: &str, tpm: u64, tokens: u64) -> Decision {
        let now = Instant::now();
        let cost = tokens.min(tpm);
        let budget = self.budget(key, tpm, now);
        let mut b = budget.lock().unwrap_or_else(|p| p.into_inner());
        b.refill(tpm, now);
        if b.tokens < cost as f64 {
            return token_decision(tpm, b.tokens, false, cost);
        }
        b.tokens -= cost as f64;
        token_decision(tpm, b.tokens, true, cost)
    }

    /// [`TokenLimiter::settle`].
    pub fn give_back(&self, key: &str, tpm: u64, refund: i64) {
        let now = Instant::now();
        let budget = self.budget(key, tpm, now);
        let mut b = budget.lock().unwrap_or_else(|p| p.into_inner());
        b.refill(tpm, now);
        b.tokens = (b.tokens + refund as f64).min(tpm as f64);
    }
}

impl TokenLimiter for MemoryTokens {
    fn reserve<'a>(&'a self, key: &'a str, tpm: u64, tokens: u64) -> Check<'a> {
        Check::Now(self.take(key, tpm, tokens))
    }

    fn settle(&self, key: &str, tpm: u64, refund: i64) {
        self.give_back(key, tpm, refund);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_hold_a_burst_and_settlements_give_back() {
        let t = MemoryTokens::new(10);
        // A 600-token budget; requests reserving 250 each: two pass, the third waits.
        let a = t.take("k", 600, 250);
        assert!(a.allowed);
        assert_eq!((a.limit, a.remaining), (600, 350));
        assert!(t.take("k", 600, 250).allowed);
        let refused = t.take("k", 600, 250);
        assert!(!refused.allowed);
        // 150 missing at 10 tokens a second.
        let wait = refused.retry_after.unwrap();
        assert!(
            wait > Duration::from_secs(14) && wait <= Duration::from_secs(15),
            "{wait:?}"
        );
        // The first two used 50 each: 400 back, and the third fits.
        t.give_back("k", 600, 200);
        t.give_back("k", 600, 200);
        assert!(t.take("k", 600, 250).allowed);
        // An answer that used more than it reserved takes the rest.
        t.give_back("k", 600, -1000);
        assert!(!t.take("k", 600, 1).allowed);
        assert_eq!(t.take("other", 600, 1).remaining, 599, "keys are apart");
    }

    #[test]
    fn a_request_larger_than_the_budget_passes_when_it_is_full() {
        let t = MemoryTokens::new(10);
        let d = t.take("k", 100, 5000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(d.reset > Duration::from_secs(59));
    }
}
