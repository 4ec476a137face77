//! The status page's recent past: one [`Sample`] every `STATUS_SAMPLE_INTERVAL` in a ring of
//! fixed size (`STATUS_HISTORY` / interval samples), so the page shows the last minutes as soon
//! as it opens and the memory it takes never grows.
//!
//! A sample is the difference between two readings of the gateway's cumulative counters
//! ([`Totals`]): rates per second and latency quantiles over that interval alone. It is taken
//! on a thread of its own (never on an actix worker), which ends when the gateway state does.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most samples a ring holds, whatever the settings say.
const MAX_SAMPLES: usize = 10_000;

/// The shortest interval between samples.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// One reading of the cumulative counters the samples are made from (API routes only: the
/// status page's own polling and health checks are not traffic).
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// API requests answered, by class.
    pub requests: f64,
    /// Of which 4xx.
    pub client_errors: f64,
    /// Of which 5xx.
    pub server_errors: f64,
    /// The API routes' request-duration histogram: (upper bound in seconds, cumulative count).
    pub duration_buckets: Vec<(f64, f64)>,
    /// Its sample count.
    pub duration_count: f64,
    /// Requests refused by the rate limiter.
    pub limited: f64,
    /// Response-cache hits and misses.
    pub cache_hits: f64,
    /// See `cache_hits`.
    pub cache_misses: f64,
    /// Tokens counted (prompt and completion).
    pub tokens: f64,
    /// Streams open now.
    pub streams_active: i64,
    /// Requests in flight now.
    pub in_flight: i64,
    /// Resident memory now.
    pub rss_bytes: u64,
    /// CPU time used so far, seconds.
    pub cpu_seconds: f64,
}

/// What one interval looked like.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// End of the interval, Unix seconds.
    pub t: f64,
    /// API requests answered per second.
    pub rps: f64,
    /// 5xx answers per second.
    pub errors_per_s: f64,
    /// 4xx answers per second.
    pub client_errors_per_s: f64,
    /// Share of the interval's answers that were 5xx (0 with no answers).
    pub error_rate: f64,
    /// Median request time over the interval, milliseconds (`None` with no requests).
    pub p50_ms: Option<f64>,
    /// 99th percentile request time over the interval, milliseconds.
    pub p99_ms: Option<f64>,
    /// Share of cache lookups that hit, when there were any.
    pub cache_hit_ratio: Option<f64>,
    /// Rate-limit refusals per second.
    pub limited_per_s: f64,
    /// Streams open at the end of the interval.
    pub streams_active: i64,
    /// Requests in flight at the end of the interval.
    pub in_flight: i64,
    /// Resident memory at the end of the interval.
    pub rss_bytes: u64,
    /// CPU used over the interval, percent of one core.
    pub cpu_percent: f64,
    /// Tokens counted per second.
    pub tokens_per_s: f64,
}

impl Sample {
    /// The interval from `before` to `after`, `secs` long, ending at Unix time `t`.
    pub fn between(before: &Totals, after: &Totals, secs: f64, t: f64) -> Sample {
        let secs = secs.max(1e-3);
        let d = |a: f64, b: f64| (a - b).max(0.0);
        let requests = d(after.requests, before.requests);
        let server_errors = d(after.server_errors, before.server_errors);
        let hits = d(after.cache_hits, before.cache_hits);
        let lookups = hits + d(after.cache_misses, before.cache_misses);
        // The interval's own histogram: each cumulative bucket minus its earlier value.
        let buckets: Vec<(f64, f64)> = after
            .duration_buckets
            .iter()
            .map(|&(bound, cum)| {
                let earlier = before
                    .duration_buckets
                    .iter()
                    .find(|b| b.0 == bound)
                    .map_or(0.0, |b| b.1);
                (bound, d(cum, earlier))
            })
            .collect();
        let count = d(after.duration_count, before.duration_count) as u64;
        let q = |p: f64| (count > 0).then(|| crate::metrics::quantile(&buckets, count, p) * 1000.0);
        Sample {
            t,
            rps: requests / secs,
            errors_per_s: server_errors / secs,
            client_errors_per_s: d(after.client_errors, before.client_errors) / secs,
            error_rate: if requests > 0.0 {
                server_errors / requests
            } else {
                0.0
            },
            p50_ms: q(0.50),
            p99_ms: q(0.99),
            cache_hit_ratio: (lookups > 0.0).then(|| hits / lookups),
            limited_per_s: d(after.limited, before.limited) / secs,
            streams_active: after.streams_active,
            in_flight: after.in_flight,
            rss_bytes: after.rss_bytes,
            cpu_percent: d(after.cpu_seconds, before.cpu_seconds) / secs * 100.0,
            tokens_per_s: d(after.tokens, before.tokens) / secs,
        }
    }
}

/// The ring of samples and the reading the next one is measured from.
pub struct History {
    interval: Duration,
    capacity: usize,
    inner: Mutex<Ring>,
}

