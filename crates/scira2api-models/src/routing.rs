//! Model routing: an external model name maps to a *group* of deployments — each a provider
//! instance serving an internal model, with a weight, an order and an optional requests-per-minute
//! budget — plus fallback groups. Picking is pure logic over each deployment's health: no I/O,
//! so it is tested here with a clock passed in.
//!
//! The rules (LiteLLM's meaning of its settings, so a LiteLLM `config.yaml` behaves as its author
//! expects):
//! - among the *available* deployments of a group with the lowest `order`, pick by weight
//!   (`simple-shuffle`, the default) or by fewest requests in flight (`least-busy`);
//! - a deployment over its `rpm` in the current minute is skipped, not queued;
//! - a deployment whose failures within a minute exceed `allowed_fails` rests for
//!   `cooldown_time`; a 429 rests it at once for its `Retry-After` (or `cooldown_time`); the
//!   longer rest wins;
//! - after a rest, one probe request is let through (half-open); its success makes the
//!   deployment healthy again, its failure starts a new rest.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a deployment is chosen among the available ones of the lowest order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Weighted random (LiteLLM's `simple-shuffle`).
    #[default]
    SimpleShuffle,
    /// Fewest requests in flight (LiteLLM's `least-busy`).
    LeastBusy,
}

impl Strategy {
    /// LiteLLM's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::SimpleShuffle => "simple-shuffle",
            Strategy::LeastBusy => "least-busy",
        }
    }
}

/// When a deployment rests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CooldownPolicy {
    /// Failures tolerated within a minute; one more rests the deployment (LiteLLM's
    /// `allowed_fails`, default 3).
    pub allowed_fails: u32,
    /// How long a deployment rests (LiteLLM's `cooldown_time`, default 5 s).
    pub cooldown: Duration,
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        CooldownPolicy {
            allowed_fails: 3,
            cooldown: Duration::from_secs(5),
        }
    }
}

/// A deployment's state, as shown in `/metrics` and `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Takes traffic.
    Healthy,
    /// Rests for this much longer.
    Resting(Duration),
    /// The rest is over; one probe request decides.
    Probing,
}

impl HealthState {
    /// `healthy`, `resting` or `probing`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Resting(_) => "resting",
            HealthState::Probing => "probing",
        }
    }
}

#[derive(Debug, Default)]
struct Health {
    /// Failures within the last minute.
    fails: VecDeque<Instant>,
    resting_until: Option<Instant>,
    /// A probe request is in flight (half-open).
    probing: bool,
    /// The current minute's start and requests, for `rpm`.
    window: Option<(Instant, u64)>,
    /// The current minute's start and tokens used, for `tpm`.
    tokens: Option<(Instant, u64)>,
}

/// One provider instance serving one internal model for a group.
#[derive(Debug)]
pub struct Deployment {
    /// Index of the provider instance (in the gateway's list).
    pub instance: usize,
    /// The provider instance's name (for headers, logs and metrics).
    pub instance_name: String,
    /// The model name the instance knows.
    pub model: String,
    /// Relative share of traffic among deployments of the same order (at least 1).
    pub weight: u32,
    /// Lower orders are tried first; higher ones only when no lower one is available.
    pub order: u32,
    /// Most requests per minute, if limited.
    pub rpm: Option<u64>,
    /// Most tokens per minute, if limited: once the answers of the current minute used that
    /// many, the deployment is skipped until the minute is over.
    pub tpm: Option<u64>,
    health: Mutex<Health>,
    in_flight: AtomicUsize,
    /// Requests and failures, for metrics.
    pub requests: AtomicU64,
    /// Failed requests, for metrics.
    pub failures: AtomicU64,
    /// Time from pick to outcome (the response head, or the failure) of reported requests,
    /// in microseconds, and how many were timed: latency for metrics.
    pub latency_micros: AtomicU64,
    /// Requests whose latency is in `latency_micros`.
    pub timed: AtomicU64,
    /// Rests this replica started (not those learnt from others): what a shared board
    /// publishes when it changes.
    rests_started: AtomicU64,
}

impl Deployment {
    /// A healthy deployment.
    pub fn new(instance: usize, instance_name: &str, model: &str) -> Deployment {
        Deployment {
            instance,
            instance_name: instance_name.to_owned(),
            model: model.to_owned(),
            weight: 1,
            order: 0,
            rpm: None,
            tpm: None,
            health: Mutex::new(Health::default()),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency_micros: AtomicU64::new(0),
            timed: AtomicU64::new(0),
            rests_started: AtomicU64::new(0),
        }
    }

