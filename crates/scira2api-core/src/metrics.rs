//! What the gateway counts, kept in a `prometheus` registry: the Prometheus text exposition is
//! that registry's own encoding, and the JSON view of `/metrics` is read from the same values,
//! so the two can never disagree. The series every chat request updates are counted per thread
//! ([`crate::per_thread`]) and brought into the registry at each reading.

use crate::GatewayState;
use crate::per_thread::{PerThreadCounter, PerThreadGauge, PerThreadHistogram};
use prometheus::core::Collector;
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The chat route's label, as the HTTP layer reports it.
pub const CHAT_ROUTE: &str = "/v1/chat/completions";

/// Buckets for whole-request durations, seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];
/// Buckets for the gateway's own overhead, seconds (tens of microseconds and up).
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Every metric of the gateway.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route pattern and status (but the chat route's 200s: `hot.chat_ok`).
    pub requests: IntCounterVec,
    /// Requests being handled now (the `http_requests_in_flight` series, set at each reading).
    pub in_flight: PerThreadGauge,
    in_flight_series: IntGauge,
    /// Whole request time by route (for streams: until the stream ended).
    pub duration: Arc<RouteDurations>,
    /// Time the gateway itself added: total until the response head minus upstream time.
    pub overhead: Arc<PerThreadHistogram>,
    /// Time spent waiting for the upstream (until its answer, or its stream's first event).
    pub upstream_time: Arc<PerThreadHistogram>,
    /// Streams being written now.
    pub streams_active: IntGauge,
    /// Streams that ended with `[DONE]` after a complete answer.
    pub streams_completed: IntCounter,
    /// Streams that ended with an error event, or whose client left.
    pub streams_cut: IntCounterVec,
    /// Tokens by model and kind (`prompt`, `completion`).
    pub tokens: IntCounterVec,
    /// Answers by where their usage came from (`upstream`, `estimated`).
    pub usage_source: IntCounterVec,
    /// Upstream failures by error code.
    pub upstream_errors: IntCounterVec,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_entries: IntGauge,
    cache_bytes: IntGauge,
    pool_opened: IntCounter,
    pool_open: IntGauge,
    upstream_requests: IntCounter,
    retries: IntCounter,
    limiter_allowed: IntCounter,
    limiter_limited: IntCounter,
    limiter_keys: IntGauge,
    redis_up: IntGauge,
    redis_errors: IntCounter,
    limiter_unshared: IntCounter,
    refresh: Mutex<()>,
    /// Handles resolved once for the labels every chat request uses, so the hot path skips the
    /// label hashing and lookup of `with_label_values`.
    pub hot: HotMetrics,
}

/// The series of labelled counters that a chat request always touches, counted per thread
/// (see [`crate::per_thread`]) and copied into their labelled families at each reading.
pub struct HotMetrics {
    /// `http_requests_total{route="/v1/chat/completions",status="200"}`.
    pub chat_ok: PerThreadCounter,
    /// `usage_total{source="upstream"}`.
    pub usage_upstream: PerThreadCounter,
    /// `usage_total{source="estimated"}`.
    pub usage_estimated: PerThreadCounter,
    /// The three series in their families, in the order above.
    series: [IntCounter; 3],
}

impl HotMetrics {
    /// Copies the per-thread counts into their series.
    fn refresh(&self) {
        let counts = [&self.chat_ok, &self.usage_upstream, &self.usage_estimated];
        for (series, count) in self.series.iter().zip(counts) {
            catch_up(series, count.get());
        }
    }
}

/// `request_duration_seconds` by route: the chat route's series per thread, the others in a
/// prometheus vec; one family when read.
pub struct RouteDurations {
    chat: PerThreadHistogram,
    others: HistogramVec,
}

impl RouteDurations {
    /// Records a request on `route` (its label) that took `seconds`.
    pub fn observe(&self, route: &str, seconds: f64) {
        if route == CHAT_ROUTE {
            self.chat.observe(seconds);
        } else {
            self.others.with_label_values(&[route]).observe(seconds);
        }
    }
}

impl Collector for RouteDurations {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.others.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.others.collect();
        if let Some(f) = families.first_mut() {
            f.mut_metric().push(self.chat.metric());
        }
        families
    }
}

