//! Counters and histograms that every request updates, kept per thread.
//!
//! A shared atomic counter costs a locked read-modify-write on every update, and the prometheus
//! histogram four of them (its shard counter, bucket, sum and count). A chat request updates six
//! such series; on the fast path of the benchmark those locked instructions were about 0.2 µs of
//! user CPU per request. Here each thread owns its cells, on cache lines of their own, and is
//! the only one that writes them, with a plain load and store; a reading (a scrape, the status
//! page) adds up every thread's cells. A thread that exits leaves its cells (their counts stay
//! in the total) to the next thread that gets its id, so a cell never has two writers at once.
//!
//! A reading is exact for every update that finished before it. One that races an update may
//! see the histogram's bucket before its count; the reading reads the count first and never
//! reports a bucket above it, so the exposition stays consistent.

use prometheus::core::{Collector, Desc};
use prometheus::proto;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use thread_local::ThreadLocal;

/// Adds `n` to a cell that only the calling thread writes (no locked instruction).
fn add(cell: &AtomicU64, n: u64) {
    cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
}

/// A value on cache lines of its own, so that two threads' cells never share one.
#[derive(Default)]
#[repr(align(128))]
struct Own<T>(T);

/// A counter that each thread adds to on its own.
#[derive(Default)]
pub struct PerThreadCounter(ThreadLocal<Own<AtomicU64>>);

impl PerThreadCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        add(&self.0.get_or_default().0, n);
    }

    /// The sum over every thread (wrapping, as the cells do).
    pub fn get(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, c| sum.wrapping_add(c.0.load(Relaxed)))
    }
}

/// A gauge that each thread moves on its own: a counter whose decrements add `u64::MAX`. A
/// value raised on one thread and lowered on another still sums right (one cell goes up, the
/// other down).
#[derive(Default)]
pub struct PerThreadGauge(PerThreadCounter);

impl PerThreadGauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }

    /// Takes one away.
    pub fn dec(&self) {
        self.0.inc_by(u64::MAX);
    }

    /// The sum over every thread.
    pub fn get(&self) -> i64 {
        // Two's complement: the cells' wrapping sum is the signed value.
        self.0.get() as i64
    }
}

/// The most buckets a [`PerThreadHistogram`] has (the longest bucket list of the gateway).
const MAX_BUCKETS: usize = 20;

/// One thread's share of a histogram: the count of samples, their sum, and how many fell into
/// each bucket (not cumulative).
#[derive(Default)]
struct Cells {
    count: AtomicU64,
    /// The sum of the samples, as `f64` bits.
    sum: AtomicU64,
    buckets: [AtomicU64; MAX_BUCKETS],
}

/// A prometheus histogram whose samples each thread records on its own. It is a [`Collector`]
/// of one series, registered like any prometheus metric.
pub struct PerThreadHistogram {
    desc: Desc,
    labels: Vec<proto::LabelPair>,
    bounds: &'static [f64],
    cells: ThreadLocal<Own<Cells>>,
}

impl PerThreadHistogram {
    /// The series `name{labels}` with upper bounds `bounds` (ascending; `+Inf` is implicit).
    ///
    /// # Panics
    /// With more than 20 bounds or an invalid name: both are the gateway's own constants.
    pub fn new(
        name: &str,
        help: &str,
        bounds: &'static [f64],
        labels: &[(&str, &str)],
    ) -> PerThreadHistogram {
        assert!(
            bounds.len() <= MAX_BUCKETS,
            "histogram {name}: too many buckets"
        );
        let const_labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let desc = Desc::new(name.to_owned(), help.to_owned(), Vec::new(), const_labels)
            .unwrap_or_else(|e| panic!("metric {name}: {e}"));
        let labels = desc.const_label_pairs.clone();
        PerThreadHistogram {
            desc,
            labels,
            bounds,
            cells: ThreadLocal::new(),
        }
    }

    /// Records one sample, `v` seconds.
    pub fn observe(&self, v: f64) {
        let c = &self.cells.get_or_default().0;
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            add(&c.buckets[i], 1);
        }
        c.sum
            .store((f64::from_bits(c.sum.load(Relaxed)) + v).to_bits(), Relaxed);
        add(&c.count, 1);
    }

    /// The number of samples.
    pub fn sample_count(&self) -> u64 {
        self.cells.iter().map(|c| c.0.count.load(Relaxed)).sum()
    }

    /// The sum of the samples.
    pub fn sample_sum(&self) -> f64 {
        self.cells
            .iter()
            .map(|c| f64::from_bits(c.0.sum.load(Relaxed)))
            .sum()
    }

    /// The series as the prometheus crate's own histograms report theirs.
    pub fn metric(&self) -> proto::Metric {
        let mut count = 0;
        let mut sum = 0.0;
        let mut per_bucket = [0u64; MAX_BUCKETS];
        for c in self.cells.iter() {
            let c = &c.0;
            // The count first: a sample racing this reading is then counted in no bucket
            // rather than in a bucket above the count.
            let n = c.count.load(Relaxed);
            count += n;
            sum += f64::from_bits(c.sum.load(Relaxed));
            let mut seen = 0;
            for (total, b) in per_bucket.iter_mut().zip(&c.buckets) {
                let here = b.load(Relaxed).min(n - seen);
                seen += here;
                *total += here;
            }
        }
        let mut cumulative = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(per_bucket)
            .map(|(bound, n)| {
                cumulative += n;
                let mut b = proto::Bucket::default();
                b.set_cumulative_count(cumulative);
                b.set_upper_bound(*bound);
                b
            })
            .collect();
        let mut h = proto::Histogram::default();
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        h.set_bucket(buckets);
        let mut m = proto::Metric::from_label(self.labels.clone());
        m.set_histogram(h);
        m
    }
}

