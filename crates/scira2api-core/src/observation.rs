//! One record per request, completed once.
//!
//! The HTTP layer opens an [`Observation`] when a request arrives and shares it (an `Rc`: a
//! request lives on one worker) with whoever learns something about the request: the handler
//! (model, stream), the gateway (attempts, upstream time, cache, provider, usage), the observed
//! stream (how it ended, its usage). The record is completed when its last holder lets it go —
//! after the response, or the stream, is done — and completing it writes the request metrics
//! and the one access-log line. Being done in `Drop`, that happens exactly once, however the
//! request ends (answered, failed, client gone, stream cut), with no callback between layers.

use crate::gateway::GatewayState;
use crate::outcome::{CacheStatus, StreamOutcome, UsageSource};
use log::info;
use scira2api_types::{Usage, log_safe};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What is known about a request so far.
#[derive(Default)]
struct Facts {
    status: u16,
    model: Option<String>,
    stream: bool,
    cache: Option<CacheStatus>,
    upstream: Duration,
    attempts: u32,
    provider: Option<Arc<str>>,
    usage: Option<(u64, u64, UsageSource)>,
    ended: Option<StreamOutcome>,
    /// The name of the client key's policy (never the key).
    client: Option<Arc<str>>,
}

/// One request's record (see the module docs).
pub struct Observation {
    state: Arc<GatewayState>,
    id: Arc<str>,
    start: Instant,
    /// The route's metric label.
    route: &'static str,
    /// Whether the route is the chat route (its 200s are counted per thread).
    hot: bool,
    /// Method and path, kept only when an access line will be written.
    line: Option<(String, String)>,
    facts: RefCell<Facts>,
}

impl Observation {
    /// Opens the record of a request with id `id`, started at `start`, on the route labelled
    /// `route`.
    pub fn open(
        state: Arc<GatewayState>,
        id: Arc<str>,
        start: Instant,
        (method, path): (&str, &str),
        route: &'static str,
    ) -> Rc<Observation> {
        let line = access_log_enabled().then(|| (method.to_owned(), path.to_owned()));
        Rc::new(Observation {
            state,
            id,
            start,
            route,
            hot: route == crate::metrics::CHAT_ROUTE,
            line,
            facts: RefCell::new(Facts::default()),
        })
    }

    /// Names the client (a key policy's `name`) in the access line.
    pub fn client(&self, name: Arc<str>) {
        self.facts.borrow_mut().client = Some(name);
    }

    /// The request id.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// When the request arrived.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The response status (set by the HTTP layer once the head is known).
    pub fn set_status(&self, status: u16) {
        self.facts.borrow_mut().status = status;
    }

    /// A chat request for `model` (streamed or not).
    pub fn chat(&self, model: &str, stream: bool) {
        let mut f = self.facts.borrow_mut();
        if self.line.is_some() {
            f.model = Some(model.to_owned());
        }
        f.stream = stream;
    }

    /// How the stream ended, when the answer could not even start (the head was committed
    /// early and the call failed).
    pub fn stream_failed(&self, code: &str) {
        self.facts.borrow_mut().ended = Some(StreamOutcome::Failed(code.to_owned()));
    }

    /// The upstream call is over: its attempts and the time spent on them.
    pub(crate) fn called(&self, attempts: u32, upstream: Duration) {
        let mut f = self.facts.borrow_mut();
        f.attempts = attempts;
        f.upstream = upstream;
    }

    /// The call answered: from the cache or not, which instance, and a non-stream usage.
    pub(crate) fn answered(
        &self,
        cache: CacheStatus,
        provider: &Arc<str>,
        usage: Option<(Usage, UsageSource)>,
    ) {
        let mut f = self.facts.borrow_mut();
        f.cache = Some(cache);
        f.provider = Some(provider.clone());
        if let Some((u, s)) = usage {
            f.usage = Some((u.prompt_tokens, u.completion_tokens, s));
        }
    }

    /// A streamed answer ended.
    pub(crate) fn stream_ended(&self, outcome: StreamOutcome, usage: Option<(Usage, UsageSource)>) {
        let mut f = self.facts.borrow_mut();
        f.ended = Some(outcome);
        if let Some((u, s)) = usage {
            f.usage = Some((u.prompt_tokens, u.completion_tokens, s));
        }
    }
}

/// Whether access-log lines are written at all (so their facts are not gathered in vain).
pub fn access_log_enabled() -> bool {
    log::log_enabled!(target: "scira2api::access", log::Level::Info)
}

impl Drop for Observation {
    fn drop(&mut self) {
        let total = self.start.elapsed();
        let f = self.facts.get_mut();
        let m = self.state.metrics();
        if self.hot && f.status == 200 {
            m.hot.chat_ok.inc();
        } else {
            let status = f.status.to_string();
            m.requests
                .with_label_values(&[self.route, status.as_str()])
                .inc();
        }
        m.duration.observe(self.route, total.as_secs_f64());
        let Some((method, path)) = &self.line else {
            return;
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (id, status) = (&self.id, f.status);
        let Some(model) = &f.model else {
            info!(target: "scira2api::access", "{method} {} {status} request_id={id} total_ms={:.1}", log_safe(path), ms(total));
            return;
        };
        let tokens = f
            .usage
            .map(|(p, k, s)| format!("{p}+{k} ({})", s.as_str()))
            .unwrap_or_else(|| "-".to_owned());
        let client = f
            .client
            .as_deref()
            .map(|c| format!(" key={}", log_safe(c)))
            .unwrap_or_default();
        let ended = match &f.ended {
            None | Some(StreamOutcome::Completed) => String::new(),
            Some(StreamOutcome::Failed(code)) => format!(" stream=cut:{}", log_safe(code)),
            Some(StreamOutcome::ClientGone) => " stream=client_gone".to_owned(),
        };
        info!(
            target: "scira2api::access",
            "{method} {} {status} request_id={id} model={} stream={} tokens={tokens} upstream_ms={:.1} total_ms={:.1} cache={} attempts={} retries={} provider={}{client}{ended}",
            log_safe(path),
            log_safe(model),
            f.stream,
            ms(f.upstream),
            ms(total),
            f.cache.map_or("BYPASS", CacheStatus::as_str),
            f.attempts,
            f.attempts.saturating_sub(1),
            f.provider.as_deref().unwrap_or("-"),
        );
    }
}