/// A collector the registry holds while the metrics keep using it.
struct Registered<C>(Arc<C>);

impl<C: Collector> Collector for Registered<C> {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

fn register_shared<C: Collector + 'static>(registry: &Registry, c: C) -> Arc<C> {
    let c = Arc::new(c);
    registry
        .register(Box::new(Registered(c.clone())))
        .unwrap_or_else(|e| panic!("registering a metric: {e}"));
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(registry, c)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(registry, g)
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(registry, c)
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    // Names are fixed and distinct: registering cannot fail except by a programming error.
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("registering a metric: {e}"));
    c
}

/// Raises a counter to `value` (counters only go up; a lower value is ignored).
fn catch_up(c: &IntCounter, value: u64) {
    let now = c.get();
    if value > now {
        c.inc_by(value - now);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric, plus the process collector (RSS, CPU, fds, threads).
    pub fn new() -> Metrics {
        let r = Registry::new_custom(Some("scira2api".to_owned()), None)
            .unwrap_or_else(|e| panic!("metrics registry: {e}"));
        #[cfg(target_os = "linux")]
        {
            // The process collector's names are prefixed with `process_` by the collector itself.
            let _ = r.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }
        const DURATION_HELP: &str = "Request time by route, until the last byte";
        let duration = RouteDurations {
            chat: PerThreadHistogram::new(
                "request_duration_seconds",
                DURATION_HELP,
                DURATION_BUCKETS,
                &[("route", CHAT_ROUTE)],
            ),
            others: HistogramVec::new(
                HistogramOpts::new("request_duration_seconds", DURATION_HELP)
                    .buckets(DURATION_BUCKETS.to_vec()),
                &["route"],
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
        };
        let overhead = PerThreadHistogram::new(
            "gateway_overhead_seconds",
            "Time the gateway added: request time until the response head minus upstream time",
            OVERHEAD_BUCKETS,
            &[],
        );
        let upstream_time = PerThreadHistogram::new(
            "upstream_duration_seconds",
            "Time waiting for the upstream answer (or first event)",
            DURATION_BUCKETS,
            &[],
        );
        let requests = counter_vec(
            &r,
            "http_requests_total",
            "HTTP requests by route and status",
            &["route", "status"],
        );
        let usage_source = counter_vec(
            &r,
            "usage_total",
            "Answers by where their token usage came from",
            &["source"],
        );
        let hot = HotMetrics {
            chat_ok: PerThreadCounter::default(),
            usage_upstream: PerThreadCounter::default(),
            usage_estimated: PerThreadCounter::default(),
            series: [
                requests.with_label_values(&[CHAT_ROUTE, "200"]),
                usage_source.with_label_values(&["upstream"]),
                usage_source.with_label_values(&["estimated"]),
            ],
        };
        Metrics {
            requests,
            in_flight: PerThreadGauge::default(),
            in_flight_series: gauge(&r, "http_requests_in_flight", "HTTP requests being handled"),
            duration: register_shared(&r, duration),
            overhead: register_shared(&r, overhead),
            upstream_time: register_shared(&r, upstream_time),
            streams_active: gauge(&r, "streams_active", "Streams being written"),
            streams_completed: counter(
                &r,
                "streams_completed_total",
                "Streams that ended with a complete answer",
            ),
            streams_cut: counter_vec(
                &r,
                "streams_cut_total",
                "Streams that did not end with a complete answer",
                &["reason"],
            ),
            tokens: counter_vec(
                &r,
                "tokens_total",
                "Tokens by model and kind",
                &["model", "kind"],
            ),
            usage_source,
            upstream_errors: counter_vec(
                &r,
                "upstream_errors_total",
                "Upstream failures by error code",
                &["code"],
            ),
            cache_hits: counter(&r, "cache_hits_total", "Chat answers served from the cache"),
            cache_misses: counter(&r, "cache_misses_total", "Cache lookups that found nothing"),
            cache_entries: gauge(&r, "cache_entries", "Answers in the cache"),
            cache_bytes: gauge(
                &r,
                "cache_weight_bytes",
                "What the response cache counts against CACHE_MAX_BYTES: each answer's size, at least CACHE_MAX_BYTES/CACHE_MAX_ENTRIES",
            ),
            pool_opened: counter(
                &r,
                "upstream_connections_opened_total",
                "Upstream connections opened",
            ),
            pool_open: gauge(
                &r,
                "upstream_connections_open",
                "Upstream connections open now",
            ),
            upstream_requests: counter(
                &r,
                "upstream_requests_total",
                "Requests sent upstream (every attempt)",
            ),
            retries: counter(
                &r,
                "upstream_retries_total",
                "Upstream attempts that were retries",
            ),
            limiter_allowed: counter(
                &r,
                "ratelimit_allowed_total",
                "Requests the rate limiter let through",
            ),
            limiter_limited: counter(&r, "ratelimit_limited_total", "Requests refused with 429"),
            limiter_keys: gauge(&r, "ratelimit_keys", "Client keys with a rate-limit bucket"),
            redis_up: gauge(
                &r,
                "redis_up",
                "1 when the shared store (REDIS_URL) answers, 0 when it fails or is not connected yet",
            ),
            redis_errors: counter(
                &r,
                "redis_errors_total",
                "Calls to the shared store that failed or missed REDIS_TIMEOUT",
            ),
            limiter_unshared: counter(
                &r,
                "ratelimit_unshared_total",
                "Rate-limit decisions made without the shared store, by RATE_LIMIT_FAIL_MODE",
            ),
            registry: r,
            refresh: Mutex::new(()),
            hot,
        }
    }

    /// Copies the counters that live elsewhere (cache, pool, limiter, upstream) into the registry.
    fn refresh(&self, state: &GatewayState) {
        let _one_at_a_time = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        self.hot.refresh();
        self.in_flight_series.set(self.in_flight.get());
        let cache = state.cache_stats();
        catch_up(&self.cache_hits, cache.hits);
        catch_up(&self.cache_misses, cache.misses);
        self.cache_entries.set(cache.entries as i64);
        self.cache_bytes.set(cache.bytes as i64);
        let up = state.upstream().stats();
        catch_up(
            &self.pool_opened,
            up.connections.opened.load(Ordering::Relaxed),
        );
        self.pool_open
            .set(up.connections.open.load(Ordering::Relaxed) as i64);
        catch_up(&self.upstream_requests, up.requests.load(Ordering::Relaxed));
        catch_up(&self.retries, up.retries.load(Ordering::Relaxed));
        let lim = state.limiter_stats();
        catch_up(&self.limiter_allowed, lim.allowed);
        catch_up(&self.limiter_limited, lim.limited);
        self.limiter_keys.set(lim.keys as i64);
        if let Some(shared) = state.shared() {
            let up = shared.state() == scira2api_redis::RedisState::Up;
            self.redis_up.set(i64::from(up));
            catch_up(&self.redis_errors, shared.errors());
            catch_up(&self.limiter_unshared, shared.unshared_decisions());
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn prometheus_text(&self, state: &GatewayState) -> String {
        self.refresh(state);
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        let mut text = String::from_utf8(out).unwrap_or_default();
        deployments_text(state, &mut text);
        text
    }

    /// Per-deployment state and counters (model groups of a `CONFIG_FILE`).
    pub fn deployments_json(state: &GatewayState) -> Value {
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        for g in state.router().groups() {
            for d in &g.deployments {
                let st = d.state(now);
                let latency_ms = mean_ms(
                    d.latency_micros.load(Ordering::Relaxed),
                    d.timed.load(Ordering::Relaxed),
                );
                out.push(serde_json::json!({
                    "group": g.name,
                    "provider": d.instance_name,
                    "model": d.model,
                    "weight": d.weight,
                    "order": d.order,
                    "state": st.as_str(),
                    "resting_for_s": match st { scira2api_models::HealthState::Resting(d) => d.as_secs_f64(), _ => 0.0 },
                    "in_flight": d.in_flight(),
                    "requests": d.requests.load(std::sync::atomic::Ordering::Relaxed),
                    "failures": d.failures.load(std::sync::atomic::Ordering::Relaxed),
                    "latency_ms_avg": latency_ms,
                }));
            }
        }
        Value::Array(out)
    }

    /// One reading of the cumulative counters the status history is made from: API routes
    /// (`/v1/...`) only, so that the page's own polling and health checks are not counted.
    pub fn totals(&self, state: &GatewayState) -> crate::history::Totals {
        self.refresh(state);
        let api = |route: &str| route.starts_with("/v1/");
        let mut t = crate::history::Totals::default();
        for m in self.requests.collect().iter().flat_map(|f| f.get_metric()) {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map_or("", |l| l.value())
            };
            if !api(label("route")) {
                continue;
            }
            let v = m.get_counter().get_value();
            t.requests += v;
            match label("status").as_bytes().first() {
                Some(b'4') => t.client_errors += v,
                Some(b'5') => t.server_errors += v,
                _ => {}
            }
        }
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for m in self.duration.collect().iter().flat_map(|f| f.get_metric()) {
            if !m
                .get_label()
                .iter()
                .any(|l| l.name() == "route" && api(l.value()))
            {
                continue;
            }
            let h = m.get_histogram();
            t.duration_count += h.get_sample_count() as f64;
            for (i, b) in h.get_bucket().iter().enumerate() {
                match buckets.get_mut(i) {
                    Some(slot) => slot.1 += b.cumulative_count() as f64,
                    None => buckets.push((b.upper_bound(), b.cumulative_count() as f64)),
                }
            }
        }
        // The implicit +Inf bucket holds every sample.
        buckets.push((f64::INFINITY, t.duration_count));
        t.duration_buckets = buckets;
        t.limited = self.limiter_limited.get() as f64;
        t.cache_hits = self.cache_hits.get() as f64;
        t.cache_misses = self.cache_misses.get() as f64;
        t.tokens = self
            .tokens
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value())
            .sum();
        t.streams_active = self.streams_active.get();
        t.in_flight = self.in_flight.get();
        (t.cpu_seconds, t.rss_bytes) = own_usage().unwrap_or_default();
        t
    }

    /// Each provider instance's name, kind, host (never its userinfo) and state: what the
    /// public `/health` shows (no counters, nothing collected from the registry).
    pub fn provider_states_json(state: &GatewayState) -> Value {
        let now = std::time::Instant::now();
        let providers = state.instances().map(|(name, upstream)| {
            let (word, _) = instance_state(&deployments_of(state, name), now);
            json!({
                "name": name,
                "kind": upstream.settings().provider.as_str(),
                "host": upstream.host(),
                "state": word,
            })
        });
        Value::Array(providers.collect())
    }

    /// Each provider instance: kind, host (never its userinfo), state (see
    /// [`instance_state`]) and the rest left, with the requests, failures and average latency
    /// of its deployments (or of the whole gateway when it is the only instance and there are
    /// no model groups).
    pub fn providers_json(state: &GatewayState) -> Value {
        let now = std::time::Instant::now();
        let only = state.instances().count() == 1 && state.router().groups().is_empty();
        let providers = state.instances().map(|(name, upstream)| {
            let deps = deployments_of(state, name);
            let (word, rest) = instance_state(&deps, now);
            let (failures, latency) = if !deps.is_empty() {
                let sum = |f: fn(&scira2api_models::Deployment) -> u64| -> u64 {
                    deps.iter().map(|d| f(d)).sum()
                };
                (
                    json!(sum(|d| d.failures.load(Ordering::Relaxed))),
                    json!(mean_ms(
                        sum(|d| d.latency_micros.load(Ordering::Relaxed)),
                        sum(|d| d.timed.load(Ordering::Relaxed)),
                    )),
                )
            } else if only {
                (
                    json!(upstream_errors(state)),
                    json!(upstream_mean_ms(state)),
                )
            } else {
                (Value::Null, Value::Null)
            };
            json!({
                "name": name,
                "kind": upstream.settings().provider.as_str(),
                "host": upstream.host(),
                "state": word,
                "resting_for_s": rest,
                "requests": upstream.stats().requests.load(Ordering::Relaxed),
                "failures": failures,
                "latency_ms_avg": latency,
                "in_flight": deps.iter().map(|d| d.in_flight()).sum::<usize>(),
                "deployments": deps.len(),
            })
        });
        Value::Array(providers.collect())
    }

    /// The JSON view of `/metrics`.
    pub fn json(&self, state: &GatewayState) -> Value {
        self.refresh(state);
        let families: BTreeMap<String, MetricFamily> = self
            .registry
            .gather()
            .into_iter()
            .map(|f| (f.name().trim_start_matches("scira2api_").to_owned(), f))
            .collect();
        let scalar = |name: &str| -> f64 {
            families.get(name).map_or(0.0, |f| {
                f.get_metric()
                    .iter()
                    .map(|m| match f.get_field_type() {
                        MetricType::COUNTER => m.get_counter().get_value(),
                        MetricType::GAUGE => m.get_gauge().get_value(),
                        _ => 0.0,
                    })
                    .sum()
            })
        };
        let labelled = |name: &str| -> Vec<(BTreeMap<String, String>, f64)> {
            families.get(name).map_or_else(Vec::new, |f| {
                f.get_metric()
                    .iter()
                    .map(|m| {
                        let labels = m
                            .get_label()
                            .iter()
                            .map(|l| (l.name().to_owned(), l.value().to_owned()))
                            .collect();
                        (labels, m.get_counter().get_value())
                    })
                    .collect()
            })
        };
        let requests = labelled("http_requests_total");
        let mut by_route: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        let (mut total, mut success, mut client_errors, mut server_errors) = (0.0, 0.0, 0.0, 0.0);
        for (labels, v) in &requests {
            let status = labels.get("status").cloned().unwrap_or_default();
            let route = labels.get("route").cloned().unwrap_or_default();
            total += v;
            match status.chars().next() {
                Some('2') | Some('3') => success += v,
                Some('4') => client_errors += v,
                _ => server_errors += v,
            }
            by_route
                .entry(route)
                .or_default()
                .insert(status, json!(*v as u64));
        }
        let mut tokens_by_model: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        let (mut prompt, mut completion) = (0.0, 0.0);
        for (labels, v) in labelled("tokens_total") {
            let kind = labels.get("kind").cloned().unwrap_or_default();
            if kind == "prompt" {
                prompt += v;
            } else {
                completion += v;
            }
            tokens_by_model
                .entry(labels.get("model").cloned().unwrap_or_default())
                .or_default()
                .insert(kind, json!(v as u64));
        }
        let by_label = |name: &str, label: &str| -> Map<String, Value> {
            labelled(name)
                .into_iter()
                .map(|(l, v)| (l.get(label).cloned().unwrap_or_default(), json!(v as u64)))
                .collect()
        };
        let histogram = |name: &str| -> Value {
            let Some(f) = families.get(name) else {
                return Value::Null;
            };
            let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
            let (mut count, mut sum) = (0u64, 0.0);
            for m in f.get_metric() {
                let h = m.get_histogram();
                count += h.get_sample_count();
                sum += h.get_sample_sum();
                for b in h.get_bucket() {
                    *buckets.entry(b.upper_bound().to_bits()).or_default() +=
                        b.cumulative_count() as f64;
                }
            }
            let mut bounds: Vec<(f64, f64)> = buckets
                .into_iter()
                .map(|(k, v)| (f64::from_bits(k), v))
                .collect();
            bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
            let q = |p: f64| quantile(&bounds, count, p) * 1000.0;
            json!({
                "count": count,
                "mean_ms": if count > 0 { sum / count as f64 * 1000.0 } else { 0.0 },
                "p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99),
            })
        };
        let cache_hits = scalar("cache_hits_total");
        let cache_misses = scalar("cache_misses_total");
        let opened = scalar("upstream_connections_opened_total");
        let upstream_requests = scalar("upstream_requests_total");
        json!({
            "uptime_seconds": state.uptime().as_secs(),
            "uptime": humantime::format_duration(Duration::from_secs(state.uptime().as_secs())).to_string(),
            "start_time": humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(state.start_unix())).to_string(),
            "version": env!("CARGO_PKG_VERSION"),
            "provider": state.config().provider().as_str(),
            "process": {
                "rss_bytes": scalar("process_resident_memory_bytes") as u64,
                "virtual_memory_bytes": scalar("process_virtual_memory_bytes") as u64,
                "cpu_seconds": own_usage().map_or_else(|| scalar("process_cpu_seconds_total"), |u| u.0),
                "threads": scalar("process_threads") as u64,
                "open_fds": scalar("process_open_fds") as u64,
            },
            "requests": {
                "total": total as u64,
                "success": success as u64,
                "client_errors": client_errors as u64,
                "server_errors": server_errors as u64,
                "upstream_errors": scalar("upstream_errors_total") as u64,
                "in_flight": scalar("http_requests_in_flight") as i64,
                "by_route": by_route,
            },
            "latency": {
                "total": histogram("request_duration_seconds"),
                "gateway_overhead": histogram("gateway_overhead_seconds"),
                "upstream": histogram("upstream_duration_seconds"),
            },
            "streams": {
                "active": scalar("streams_active") as i64,
                "completed": scalar("streams_completed_total") as u64,
                "cut": scalar("streams_cut_total") as u64,
                "cut_by_reason": by_label("streams_cut_total", "reason"),
            },
            "tokens": {
                "prompt": prompt as u64,
                "completion": completion as u64,
                "total": (prompt + completion) as u64,
                "by_model": tokens_by_model,
                "usage_source": by_label("usage_total", "source"),
            },
            "cache": {
                "enabled": state.config().cache.enabled,
                "hits": cache_hits as u64,
                "misses": cache_misses as u64,
                "entries": scalar("cache_entries") as u64,
                "weight_bytes": scalar("cache_weight_bytes") as u64,
                "hit_ratio": if cache_hits + cache_misses > 0.0 { cache_hits / (cache_hits + cache_misses) } else { 0.0 },
            },
            "connection_pool": {
                "enabled": state.config().upstream.pool.enabled,
                "lean_http1": state.config().upstream.lean_http1,
                "open": scalar("upstream_connections_open") as u64,
                "created": opened as u64,
                "upstream_requests": upstream_requests as u64,
                "reused": (upstream_requests - opened).max(0.0) as u64,
            },
            "rate_limiter": {
                "enabled": state.config().limiter.enabled,
                "allowed": scalar("ratelimit_allowed_total") as u64,
                "limited": scalar("ratelimit_limited_total") as u64,
                "keys_tracked": scalar("ratelimit_keys") as u64,
                "store": if state.shared().is_some() { "redis" } else { "memory" },
                "unshared_decisions": scalar("ratelimit_unshared_total") as u64,
            },
            "redis": state.shared().map(|s| serde_json::json!({
                "state": s.state().as_str(),
                "fail_mode": s.fail_mode().as_str(),
                "errors": scalar("redis_errors_total") as u64,
            })),
            "retries": scalar("upstream_retries_total") as u64,
            "upstream_errors_by_kind": by_label("upstream_errors_total", "code"),
        })
    }
}

/// CPU time used by this process (user + system) in seconds with tick precision (the process
/// collector's own counter has whole seconds only), and its resident memory in bytes: one read
/// of `/proc/self/stat`.
#[cfg(target_os = "linux")]
fn own_usage() -> Option<(f64, u64)> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    Some((
        (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64,
        stat.rss * procfs::page_size(),
    ))
}

#[cfg(not(target_os = "linux"))]
fn own_usage() -> Option<(f64, u64)> {
    None
}

/// The deployments of every group that `instance` serves.
fn deployments_of<'a>(
    state: &'a GatewayState,
    instance: &str,
) -> Vec<&'a std::sync::Arc<scira2api_models::Deployment>> {
    state
        .router()
        .groups()
        .iter()
        .flat_map(|g| g.deployments.iter())
        .filter(|d| d.instance_name == instance)
        .collect()
}

