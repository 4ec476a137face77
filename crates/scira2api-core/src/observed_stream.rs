//! Watching a stream on its way to the client: its usage (from the upstream's usage chunk, or
//! estimated at the end), whether it completed, and — when the cache is on — its answer.
//!
//! Per event the work is a byte scan for the usage chunk and a reference-counted clone of the
//! frame; parsing happens once, at the end, and only when the answer is needed (to cache it, or
//! to estimate usage the upstream did not report).

use crate::GatewayState;
use crate::observation::Observation;
use crate::outcome::{StreamOutcome, UsageSource};
use bytes::Bytes;
use futures_util::Stream;
use log::debug;
use scira2api_cache::{CacheKey, ResponseStore};
use scira2api_types::{
    Answer, AnswerBuilder, ChatRequest, Error, RawObject, Usage, field_starts_with,
};
use scira2api_upstream::FrameStream;
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

/// Most frame bytes one stream feeds into its rebuilt answer (for the cache and a usage
/// estimate). A longer answer is passed on in full, but not cached.
pub const STREAM_KEEP_MAX: usize = 1 << 20;

/// Most frame bytes all streams together feed into rebuilt answers at once.
pub const KEEP_GLOBAL_MAX: usize = 16 << 20;

/// The gateway-wide account of memory held by streams' rebuilt answers.
#[derive(Debug, Default)]
pub struct StreamMemory {
    held: AtomicUsize,
}

impl StreamMemory {
    /// Takes `n` bytes from the global allowance; `false` (and nothing taken) when it is spent.
    pub fn reserve(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + n <= KEEP_GLOBAL_MAX).then_some(held + n)
            })
            .is_ok()
    }

    /// Gives `n` bytes back.
    pub fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// The JSON of an SSE frame (`data: {...}\n\n`).
fn frame_json(frame: &[u8]) -> &[u8] {
    frame
        .strip_prefix(b"data: ")
        .unwrap_or(frame)
        .trim_ascii_end()
}

/// The usage of a usage chunk (`"usage": {...}`), if this frame is one.
fn usage_of(frame: &Bytes) -> Option<Usage> {
    if !field_starts_with(frame, "usage", b'{') {
        return None;
    }
    let json = frame.slice_ref(frame_json(frame));
    let obj = RawObject::parse(json).ok()?;
    obj.get::<Usage>("usage")?.ok()
}

/// A chunk without the `"usage":null` the forced `include_usage` added, when it is the chunk's
/// last field (as OpenAI and most compatible servers write it); otherwise the chunk unchanged.
fn without_null_usage(frame: Bytes) -> Bytes {
    const TAIL: &[u8] = b",\"usage\":null}\n\n";
    if !frame.ends_with(TAIL) {
        return frame;
    }
    let mut out = Vec::with_capacity(frame.len());
    out.extend_from_slice(&frame[..frame.len() - TAIL.len()]);
    out.extend_from_slice(b"}\n\n");
    Bytes::from(out)
}

/// The stream the client gets, observed.
pub(crate) struct ObservedStream {
    frames: FrameStream,
    state: Arc<GatewayState>,
    req: ChatRequest,
    internal_model: String,
    /// Drop the usage chunk (the client did not ask for it).
    strip_usage: bool,
    /// Where to keep a complete answer.
    cache: Option<(Arc<dyn ResponseStore>, CacheKey)>,
    /// Whether this stream is a cache replay (its tokens were not spent now).
    replay: bool,
    /// The request's record, told how the stream ended.
    observation: Option<Rc<Observation>>,
    /// The routed deployment that answered, charged its tokens (for `tpm`) when usage is known.
    deployment: Option<Arc<scira2api_models::Deployment>>,
    /// The token reservations (the key's, the deployment's), settled when the stream ends.
    tokens: Vec<crate::tpm::TokenReservation>,
    /// The answer rebuilt frame by frame (text only, never the frames), while it is needed and
    /// within [`STREAM_KEEP_MAX`] and the gateway-wide [`KEEP_GLOBAL_MAX`].
    builder: Option<AnswerBuilder>,
    /// The first frame (for the id and time of an estimated usage chunk).
    first: Option<Bytes>,
    /// Frame bytes fed to `builder`, and all frame bytes seen.
    kept_bytes: usize,
    seen_bytes: usize,
    /// The answer outgrew what is kept: it is not cached, and an estimate is scaled up.
    overflow: bool,
    usage: Option<Usage>,
    /// Whether `usage` (of a replay) was an estimate.
    usage_estimated: bool,
    tail: Option<Bytes>,
    finished: bool,
    /// The upstream stream has ended; what is left is settling usage.
    ended: bool,
    answer: Option<Answer>,
    estimating: Option<Pin<Box<actix_rt::task::JoinHandle<Usage>>>>,
}

impl ObservedStream {
    /// A replay of a cached answer: its usage (the stored figure, an estimate when `estimated`)
    /// is known from the start, its usage chunk was rendered as asked, and its tokens were not
    /// spent now.
    pub(crate) fn replaying(mut self, usage: Option<Usage>, estimated: bool) -> Self {
        self.replay = true;
        self.strip_usage = false;
        self.usage = usage;
        self.usage_estimated = estimated;
        self
    }

