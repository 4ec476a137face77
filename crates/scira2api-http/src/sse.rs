//! The SSE writer: frames from the gateway, keep-alive comments while upstream is silent, an
//! error event when the answer breaks off, and `data: [DONE]` at the end.
//!
//! A body can start before the upstream has answered ([`SseBody::pending`]): once a stream
//! request has waited a heartbeat interval, the 200 head is committed and keep-alive comments
//! flow until the first event, so load balancers do not cut a slow first token. A failure in
//! that phase becomes an error event and `[DONE]`. The body also ends at once when the client
//! has gone, and with an error event and `[DONE]` when the server's shutdown grace runs out.

use bytes::Bytes;
use futures_util::Stream;
use log::warn;
use scira2api_core::FrameStream;
use scira2api_types::{DONE_FRAME, Error};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The comment written while upstream is silent; clients and proxies ignore it.
pub const KEEPALIVE: &[u8] = b": keep-alive\n\n";

/// A future resolving to the frames of an answer that is still being requested.
pub type PendingFrames = Pin<Box<dyn Future<Output = Result<FrameStream, Error>>>>;

/// A signal future (client gone, shutdown deadline).
type Signal = Pin<Box<dyn Future<Output = ()>>>;

enum Phase {
    /// Waiting for the upstream's answer; keep-alives meanwhile.
    Waiting(PendingFrames),
    Streaming(FrameStream),
    /// One frame still to write (`[DONE]`), then the end.
    Closing,
    Done,
}

/// The response body of a streamed chat completion.
pub struct SseBody {
    phase: Phase,
    heartbeat: Duration,
    timer: Pin<Box<actix_rt::time::Sleep>>,
    /// Send a keep-alive at the first poll (the head was committed after a heartbeat of wait).
    keepalive_now: bool,
    gone: Option<Signal>,
    cut: Option<Signal>,
    /// Counts the stream as work in progress until the body is dropped.
    working: Option<scira2api_core::ActivityGuard>,
    /// Chat completions framing: errors as an error frame, `data: [DONE]` at the end. Off for
    /// streams that carry their own end and error events (the Responses API).
    chat_framing: bool,
    /// What is written during silences (an SSE comment; Anthropic's streams send `ping` events).
    keepalive: &'static [u8],
}

impl SseBody {
    /// Writes `frames`, with a keep-alive comment after each `heartbeat` of silence.
    pub fn new(frames: FrameStream, heartbeat: Duration) -> Self {
        SseBody::with_phase(Phase::Streaming(frames), heartbeat, false)
    }

    /// A body committed before the answer exists: a keep-alive at once, then one per
    /// `heartbeat` until `pending` resolves; its frames, or its error as an error event.
    pub fn pending(pending: PendingFrames, heartbeat: Duration) -> Self {
        SseBody::with_phase(Phase::Waiting(pending), heartbeat, true)
    }

    fn with_phase(phase: Phase, heartbeat: Duration, keepalive_now: bool) -> Self {
        SseBody {
            phase,
            heartbeat,
            timer: Box::pin(actix_rt::time::sleep(heartbeat)),
            keepalive_now,
            gone: None,
            cut: None,
            working: None,
            chat_framing: true,
            keepalive: KEEPALIVE,
        }
    }

    /// Writes `frame` instead of the `: keep-alive` comment during silences.
    pub fn keepalive(mut self, frame: &'static [u8]) -> Self {
        self.keepalive = frame;
        self
    }

    /// For a stream whose items are complete events that end it properly themselves, errors
    /// included (the Responses API): no `data: [DONE]` and no chat error frame.
    pub fn own_framing(mut self) -> Self {
        self.chat_framing = false;
        self
    }

    /// Counts this body as work in progress (for a graceful shutdown) until it is dropped.
    pub fn counted(mut self, guard: scira2api_core::ActivityGuard) -> Self {
        self.working = Some(guard);
        self
    }

    /// Ends the body (dropping the upstream stream) as soon as `gone` completes.
    pub fn ending_when(mut self, gone: Option<Signal>) -> Self {
        self.gone = gone;
        self
    }

    /// Ends the body with an error event and `[DONE]` when `cut` completes (shutdown).
    pub fn cut_by(mut self, cut: Signal) -> Self {
        self.cut = Some(cut);
        self
    }

    fn reset_timer(&mut self) {
        let next = actix_rt::time::Instant::now() + self.heartbeat;
        self.timer.as_mut().reset(next);
    }

    fn fail(&mut self, e: &Error) -> Poll<Option<Result<Bytes, actix_web::Error>>> {
        if !self.chat_framing {
            // Such streams turn their errors into their own events; this is a last resort.
            warn!("a self-framed stream failed: {e}");
            self.phase = Phase::Done;
            return Poll::Ready(None);
        }
        self.phase = Phase::Closing;
        Poll::Ready(Some(Ok(e.sse_event())))
    }

    fn on_silence(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, actix_web::Error>>> {
        if self.timer.as_mut().poll(cx).is_ready() {
            self.reset_timer();
            return Poll::Ready(Some(Ok(Bytes::from_static(self.keepalive))));
        }
        Poll::Pending
    }
}

fn fired(signal: &mut Option<Signal>, cx: &mut Context<'_>) -> bool {
    let ready = match signal.as_mut() {
        Some(s) => s.as_mut().poll(cx).is_ready(),
        None => false,
    };
    if ready {
        *signal = None;
    }
    ready
}

impl Stream for SseBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if matches!(this.phase, Phase::Done) {
            return Poll::Ready(None);
        }
        if fired(&mut this.gone, cx) {
            this.phase = Phase::Done;
            return Poll::Ready(None);
        }
        if matches!(this.phase, Phase::Closing) {
            this.phase = Phase::Done;
            return Poll::Ready(Some(Ok(Bytes::from_static(DONE_FRAME))));
        }
        if fired(&mut this.cut, cx) {
            let e = Error::upstream_status(
                503,
                "server_shutting_down",
                "the gateway is shutting down and its grace period ran out before the answer was complete",
            )
            .retryable(true);
            warn!("stream cut by the end of the shutdown grace period");
            return this.fail(&e);
        }
        if this.keepalive_now {
            this.keepalive_now = false;
            this.reset_timer();
            return Poll::Ready(Some(Ok(Bytes::from_static(this.keepalive))));
        }
        loop {
            match &mut this.phase {
                Phase::Waiting(pending) => match pending.as_mut().poll(cx) {
                    Poll::Ready(Ok(frames)) => this.phase = Phase::Streaming(frames),
                    Poll::Ready(Err(e)) => {
                        warn!(
                            "stream failed before its first event, after the response started: {e}"
                        );
                        return this.fail(&e);
                    }
                    Poll::Pending => return this.on_silence(cx),
                },
                Phase::Streaming(frames) => {
                    return match frames.as_mut().poll_next(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            this.reset_timer();
                            Poll::Ready(Some(Ok(frame)))
                        }
                        Poll::Ready(Some(Err(e))) => {
                            warn!("stream ended with an error after the response started: {e}");
                            this.fail(&e)
                        }
                        Poll::Ready(None) => {
                            this.phase = Phase::Done;
                            if !this.chat_framing {
                                return Poll::Ready(None);
                            }
                            Poll::Ready(Some(Ok(Bytes::from_static(DONE_FRAME))))
                        }
                        Poll::Pending => this.on_silence(cx),
                    };
                }
                Phase::Closing | Phase::Done => return Poll::Ready(None),
            }
        }
    }
}