/// An instance's state from its deployments': `resting` (with the shortest rest left) when
/// every one rests, `probing` when one probes, else `healthy` (also with none).
fn instance_state(
    deps: &[&std::sync::Arc<scira2api_models::Deployment>],
    now: std::time::Instant,
) -> (&'static str, f64) {
    use scira2api_models::HealthState;
    let states: Vec<HealthState> = deps.iter().map(|d| d.state(now)).collect();
    let rests = states.iter().filter_map(|s| match s {
        HealthState::Resting(d) => Some(d.as_secs_f64()),
        _ => None,
    });
    if !states.is_empty() && states.iter().all(|s| matches!(s, HealthState::Resting(_))) {
        ("resting", rests.fold(f64::INFINITY, f64::min))
    } else if states.iter().any(|s| matches!(s, HealthState::Probing)) {
        ("probing", 0.0)
    } else {
        ("healthy", 0.0)
    }
}

/// An average in milliseconds from a sum of microseconds over `n` timings (0 with none).
fn mean_ms(micros: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        micros as f64 / n as f64 / 1000.0
    }
}

/// Upstream failures of the whole gateway (what a lone instance has failed).
fn upstream_errors(state: &GatewayState) -> u64 {
    let m = state.metrics();
    m.upstream_errors
        .collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// Mean upstream time of the whole gateway, milliseconds (what a lone instance took).
fn upstream_mean_ms(state: &GatewayState) -> f64 {
    let h = &state.metrics().upstream_time;
    let n = h.sample_count();
    if n == 0 {
        0.0
    } else {
        h.sample_sum() / n as f64 * 1000.0
    }
}

/// The `p` quantile from cumulative histogram buckets, interpolated linearly inside a bucket.
pub(crate) fn quantile(bounds: &[(f64, f64)], count: u64, p: f64) -> f64 {
    if count == 0 {
        return 0.0;
    }
    let rank = p * count as f64;
    let mut prev_bound = 0.0;
    let mut prev_count = 0.0;
    for &(bound, cum) in bounds {
        if cum >= rank {
            if !bound.is_finite() {
                return prev_bound;
            }
            let inside = cum - prev_count;
            let frac = if inside > 0.0 {
                (rank - prev_count) / inside
            } else {
                1.0
            };
            return prev_bound + (bound - prev_bound) * frac;
        }
        prev_bound = bound;
        prev_count = cum;
    }
    prev_bound
}

/// Appends the per-deployment series to a Prometheus text exposition: state (0 healthy,
/// 1 probing, 2 resting), requests and failures, labelled by group, provider and model.
fn deployments_text(state: &GatewayState, out: &mut String) {
    use std::fmt::Write;
    use std::sync::atomic::Ordering;
    let groups = state.router().groups();
    if groups.is_empty() {
        return;
    }
    let now = std::time::Instant::now();
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    type Value<'a> = &'a dyn Fn(&scira2api_models::Deployment) -> f64;
    // One family: its samples are `name` + each suffix (a summary has `_sum` and `_count`).
    let family = |out: &mut String,
                  name: &str,
                  kind: &str,
                  help: &str,
                  samples: &[(&str, Value)]| {
        let _ = writeln!(out, "# HELP scira2api_{name} {help}");
        let _ = writeln!(out, "# TYPE scira2api_{name} {kind}");
        for g in groups {
            for d in &g.deployments {
                for (suffix, value) in samples {
                    let _ = writeln!(
                        out,
                        "scira2api_{name}{suffix}{{group=\"{}\",provider=\"{}\",model=\"{}\"}} {}",
                        esc(&g.name),
                        esc(&d.instance_name),
                        esc(&d.model),
                        value(d)
                    );
                }
            }
        }
    };
    let series = |out: &mut String, name: &str, kind: &str, help: &str, value: Value| {
        family(out, name, kind, help, &[("", value)]);
    };
    series(
        out,
        "deployment_state",
        "gauge",
        "Deployment state: 0 healthy, 1 probing, 2 resting",
        &|d| match d.state(now) {
            scira2api_models::HealthState::Healthy => 0.0,
            scira2api_models::HealthState::Probing => 1.0,
            scira2api_models::HealthState::Resting(_) => 2.0,
        },
    );
    series(
        out,
        "deployment_requests_total",
        "counter",
        "Requests sent to a deployment",
        &|d| d.requests.load(Ordering::Relaxed) as f64,
    );
    series(
        out,
        "deployment_failures_total",
        "counter",
        "Failed requests of a deployment",
        &|d| d.failures.load(Ordering::Relaxed) as f64,
    );
    family(
        out,
        "deployment_latency_seconds",
        "summary",
        "Time from choosing a deployment to its response head or failure",
        &[
            ("_sum", &|d| {
                d.latency_micros.load(Ordering::Relaxed) as f64 / 1e6
            }),
            ("_count", &|d| d.timed.load(Ordering::Relaxed) as f64),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let b = [
            (0.001, 50.0),
            (0.01, 90.0),
            (0.1, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(&b, 100, 0.5) - 0.001).abs() < 1e-12);
        assert!((quantile(&b, 100, 0.9) - 0.01).abs() < 1e-12);
        assert!((quantile(&b, 100, 0.7) - 0.0055).abs() < 1e-9);
        assert_eq!(quantile(&b, 0, 0.5), 0.0);
    }
}