    /// Stores the complete answer under this key when the stream ends well.
    pub(crate) fn caching(mut self, cache: Option<(Arc<dyn ResponseStore>, CacheKey)>) -> Self {
        self.cache = cache;
        self
    }

    /// Settles the request's token reservation (a key's `tpm`) when the stream ends: with its
    /// usage, or for a stream that broke, with an estimate of what it produced.
    pub(crate) fn reserving(mut self, r: Vec<crate::tpm::TokenReservation>) -> Self {
        self.tokens = r;
        self
    }

    /// Charges the stream's tokens to this deployment when it ends (a routed answer's `tpm`).
    pub(crate) fn charging(mut self, d: Option<Arc<scira2api_models::Deployment>>) -> Self {
        self.deployment = d;
        self
    }

    /// Tells the request's record how the stream ended, however it ends.
    pub(crate) fn observed_by(mut self, observation: Option<Rc<Observation>>) -> Self {
        self.observation = observation;
        self
    }

    /// Whether the usage is an estimate, for a stream whose usage is known at its start (a
    /// replay).
    fn known_source(&self) -> UsageSource {
        if self.usage_estimated {
            UsageSource::Estimated
        } else {
            UsageSource::Upstream
        }
    }

    pub(crate) fn new(
        frames: FrameStream,
        state: Arc<GatewayState>,
        req: &ChatRequest,
        internal_model: &str,
    ) -> Self {
        state.metrics().streams_active.inc();
        ObservedStream {
            frames,
            state,
            req: req.clone(),
            internal_model: internal_model.to_owned(),
            strip_usage: !req.include_usage,
            cache: None,
            replay: false,
            observation: None,
            deployment: None,
            tokens: Vec::new(),
            builder: Some(AnswerBuilder::default()),
            first: None,
            kept_bytes: 0,
            seen_bytes: 0,
            overflow: false,
            usage: None,
            usage_estimated: false,
            tail: None,
            finished: false,
            ended: false,
            answer: None,
            estimating: None,
        }
    }

    fn keep(&mut self, frame: &Bytes) {
        if self.first.is_none() {
            self.first = Some(frame.clone());
        }
        self.seen_bytes += frame.len();
        let needed = self.cache.is_some() || self.usage.is_none();
        let Some(builder) = self.builder.as_mut().filter(|_| needed && !self.overflow) else {
            return;
        };
        if self.kept_bytes + frame.len() > STREAM_KEEP_MAX
            || !self.state.stream_memory().reserve(frame.len())
        {
            debug!(
                "stream answer over {} bytes kept: not cached, usage scaled if estimated",
                self.kept_bytes
            );
            self.overflow = true;
            return;
        }
        self.kept_bytes += frame.len();
        builder.push_frame(frame);
    }

    /// The upstream stream ended cleanly: rebuild the answer when it is needed, and start
    /// estimating usage (on a blocking thread) when the upstream did not report it.
    fn begin_end(&mut self) {
        self.ended = true;
        if self.cache.is_some() || self.usage.is_none() {
            self.answer = self.builder.take().map(AnswerBuilder::finish);
        }
        if self.usage.is_none() {
            if let Some(answer) = &self.answer {
                let (req, model, answer) = (
                    self.req.clone(),
                    self.internal_model.clone(),
                    answer.clone(),
                );
                // What was not kept is counted in proportion to what was.
                let scale = if self.overflow && self.kept_bytes > 0 {
                    self.seen_bytes as f64 / self.kept_bytes as f64
                } else {
                    1.0
                };
                let job = actix_rt::task::spawn_blocking(move || {
                    let mut u = crate::gateway::estimate(&req, &model, &answer);
                    if scale > 1.0 {
                        u = Usage::new(
                            u.prompt_tokens,
                            (u.completion_tokens as f64 * scale).ceil() as u64,
                        );
                    }
                    u
                });
                self.estimating = Some(Box::pin(job));
            }
        }
    }

    /// Everything is known: store the answer, report, and queue an estimated usage chunk for a
    /// client that asked for usage.
    fn complete(&mut self, estimated: Option<Usage>) {
        let mut source = self.known_source();
        if let Some(u) = estimated {
            self.usage = Some(u);
            source = UsageSource::Estimated;
            if !self.strip_usage {
                self.tail = Some(self.estimated_usage_frame(&u));
            }
        } else if self.usage.is_none() {
            debug!("stream usage unknown and not estimated");
        }
        if let (Some((store, key)), Some(mut answer), false) =
            (&self.cache, self.answer.take(), self.overflow)
        {
            // Stored with its usage (the upstream's or the estimate, marked), so that a replay
            // never answers `"usage": null`.
            answer.usage = self.usage;
            answer.usage_estimated = source == UsageSource::Estimated;
            if answer.is_complete() && answer.usage.is_some() {
                let (store, key) = (store.clone(), *key);
                let mut put: Pin<Box<dyn Future<Output = ()>>> =
                    Box::pin(async move { store.put(key, answer).await });
                // Stored before the client sees the stream end when the store answers at once
                // (the memory store, the memory tier of a shared one), so that the client's
                // next identical request hits; a store that has to wait (Redis) finishes in
                // the background rather than hold back the stream's end.
                let mut now = Context::from_waker(std::task::Waker::noop());
                if put.as_mut().poll(&mut now).is_pending() {
                    actix_rt::spawn(put);
                }
            }
        }
        self.finish(StreamOutcome::Completed, self.usage.map(|u| (u, source)));
    }

