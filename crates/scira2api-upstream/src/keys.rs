//! Rotation over several upstream credentials (API keys, Scira cookies) with rest periods.
//!
//! Credentials are used round-robin. One that is refused (401/403) or rate limited (429) is
//! rested: skipped for a cool-down that doubles while it keeps failing (capped), after which a
//! single request probes it; the probe's success puts it back in rotation. When every
//! credential is resting, the one whose rest ends first is used anyway, so requests never stall.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// First cool-down after a refusal; doubles per consecutive failure.
const BASE_REST: Duration = Duration::from_secs(5);
/// Longest cool-down.
const MAX_REST: Duration = Duration::from_secs(600);

#[derive(Debug, Default, Clone)]
struct Health {
    failures: u32,
    rest_until: Option<Instant>,
    probing: bool,
}

/// A set of credentials used in rotation. The values are secrets: `Debug` shows only a count.
pub struct KeyRing {
    keys: Vec<String>,
    next: AtomicUsize,
    health: Mutex<Vec<Health>>,
    /// Rests this ring started itself (a shared board publishes each new one).
    rests_started: AtomicU64,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({} masked)", self.keys.len())
    }
}

/// A credential handed out for one attempt; report the attempt's outcome with its index.
#[derive(Debug, Clone, Copy)]
pub struct KeyPick<'a> {
    /// Position in the ring (for [`KeyRing::report`]).
    pub index: usize,
    /// The secret value.
    pub value: &'a str,
}

/// What an attempt with a credential showed about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOutcome {
    /// The upstream accepted it.
    Ok,
    /// Refused (401/403) or rate limited (429); `Some` = the upstream's own wait.
    Rejected(Option<Duration>),
    /// The attempt said nothing about the credential (network error, 5xx, ...).
    Neutral,
}

impl KeyRing {
    /// A ring over `keys` (may be empty).
    pub fn new(keys: Vec<String>) -> Self {
        let health = Mutex::new(vec![Health::default(); keys.len()]);
        KeyRing {
            keys,
            next: AtomicUsize::new(0),
            health,
            rests_started: AtomicU64::new(0),
        }
    }