    /// How many rests this replica has started (a shared board publishes each new one).
    pub fn rests_started(&self) -> u64 {
        self.rests_started.load(Ordering::Relaxed)
    }

    /// Rests for `rest` from `now` because another replica rested it (a rest only grows; this
    /// one is not counted in [`Deployment::rests_started`], so it is not published back).
    pub fn rest_from_peer(&self, rest: Duration, now: Instant) {
        let until = now + rest;
        let mut h = self.lock();
        if h.resting_until.is_some_and(|t| t >= until) {
            return;
        }
        let was_resting = h.resting_until.is_some_and(|t| t > now);
        h.resting_until = Some(until);
        drop(h);
        if !was_resting {
            log::warn!(
                "deployment {}/{} rests for {:.1}s (another replica's cool-down)",
                self.instance_name,
                self.model,
                rest.as_secs_f64()
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The deployment's state at `now`.
    pub fn state(&self, now: Instant) -> HealthState {
        let h = self.lock();
        match h.resting_until {
            Some(t) if t > now => HealthState::Resting(t - now),
            Some(_) => HealthState::Probing,
            None => HealthState::Healthy,
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// When it can take a request again, if it cannot now (rest, probe in flight, rpm spent).
    fn blocked_until(&self, now: Instant) -> Option<Instant> {
        let h = self.lock();
        if let Some(t) = h.resting_until {
            if t > now {
                return Some(t);
            }
            if h.probing {
                // The probe's outcome decides; try again shortly.
                return Some(now + Duration::from_millis(100));
            }
        }
        let minute = Duration::from_secs(60);
        if let (Some(rpm), Some((start, n))) = (self.rpm, h.window) {
            if now.duration_since(start) < minute && n >= rpm {
                return Some(start + minute);
            }
        }
        if let (Some(tpm), Some((start, n))) = (self.tpm, h.tokens) {
            if now.duration_since(start) < minute && n >= tpm {
                return Some(start + minute);
            }
        }
        None
    }

    /// Counts the tokens an answer of this deployment used (prompt and completion), for `tpm`.
    pub fn record_tokens(&self, tokens: u64, now: Instant) {
        if self.tpm.is_none() {
            return;
        }
        let mut h = self.lock();
        h.tokens = Some(match h.tokens {
            Some((start, n)) if now.duration_since(start) < Duration::from_secs(60) => {
                (start, n + tokens)
            }
            _ => (now, tokens),
        });
    }

    /// Takes the deployment for one request, if it is available at `now`.
    fn acquire(self: &Arc<Self>, now: Instant) -> Option<Ticket> {
        let mut h = self.lock();
        let mut probe = false;
        if let Some(t) = h.resting_until {
            if t > now || h.probing {
                return None;
            }
            h.probing = true;
            probe = true;
        }
        if let Some(rpm) = self.rpm {
            let (start, n) = match h.window {
                Some((start, n)) if now.duration_since(start) < Duration::from_secs(60) => {
                    (start, n)
                }
                _ => (now, 0),
            };
            if n >= rpm {
                if probe {
                    h.probing = false;
                }
                return None;
            }
            h.window = Some((start, n + 1));
        }
        drop(h);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        Some(Ticket {
            deployment: self.clone(),
            probe,
            done: false,
            picked: now,
        })
    }

    fn report(&self, outcome: Outcome, probe: bool, policy: &CooldownPolicy, now: Instant) {
        let mut h = self.lock();
        if probe {
            h.probing = false;
        }
        let rest = match outcome {
            Outcome::Success => {
                if probe || h.resting_until.is_some_and(|t| t <= now) {
                    h.resting_until = None;
                    h.fails.clear();
                }
                return;
            }
            Outcome::Neutral => return,
            Outcome::RateLimited(wait) => Some(wait.unwrap_or(policy.cooldown)),
            Outcome::Failure => {
                h.fails.push_back(now);
                while h
                    .fails
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
                {
                    h.fails.pop_front();
                }
                (probe || h.fails.len() as u32 > policy.allowed_fails).then_some(policy.cooldown)
            }
        };
        if let Some(rest) = rest {
            let until = now + rest;
            h.resting_until = Some(h.resting_until.map_or(until, |t| t.max(until)));
            self.rests_started.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "deployment {}/{} rests for {:.1}s",
                self.instance_name,
                self.model,
                rest.as_secs_f64()
            );
        }
    }
}

/// How a request to a deployment went, for its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered.
    Success,
    /// A 429: rests at once, for the upstream's wait when it gave one.
    RateLimited(Option<Duration>),
    /// A failure a retry could fix (connection, timeout, 5xx): counts towards `allowed_fails`.
    Failure,
    /// Says nothing about the deployment (the client's own error, the client left).
    Neutral,
}

/// A deployment taken for one request; report how it went with [`Ticket::finish`]. Dropped
/// unreported (the client left), it counts as neutral.
#[derive(Debug)]
pub struct Ticket {
    deployment: Arc<Deployment>,
    probe: bool,
    done: bool,
    picked: Instant,
}

impl Ticket {
    /// The deployment.
    pub fn deployment(&self) -> &Arc<Deployment> {
        &self.deployment
    }

    /// Reports the outcome under `policy`.
    pub fn finish(mut self, outcome: Outcome, policy: &CooldownPolicy) {
        self.done = true;
        if outcome != Outcome::Success && outcome != Outcome::Neutral {
            self.deployment.failures.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        let micros = now.saturating_duration_since(self.picked).as_micros();
        let d = &self.deployment;
        d.latency_micros
            .fetch_add(u64::try_from(micros).unwrap_or(u64::MAX), Ordering::Relaxed);
        d.timed.fetch_add(1, Ordering::Relaxed);
        d.report(outcome, self.probe, policy, now);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.deployment.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.done && self.probe {
            self.deployment.lock().probing = false;
        }
    }
}

/// A group: the deployments behind one external model name, and where to go when none can
/// serve.
#[derive(Debug)]
pub struct Group {
    /// The external model name.
    pub name: String,
    /// Its deployments.
    pub deployments: Vec<Arc<Deployment>>,
    /// Other groups to try, in order, when every deployment here failed or rests.
    pub fallbacks: Vec<String>,
}

/// Every group, the strategy and the cool-down policy.
#[derive(Debug, Default)]
pub struct Router {
    groups: Vec<Group>,
    by_name: HashMap<String, usize>,
    /// How deployments are chosen.
    pub strategy: Strategy,
    /// When deployments rest.
    pub policy: CooldownPolicy,
}

/// Why no deployment could be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// The group asked for.
    pub group: String,
    /// The soonest a deployment of it (or of its fallbacks) can serve again.
    pub retry_after: Duration,
}

impl Router {
    /// A router over `groups` (a later group with the same name as an earlier one is ignored).
    pub fn new(groups: Vec<Group>, strategy: Strategy, policy: CooldownPolicy) -> Router {
        let mut r = Router {
            groups: Vec::new(),
            by_name: HashMap::new(),
            strategy,
            policy,
        };
        for g in groups {
            if !r.by_name.contains_key(&g.name) {
                r.by_name.insert(g.name.clone(), r.groups.len());
                r.groups.push(g);
            }
        }
        r
    }

    /// The group for a model name.
    pub fn group(&self, name: &str) -> Option<&Group> {
        if self.groups.is_empty() {
            // No CONFIG_FILE groups: no hashing on the hot path.
            return None;
        }
        self.by_name.get(name).map(|&i| &self.groups[i])
    }

    /// Every group, in configuration order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Deployments in the group and its fallbacks together.
    pub fn chain_size(&self, name: &str) -> usize {
        self.chain(name).iter().map(|g| g.deployments.len()).sum()
    }

    /// The group and its fallbacks, in the order they are tried (each once).
    pub fn chain<'a>(&'a self, name: &str) -> Vec<&'a Group> {
        let mut out: Vec<&Group> = Vec::new();
        let mut queue = vec![name.to_owned()];
        while let Some(n) = queue.first().cloned() {
            queue.remove(0);
            let Some(g) = self.group(&n) else { continue };
            if out.iter().any(|o| o.name == g.name) {
                continue;
            }
            out.push(g);
            queue.extend(g.fallbacks.iter().cloned());
        }
        out
    }

    /// Takes a deployment for a request to `name`: from the group, or, when none of its
    /// deployments is available (or all were `tried`), from its fallbacks in order. `unit` is a
    /// uniform random number in `[0, 1)` for the weighted pick. `Ok(None)` when `name` is not a
    /// group.
    pub fn pick(
        &self,
        name: &str,
        tried: &[*const Deployment],
        unit: f64,
        now: Instant,
    ) -> Result<Option<Ticket>, Unavailable> {
        let chain = self.chain(name);
        if chain.is_empty() {
            return Ok(None);
        }
        for g in &chain {
            let fresh: Vec<&Arc<Deployment>> = g
                .deployments
                .iter()
                .filter(|d| !tried.contains(&Arc::as_ptr(d)))
                .collect();
            if let Some(t) = self.pick_in(&fresh, unit, now) {
                return Ok(Some(t));
            }
        }
        // Everything was tried once: a deployment may be tried again while the attempt budget
        // lasts (a group of one retries its one deployment).
        for g in &chain {
            let all: Vec<&Arc<Deployment>> = g.deployments.iter().collect();
            if let Some(t) = self.pick_in(&all, unit, now) {
                return Ok(Some(t));
            }
        }
        let soonest = chain
            .iter()
            .flat_map(|g| g.deployments.iter())
            .filter_map(|d| d.blocked_until(now))
            .min()
            .map_or(self.policy.cooldown, |t| t.saturating_duration_since(now));
        Err(Unavailable {
            group: name.to_owned(),
            retry_after: soonest.max(Duration::from_secs(1)),
        })
    }

    fn pick_in(&self, candidates: &[&Arc<Deployment>], unit: f64, now: Instant) -> Option<Ticket> {
        let mut available: Vec<&Arc<Deployment>> = candidates
            .iter()
            .copied()
            .filter(|d| d.blocked_until(now).is_none())
            .collect();
        while !available.is_empty() {
            let order = available.iter().map(|d| d.order).min().unwrap_or(0);
            let tier: Vec<&Arc<Deployment>> = available
                .iter()
                .copied()
                .filter(|d| d.order == order)
                .collect();
            let chosen = match self.strategy {
                Strategy::LeastBusy => tier.iter().copied().min_by_key(|d| d.in_flight()),
                Strategy::SimpleShuffle => {
                    let total: u64 = tier.iter().map(|d| u64::from(d.weight.max(1))).sum();
                    let mut point = (unit.clamp(0.0, 0.999_999) * total as f64) as u64;
                    tier.iter().copied().find(|d| {
                        let w = u64::from(d.weight.max(1));
                        if point < w {
                            true
                        } else {
                            point -= w;
                            false
                        }
                    })
                }
            }?;
            if let Some(t) = chosen.acquire(now) {
                return Some(t);
            }
            // Taken by a concurrent request in the meantime (probe, rpm): try the others.
            available.retain(|d| !Arc::ptr_eq(d, chosen));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(i: usize, weight: u32, order: u32) -> Arc<Deployment> {
        let mut d = Deployment::new(i, &format!("p{i}"), "m");
        d.weight = weight;
        d.order = order;
        Arc::new(d)
    }

    fn router(groups: Vec<Group>) -> Router {
        Router::new(groups, Strategy::SimpleShuffle, CooldownPolicy::default())
    }

    fn group(name: &str, deployments: Vec<Arc<Deployment>>, fallbacks: &[&str]) -> Group {
        Group {
            name: name.to_owned(),
            deployments,
            fallbacks: fallbacks.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn pick(r: &Router, name: &str, unit: f64) -> usize {
        r.pick(name, &[], unit, Instant::now())
            .unwrap()
            .unwrap()
            .deployment()
            .instance
    }

    #[test]
    fn weights_split_traffic_and_order_comes_first() {
        let r = router(vec![group(
            "g",
            vec![dep(0, 1, 0), dep(1, 3, 0), dep(2, 9, 1)],
            &[],
        )]);
        let mut counts = [0; 3];
        for i in 0..400 {
            counts[pick(&r, "g", i as f64 / 400.0)] += 1;
        }
        assert_eq!(counts, [100, 300, 0]);
        assert!(r.pick("nope", &[], 0.5, Instant::now()).unwrap().is_none());
    }

    #[test]
    fn failures_rest_a_deployment_then_one_probe_decides() {
        let r = Router::new(
            vec![group("g", vec![dep(0, 1, 0), dep(1, 1, 1)], &[])],
            Strategy::SimpleShuffle,
            CooldownPolicy {
                allowed_fails: 1,
                cooldown: Duration::from_millis(50),
            },
        );
        for _ in 0..2 {
            let t = r.pick("g", &[], 0.0, Instant::now()).unwrap().unwrap();
            assert_eq!(t.deployment().instance, 0);
            t.finish(Outcome::Failure, &r.policy);
        }
        let d0 = &r.group("g").unwrap().deployments[0];
        assert!(matches!(d0.state(Instant::now()), HealthState::Resting(_)));
        assert_eq!(pick(&r, "g", 0.0), 1, "order 1 serves while order 0 rests");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(d0.state(Instant::now()), HealthState::Probing);
        let probe = r.pick("g", &[], 0.0, Instant::now()).unwrap().unwrap();
        assert_eq!(probe.deployment().instance, 0);
        // While the probe is out, the others serve.
        assert_eq!(pick(&r, "g", 0.0), 1);
        probe.finish(Outcome::Success, &r.policy);
        assert_eq!(d0.state(Instant::now()), HealthState::Healthy);
        assert_eq!(pick(&r, "g", 0.0), 0);
    }

    #[test]
    fn a_429_rests_at_once_for_its_wait() {
        let r = router(vec![
            group("g", vec![dep(0, 1, 0)], &["h"]),
            group("h", vec![dep(1, 1, 0)], &[]),
        ]);
        let t = r.pick("g", &[], 0.0, Instant::now()).unwrap().unwrap();
        t.finish(
            Outcome::RateLimited(Some(Duration::from_secs(30))),
            &r.policy,
        );
        assert_eq!(pick(&r, "g", 0.0), 1, "the fallback group serves");
        let d1 = r.group("h").unwrap().deployments[0].clone();
        let t = r.pick("h", &[], 0.0, Instant::now()).unwrap().unwrap();
        t.finish(Outcome::RateLimited(None), &r.policy);
        let e = r.pick("g", &[], 0.0, Instant::now()).unwrap_err();
        assert_eq!(e.group, "g");
        assert!(
            e.retry_after <= Duration::from_secs(5),
            "the soonest: {:?}",
            e.retry_after
        );
        assert!(matches!(d1.state(Instant::now()), HealthState::Resting(_)));
    }

    #[test]
    fn a_peers_rest_only_grows_and_is_not_published_back() {
        let r = router(vec![group("g", vec![dep(0, 1, 0), dep(1, 1, 1)], &[])]);
        let d0 = r.group("g").unwrap().deployments[0].clone();
        let now = Instant::now();
        d0.rest_from_peer(Duration::from_secs(30), now);
        assert_eq!(d0.rests_started(), 0, "learnt, not started here");
        assert_eq!(pick(&r, "g", 0.0), 1, "the resting one is skipped");
        d0.rest_from_peer(Duration::from_secs(1), now);
        assert!(matches!(d0.state(now), HealthState::Resting(d) if d > Duration::from_secs(20)));
        let t = r.pick("g", &[], 0.0, now).unwrap().unwrap();
        t.finish(
            Outcome::RateLimited(Some(Duration::from_secs(60))),
            &r.policy,
        );
        let d1 = r.group("g").unwrap().deployments[1].clone();
        assert_eq!(d1.rests_started(), 1, "a rest of its own is counted");
    }

    #[test]
    fn rpm_skips_a_deployment_for_the_rest_of_the_minute() {
        let mut d = Deployment::new(0, "p0", "m");
        d.rpm = Some(2);
        let r = router(vec![group("g", vec![Arc::new(d), dep(1, 1, 1)], &[])]);
        assert_eq!(pick(&r, "g", 0.0), 0);
        assert_eq!(pick(&r, "g", 0.0), 0);
        assert_eq!(pick(&r, "g", 0.0), 1, "over its rpm: skipped, not queued");
    }

    #[test]
    fn tpm_skips_a_deployment_whose_minute_is_spent() {
        let mut d = Deployment::new(0, "p0", "m");
        d.tpm = Some(100);
        let d = Arc::new(d);
        let r = router(vec![group("g", vec![d.clone(), dep(1, 1, 1)], &[])]);
        assert_eq!(pick(&r, "g", 0.0), 0);
        d.record_tokens(60, Instant::now());
        assert_eq!(pick(&r, "g", 0.0), 0, "60 of 100 used");
        d.record_tokens(60, Instant::now());
        assert_eq!(pick(&r, "g", 0.0), 1, "over its tpm: skipped");
    }

    #[test]
    fn tried_deployments_are_passed_over_then_retried() {
        let r = router(vec![group("g", vec![dep(0, 1, 0), dep(1, 1, 0)], &[])]);
        let first = r.pick("g", &[], 0.0, Instant::now()).unwrap().unwrap();
        let tried = [Arc::as_ptr(first.deployment())];
        let second = r.pick("g", &tried, 0.0, Instant::now()).unwrap().unwrap();
        assert_ne!(first.deployment().instance, second.deployment().instance);
        let both = [tried[0], Arc::as_ptr(second.deployment())];
        assert!(r.pick("g", &both, 0.0, Instant::now()).unwrap().is_some());
    }

    #[test]
    fn least_busy_takes_the_idlest() {
        let r = Router::new(
            vec![group("g", vec![dep(0, 1, 0), dep(1, 1, 0)], &[])],
            Strategy::LeastBusy,
            CooldownPolicy::default(),
        );
        let a = r.pick("g", &[], 0.0, Instant::now()).unwrap().unwrap();
        let b = r.pick("g", &[], 0.0, Instant::now()).unwrap().unwrap();
        assert_ne!(a.deployment().instance, b.deployment().instance);
    }
}
