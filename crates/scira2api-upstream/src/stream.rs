//! Turning an upstream response body into a stream of OpenAI SSE frames.
//!
//! [`DecodedStream`] reads the body as it arrives, splits it into lines and hands each line to a
//! protocol [`LineDecoder`] (OpenAI SSE pass-through, or Scira's formats), which writes OpenAI
//! frames. Every frame is yielded as soon as the line that produced it is complete: nothing is
//! held back for batching. A silence longer than the idle timeout, a broken body, or a body that
//! ends before the answer is complete ends the stream with an [`Error`] item, never silently.

use crate::lines::LineBuffer;
use bytes::Bytes;
use futures_util::Stream;
use scira2api_types::{Error, Secrets};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A stream of complete OpenAI SSE frames (`data: {...}\n\n`), without the final `[DONE]`.
///
/// `Ok` items are frames to write as they are. An `Err` item is the last item: the answer broke
/// off, and the writer sends it as an error event and ends the stream. A stream that ends without
/// an `Err` finished cleanly, and the writer appends `data: [DONE]\n\n`.
pub type FrameStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>>>>;

/// The upstream body as awc delivers it.
pub(crate) type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, awc::error::PayloadError>>>>;

/// A protocol decoder: one upstream line in, OpenAI frames out.
pub(crate) trait LineDecoder {
    /// Handles one complete line (without its `\n`). Pushes frames to `out`. Returns `Ok(true)`
    /// when the answer is complete and the rest of the body can be ignored.
    fn line(&mut self, line: Bytes, out: &mut VecDeque<Bytes>) -> Result<bool, Error>;

    /// The upstream body ended. Pushes closing frames, or fails when the answer is incomplete.
    fn end(&mut self, out: &mut VecDeque<Bytes>) -> Result<(), Error>;

    /// Whether the decoder has read enough to know the body is a well-formed answer stream
    /// (its first event). Until then an error can still be reported as a plain HTTP error.
    fn primed(&self) -> bool;
}

enum State {
    Reading,
    Failed(Error),
    Done,
}

/// Drives a [`LineDecoder`] over an upstream body with an idle timeout between reads.
pub(crate) struct DecodedStream<D> {
    body: BodyStream,
    lines: LineBuffer,
    decoder: D,
    out: VecDeque<Bytes>,
    idle: Duration,
    sleep: Pin<Box<actix_rt::time::Sleep>>,
    state: State,
    secrets: Secrets,
}

impl<D: LineDecoder + Unpin + 'static> DecodedStream<D> {
    /// Decodes `body`; `idle` is the longest silence allowed between two reads, `max_line` the
    /// longest line accepted.
    pub(crate) fn new(body: BodyStream, decoder: D, idle: Duration, max_line: usize) -> Self {
        DecodedStream {
            body,
            lines: LineBuffer::new(max_line),
            decoder,
            out: VecDeque::new(),
            idle,
            sleep: Box::pin(actix_rt::time::sleep(idle)),
            state: State::Reading,
            secrets: Secrets::default(),
        }
    }

    /// Removes `secrets` from every error this stream reports (an upstream may echo them).
    pub(crate) fn redacting(mut self, secrets: Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// Boxes the stream as a [`FrameStream`].
    pub(crate) fn boxed(self) -> FrameStream {
        Box::pin(self)
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.lines.push(chunk);
        loop {
            match self.lines.next_line() {
                Ok(Some(line)) => match self.decoder.line(line, &mut self.out) {
                    Ok(false) => {}
                    Ok(true) => {
                        self.state = State::Done;
                        self.release_connection();
                        return;
                    }
                    Err(e) => {
                        self.state = State::Failed(e);
                        return;
                    }
                },
                Ok(None) => return,
                Err(too_long) => {
                    self.state = State::Failed(Error::upstream(format!(
                        "upstream sent a line longer than {} bytes (MAX_BODY_BYTES)",
                        too_long.0
                    )));
                    return;
                }
            }
        }
    }

    /// The answer is complete: read what is left of the body (usually just the chunked
    /// encoding's terminator, already on its way) on a separate task, so that awc sees the
    /// response finished and puts the connection back in the pool. Dropping a response that was
    /// not read to its end closes the connection instead, and the next request pays for a new one.
    fn release_connection(&mut self) {
        let mut body: BodyStream = Box::pin(futures_util::stream::empty());
        std::mem::swap(&mut body, &mut self.body);
        actix_rt::spawn(async move {
            let drain = async {
                use futures_util::StreamExt;
                while let Some(Ok(_)) = body.next().await {}
            };
            // An upstream that keeps a finished stream open loses its connection after 5 s.
            let _ = actix_rt::time::timeout(Duration::from_secs(5), drain).await;
        });
    }

    fn end(&mut self) {
        if let Some(last) = self.lines.finish() {
            match self.decoder.line(last, &mut self.out) {
                Ok(_) => {}
                Err(e) => {
                    self.state = State::Failed(e);
                    return;
                }
            }
        }
        self.state = match self.decoder.end(&mut self.out) {
            Ok(()) => State::Done,
            Err(e) => State::Failed(e),
        };
    }
}

impl<D: LineDecoder + Unpin + 'static> DecodedStream<D> {
    /// Reads the body once (or notices the idle timeout); `Ready` when the state changed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.body.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let deadline = actix_rt::time::Instant::now() + self.idle;
                self.sleep.as_mut().reset(deadline);
                self.feed(&chunk);
            }
            Poll::Ready(Some(Err(e))) => {
                self.state = State::Failed(Error::upstream(format!(
                    "the upstream stream broke off: {e}"
                )));
            }
            Poll::Ready(None) => self.end(),
            Poll::Pending => {
                if self.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.state = State::Failed(Error::UpstreamTimeout(format!(
                    "the upstream sent nothing for {} (CLIENT_TIMEOUT); the answer is incomplete",
                    humantime_short(self.idle)
                )));
            }
        }
        Poll::Ready(())
    }

    /// Reads until the decoder has seen the body's first event. A body that fails before that
    /// (not an answer stream at all, an error as its first event, a timeout) is returned as an
    /// error, so the client gets a clean HTTP error instead of a stream that breaks at once.
    pub(crate) async fn primed(mut self) -> Result<Self, Error> {
        std::future::poll_fn(|cx| {
            while !self.decoder.primed()
                && self.out.is_empty()
                && matches!(self.state, State::Reading)
            {
                if self.poll_fill(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            Poll::Ready(())
        })
        .await;
        if self.out.is_empty() {
            if let State::Failed(_) = self.state {
                if let State::Failed(e) = std::mem::replace(&mut self.state, State::Done) {
                    return Err(self.secrets.error(e));
                }
            }
        }
        Ok(self)
    }
}

impl<D: LineDecoder + Unpin + 'static> Stream for DecodedStream<D> {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(frame) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            match std::mem::replace(&mut this.state, State::Reading) {
                State::Done => {
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                State::Failed(e) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(this.secrets.error(e))));
                }
                State::Reading => {}
            }
            if this.poll_fill(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// `1.5s`-style rendering of a duration for messages.
pub(crate) fn humantime_short(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