    /// A stable, non-secret name for credential `index` (16 hex digits of a hash of it), the
    /// same on every replica: what a shared board of rests calls it.
    pub fn fingerprint(&self, index: usize) -> Option<String> {
        self.keys
            .get(index)
            .map(|k| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(k.as_bytes())))
    }

    /// How many rests this ring has started itself.
    pub fn rests_started(&self) -> u64 {
        self.rests_started.load(Ordering::Relaxed)
    }

    /// What is left of each credential's rest (`None`: not resting).
    pub fn rests(&self) -> Vec<Option<Duration>> {
        let now = Instant::now();
        self.health()
            .iter()
            .map(|h| {
                h.rest_until
                    .and_then(|t| t.checked_duration_since(now))
                    .filter(|d| !d.is_zero())
            })
            .collect()
    }

    /// Rests credential `index` for `rest` because another replica rested it (a rest only
    /// grows; not counted in [`KeyRing::rests_started`]).
    pub fn rest_from_peer(&self, index: usize, rest: Duration) {
        let until = Instant::now() + rest;
        let mut health = self.health();
        if let Some(h) = health.get_mut(index) {
            if h.rest_until.is_none_or(|t| t < until) {
                h.rest_until = Some(until);
                h.failures = h.failures.max(1);
            }
        }
    }

    /// Number of credentials.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Vec<Health>> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next usable credential, or `None` when the ring is empty.
    pub fn pick(&self) -> Option<KeyPick<'_>> {
        // None or one: nothing to choose between, so no clock to read (once per request).
        if self.keys.len() < 2 {
            return self.keys.first().map(|k| KeyPick { index: 0, value: k });
        }
        self.pick_at(Instant::now())
    }

    fn pick_at(&self, now: Instant) -> Option<KeyPick<'_>> {
        let n = self.keys.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        if n == 1 {
            return Some(KeyPick {
                index: 0,
                value: &self.keys[0],
            });
        }
        let mut health = self.health();
        let mut soonest: Option<(usize, Instant)> = None;
        for step in 0..n {
            let i = (start + step) % n;
            let h = &mut health[i];
            match h.rest_until {
                None => {
                    return Some(KeyPick {
                        index: i,
                        value: &self.keys[i],
                    });
                }
                Some(until) if until <= now && !h.probing => {
                    h.probing = true;
                    return Some(KeyPick {
                        index: i,
                        value: &self.keys[i],
                    });
                }
                Some(until) => {
                    if soonest.is_none_or(|(_, t)| until < t) {
                        soonest = Some((i, until));
                    }
                }
            }
        }
        let (i, _) = soonest.unwrap_or((start % n, now));
        Some(KeyPick {
            index: i,
            value: &self.keys[i],
        })
    }

    /// Records the outcome of an attempt made with credential `index`.
    pub fn report(&self, index: usize, outcome: KeyOutcome) {
        self.report_at(index, outcome, Instant::now());
    }

    fn report_at(&self, index: usize, outcome: KeyOutcome, now: Instant) {
        let mut health = self.health();
        let Some(h) = health.get_mut(index) else {
            return;
        };
        match outcome {
            KeyOutcome::Ok => *h = Health::default(),
            KeyOutcome::Rejected(wait) => {
                h.failures = h.failures.saturating_add(1);
                let grown = BASE_REST.saturating_mul(1u32 << (h.failures - 1).min(16));
                let rest = wait.unwrap_or(Duration::ZERO).max(grown).min(MAX_REST);
                h.rest_until = Some(now + rest);
                h.probing = false;
                self.rests_started.fetch_add(1, Ordering::Relaxed);
            }
            KeyOutcome::Neutral => h.probing = false,
        }
    }

    /// How many credentials are resting now.
    pub fn resting(&self) -> usize {
        let now = Instant::now();
        self.health()
            .iter()
            .filter(|h| h.rest_until.is_some_and(|t| t > now))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> KeyRing {
        KeyRing::new((0..n).map(|i| format!("k{i}")).collect())
    }

    #[test]
    fn a_peers_rest_is_honoured_and_fingerprints_hide_the_keys() {
        let r = ring(2);
        r.rest_from_peer(0, Duration::from_secs(30));
        assert_eq!(r.rests_started(), 0);
        assert!(r.rests()[0].is_some_and(|d| d > Duration::from_secs(20)));
        assert_eq!(r.rests()[1], None);
        for _ in 0..4 {
            assert_eq!(r.pick().unwrap().value, "k1");
        }
        r.report(1, KeyOutcome::Rejected(None));
        assert_eq!(r.rests_started(), 1);
        let fp = r.fingerprint(0).unwrap();
        assert_eq!(fp.len(), 16);
        assert!(!fp.contains("k0"));
        assert_eq!(
            fp,
            ring(1).fingerprint(0).unwrap(),
            "the same on every replica"
        );
        assert_ne!(fp, r.fingerprint(1).unwrap());
        assert_eq!(r.fingerprint(2), None);
    }

    #[test]
    fn round_robin() {
        let r = ring(3);
        let got: Vec<_> = (0..6).map(|_| r.pick().unwrap().value.to_owned()).collect();
        assert_eq!(got, ["k0", "k1", "k2", "k0", "k1", "k2"]);
        assert!(ring(0).pick().is_none());
    }

    #[test]
    fn rejected_key_rests_then_gets_one_probe() {
        let r = ring(2);
        let t0 = Instant::now();
        r.report_at(0, KeyOutcome::Rejected(None), t0);
        for _ in 0..4 {
            assert_eq!(r.pick_at(t0).unwrap().index, 1, "resting key skipped");
        }
        let later = t0 + BASE_REST + Duration::from_millis(1);
        let picks: Vec<_> = (0..4).map(|_| r.pick_at(later).unwrap().index).collect();
        assert_eq!(
            picks.iter().filter(|&&i| i == 0).count(),
            1,
            "exactly one probe: {picks:?}"
        );
        // The probe fails again: the rest doubles.
        r.report_at(0, KeyOutcome::Rejected(None), later);
        let h = r.health()[0].clone();
        assert_eq!(h.rest_until.unwrap() - later, BASE_REST * 2);
        // A success restores it.
        r.report_at(0, KeyOutcome::Ok, later);
        let picks: Vec<_> = (0..4).map(|_| r.pick_at(later).unwrap().index).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 2);
    }

    #[test]
    fn retry_after_is_honoured_and_all_resting_still_serves() {
        let r = ring(2);
        let t0 = Instant::now();
        r.report_at(0, KeyOutcome::Rejected(Some(Duration::from_secs(60))), t0);
        r.report_at(1, KeyOutcome::Rejected(None), t0);
        assert_eq!(
            r.health()[0].rest_until.unwrap() - t0,
            Duration::from_secs(60)
        );
        // Both resting: the one that recovers first (1) is used.
        assert_eq!(r.pick_at(t0).unwrap().index, 1);
        assert!(format!("{r:?}").contains("masked"));
    }
}