impl Collector for PerThreadHistogram {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let mut f = proto::MetricFamily::default();
        f.set_name(self.desc.fq_name.clone());
        f.set_help(self.desc.help.clone());
        f.set_field_type(proto::MetricType::HISTOGRAM);
        f.set_metric(vec![self.metric()]);
        vec![f]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::core::Collector;
    use prometheus::{Encoder, Histogram, HistogramOpts, Registry, TextEncoder};
    use std::sync::Arc;

    const BOUNDS: &[f64] = &[0.001, 0.01, 0.1, 1.0];

    #[test]
    fn counter_adds_every_threads_share() {
        let c = Arc::new(PerThreadCounter::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..10_000).for_each(|_| c.inc()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        c.inc_by(5);
        assert_eq!(c.get(), 40_005);
    }

    #[test]
    fn gauge_sums_moves_made_on_different_threads() {
        let g = Arc::new(PerThreadGauge::default());
        g.inc();
        g.inc();
        let other = g.clone();
        std::thread::spawn(move || {
            other.dec();
            other.dec();
            other.dec();
        })
        .join()
        .unwrap();
        assert_eq!(g.get(), -1);
        g.inc();
        assert_eq!(g.get(), 0);
    }

    #[test]
    fn histogram_exposition_matches_the_prometheus_histogram() {
        let ours = Arc::new(PerThreadHistogram::new(
            "t_seconds",
            "help",
            BOUNDS,
            &[("route", "/x")],
        ));
        let theirs = Histogram::with_opts(
            HistogramOpts::new("t_seconds", "help")
                .const_label("route", "/x")
                .buckets(BOUNDS.to_vec()),
        )
        .unwrap();
        let samples = [0.0005, 0.002, 0.002, 0.05, 0.5, 3.0, 0.01];
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let ours = ours.clone();
                std::thread::spawn(move || samples.iter().for_each(|v| ours.observe(*v)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        for _ in 0..3 {
            samples.iter().for_each(|v| theirs.observe(*v));
        }
        // An empty one exposes zeros in the same shape, through a registry.
        let empty = PerThreadHistogram::new("t_seconds", "help", BOUNDS, &[("route", "/x")]);
        let r = Registry::new();
        r.register(Box::new(empty)).unwrap();
        let mut out = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("t_seconds_bucket{route=\"/x\",le=\"+Inf\"} 0"),
            "{text}"
        );
        assert!(text.contains("# TYPE t_seconds histogram"), "{text}");
        assert_eq!(ours.sample_count(), 21);
        assert!((ours.sample_sum() - theirs.get_sample_sum()).abs() < 1e-9);
        let mine = ours.metric();
        let families = theirs.collect();
        let expected = &families[0].get_metric()[0];
        assert_eq!(mine.get_label(), expected.get_label());
        let (a, b) = (mine.get_histogram(), expected.get_histogram());
        assert_eq!(a.get_sample_count(), b.get_sample_count());
        let bucket = |h: &proto::Histogram| {
            h.get_bucket()
                .iter()
                .map(|b| (b.upper_bound(), b.cumulative_count()))
                .collect::<Vec<_>>()
        };
        assert_eq!(bucket(a), bucket(b));
        assert_eq!(
            bucket(a).last(),
            Some(&(1.0, 18)),
            "3.0 is above every bound"
        );
    }

    #[test]
    fn a_racing_reading_never_has_a_bucket_above_the_count() {
        let h = Arc::new(PerThreadHistogram::new("r_seconds", "help", BOUNDS, &[]));
        let writer = {
            let h = h.clone();
            std::thread::spawn(move || (0..200_000).for_each(|_| h.observe(0.0001)))
        };
        while !writer.is_finished() {
            let m = h.metric();
            let hist = m.get_histogram();
            for b in hist.get_bucket() {
                assert!(b.cumulative_count() <= hist.get_sample_count());
            }
        }
        writer.join().unwrap();
        assert_eq!(h.sample_count(), 200_000);
    }
}