    /// A usage chunk for an estimated usage, with the stream's id, marked `usage_source`.
    fn estimated_usage_frame(&self, usage: &Usage) -> Bytes {
        let first = self.first.as_deref().map(frame_json).unwrap_or(b"{}");
        let head: serde_json::Value = serde_json::from_slice(first).unwrap_or_default();
        let chunk = json!({
            "id": head["id"], "object": "chat.completion.chunk", "created": head["created"],
            "model": self.req.model, "choices": [], "usage": usage, "usage_source": "estimated",
        });
        scira2api_types::sse_json_frame(&chunk)
    }

    fn finish(&mut self, outcome: StreamOutcome, usage: Option<(Usage, UsageSource)>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let partial = self.builder.take();
        let tokens = std::mem::take(&mut self.tokens);
        if !tokens.is_empty() {
            match usage {
                Some((u, _)) => tokens.into_iter().for_each(|t| t.settle(u.total_tokens)),
                // Broken before its usage: what it produced, estimated on a blocking thread.
                None => {
                    let (req, model) = (self.req.clone(), self.internal_model.clone());
                    let answer = partial.map(AnswerBuilder::finish);
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        rt.spawn_blocking(move || {
                            let used = answer.map_or(0, |a| {
                                crate::gateway::estimate(&req, &model, &a).total_tokens
                            });
                            tokens.into_iter().for_each(|t| t.settle(used));
                        });
                    }
                }
            }
        }
        self.state.stream_memory().release(self.kept_bytes);
        self.kept_bytes = 0;
        let m = self.state.metrics();
        m.streams_active.dec();
        match &outcome {
            StreamOutcome::Completed => m.streams_completed.inc(),
            StreamOutcome::Failed(code) => m.streams_cut.with_label_values(&[code]).inc(),
            StreamOutcome::ClientGone => m.streams_cut.with_label_values(&["client_gone"]).inc(),
        }
        if !self.replay {
            if let Some((u, source)) = usage {
                self.state.record_usage(&self.req.model, &u, source);
                if let Some(d) = &self.deployment {
                    d.record_tokens(u.total_tokens, std::time::Instant::now());
                }
            }
        }
        if let Some(o) = self.observation.take() {
            o.stream_ended(outcome, usage);
        }
    }
}

impl Stream for ObservedStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(this.tail.take().map(Ok));
        }
        if this.ended {
            return this.poll_end(cx);
        }
        loop {
            match this.frames.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(u) = usage_of(&frame) {
                        this.usage = Some(u);
                        if this.strip_usage {
                            continue;
                        }
                    }
                    let frame = if this.strip_usage {
                        without_null_usage(frame)
                    } else {
                        frame
                    };
                    this.keep(&frame);
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    let code = e.code().unwrap_or("upstream_error").to_owned();
                    this.state
                        .metrics()
                        .upstream_errors
                        .with_label_values(&[&code])
                        .inc();
                    let usage = this.usage.map(|u| (u, this.known_source()));
                    this.finish(StreamOutcome::Failed(code), usage);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.begin_end();
                    return this.poll_end(cx);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl ObservedStream {
    /// Waits for a running usage estimate, then completes.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        let mut estimated = None;
        if let Some(job) = self.estimating.as_mut() {
            match job.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    self.estimating = None;
                    estimated = result.ok();
                }
            }
        }
        self.complete(estimated);
        Poll::Ready(self.tail.take().map(Ok))
    }
}

impl Drop for ObservedStream {
    fn drop(&mut self) {
        if !self.finished {
            let usage = self.usage.map(|u| (u, self.known_source()));
            self.finish(StreamOutcome::ClientGone, usage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_the_forced_null_usage() {
        let f = Bytes::from_static(b"data: {\"choices\":[],\"usage\":null}\n\n");
        assert_eq!(&without_null_usage(f)[..], b"data: {\"choices\":[]}\n\n");
        let other = Bytes::from_static(b"data: {\"usage\":null,\"x\":1}\n\n");
        assert_eq!(without_null_usage(other.clone()), other);
    }

    #[test]
    fn finds_usage_chunks_only() {
        let u = Bytes::from_static(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n");
        assert_eq!(usage_of(&u), Some(Usage::new(1, 2)));
        let c = Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":{\"}}],\"usage\":null}\n\n");
        assert_eq!(usage_of(&c), None);
    }
}