struct Ring {
    samples: VecDeque<Sample>,
    last: Option<(Instant, Totals)>,
}

impl History {
    /// A ring covering `span` with one sample per `interval` (at least 100 ms; at most 10,000
    /// samples).
    pub fn new(interval: Duration, span: Duration) -> History {
        let interval = interval.max(MIN_INTERVAL);
        let capacity = (span.as_secs_f64() / interval.as_secs_f64()).ceil() as usize;
        let capacity = capacity.clamp(1, MAX_SAMPLES);
        History {
            interval,
            capacity,
            inner: Mutex::new(Ring {
                samples: VecDeque::with_capacity(capacity),
                last: None,
            }),
        }
    }

    /// Time between samples.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Most samples kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes a reading: the first one only starts the clock; each later one adds the sample
    /// of the interval since the previous, dropping the oldest when the ring is full.
    pub fn record(&self, now: Instant, totals: Totals) {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((then, before)) = &ring.last {
            let secs = now.saturating_duration_since(*then).as_secs_f64();
            let sample = Sample::between(before, &totals, secs, t);
            if ring.samples.len() == self.capacity {
                ring.samples.pop_front();
            }
            ring.samples.push_back(sample);
        }
        ring.last = Some((now, totals));
    }

    /// The samples kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ring.samples.iter().cloned().collect()
    }

    /// The JSON the status page reads: interval, capacity and samples.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "interval_s": self.interval.as_secs_f64(),
            "capacity": self.capacity,
            "samples": self.samples(),
        })
    }
}

/// Starts the sampling thread of `state`: a reading now, then one per interval, until the
/// state is dropped.
pub(crate) fn start(state: &Arc<crate::GatewayState>) {
    let weak: Weak<crate::GatewayState> = Arc::downgrade(state);
    let interval = state.history().interval();
    state.sample_history();
    let spawned = std::thread::Builder::new()
        .name("scira2api-history".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                let Some(state) = weak.upgrade() else { break };
                state.sample_history();
            }
        });
    if let Err(e) = spawned {
        log::warn!(
            "cannot start the status history thread ({e}): the status page shows no history"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(requests: f64, errors: f64, fast: f64, slow: f64) -> Totals {
        Totals {
            requests,
            server_errors: errors,
            // 0.01 s bucket holds the fast ones, 1 s the slow ones, cumulative.
            duration_buckets: vec![
                (0.01, fast),
                (1.0, fast + slow),
                (f64::INFINITY, fast + slow),
            ],
            duration_count: fast + slow,
            cache_hits: requests / 2.0,
            cache_misses: requests / 2.0,
            cpu_seconds: requests / 100.0,
            ..Totals::default()
        }
    }

    #[test]
    fn a_sample_is_the_interval_alone() {
        // 100 fast requests before; then 10 more in 2 s, all slow, 5 of them 5xx.
        let s = Sample::between(
            &totals(100.0, 0.0, 100.0, 0.0),
            &totals(110.0, 5.0, 100.0, 10.0),
            2.0,
            7.0,
        );
        assert_eq!(s.rps, 5.0);
        assert_eq!(s.errors_per_s, 2.5);
        assert_eq!(s.error_rate, 0.5);
        // Every request of the interval was in the (0.01, 1] bucket: the earlier fast ones
        // must not pull the median down.
        let p50 = s.p50_ms.unwrap();
        assert!(p50 > 10.0 && p50 <= 1000.0, "{p50}");
        assert_eq!(s.cache_hit_ratio, Some(0.5));
        assert!((s.cpu_percent - 5.0).abs() < 1e-9);
        let idle = Sample::between(
            &totals(1.0, 0.0, 1.0, 0.0),
            &totals(1.0, 0.0, 1.0, 0.0),
            5.0,
            9.0,
        );
        assert_eq!((idle.rps, idle.error_rate, idle.p50_ms), (0.0, 0.0, None));
        assert_eq!(idle.cache_hit_ratio, None);
    }

    #[test]
    fn the_ring_keeps_a_fixed_number_of_samples() {
        let h = History::new(Duration::from_secs(5), Duration::from_secs(20));
        assert_eq!(h.capacity(), 4);
        let start = Instant::now();
        h.record(start, Totals::default());
        assert!(
            h.samples().is_empty(),
            "the first reading only starts the clock"
        );
        for i in 1..=10u32 {
            let t = totals(f64::from(i) * 10.0, 0.0, f64::from(i) * 10.0, 0.0);
            h.record(start + Duration::from_secs(u64::from(i) * 5), t);
        }
        let samples = h.samples();
        assert_eq!(samples.len(), 4);
        assert!(samples.iter().all(|s| s.rps == 2.0), "{samples:?}");
        assert_eq!(
            History::new(Duration::ZERO, Duration::from_secs(1)).interval(),
            MIN_INTERVAL
        );
        assert_eq!(
            History::new(Duration::from_millis(100), Duration::from_secs(86_400 * 30)).capacity(),
            MAX_SAMPLES
        );
    }
}
