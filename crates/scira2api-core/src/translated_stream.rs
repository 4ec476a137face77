//! A chat answer's stream re-written as another API's events (Responses, Messages) by a
//! [`StreamTranslator`], one chunk at a time as the chunks arrive. Upstream errors and the end of
//! the shutdown grace period become the translator's failure events, so the stream never yields
//! an `Err` and always ends with the API's own final event.

use bytes::Bytes;
use futures_util::Stream;
use scira2api_translate::StreamTranslator;
use scira2api_types::Error;
use scira2api_upstream::FrameStream;
use serde_json::Value;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Run once with the translator when the answer completed (e.g. to store it).
pub(crate) type OnFinish<T> = Box<dyn FnOnce(&T)>;

/// See the module docs.
pub(crate) struct TranslatedStream<T> {
    frames: FrameStream,
    writer: T,
    queue: VecDeque<Bytes>,
    started: bool,
    ended: bool,
    cut: Pin<Box<dyn Future<Output = ()>>>,
    on_finish: Option<OnFinish<T>>,
}

impl<T: StreamTranslator + Unpin + 'static> TranslatedStream<T> {
    /// Translates `frames` (chat chunk frames) with `writer`; `cut` resolves when the shutdown
    /// grace period is over.
    pub(crate) fn new(
        frames: FrameStream,
        writer: T,
        cut: impl Future<Output = ()> + 'static,
        on_finish: Option<OnFinish<T>>,
    ) -> Self {
        TranslatedStream {
            frames,
            writer,
            queue: VecDeque::new(),
            started: false,
            ended: false,
            cut: Box::pin(cut),
            on_finish,
        }
    }

    /// Boxed as a [`FrameStream`].
    pub(crate) fn boxed(self) -> FrameStream {
        Box::pin(self)
    }
}

/// The JSON of a `data: {...}` frame.
fn frame_json(frame: &[u8]) -> Option<Value> {
    let data = frame.strip_prefix(b"data: ")?;
    serde_json::from_slice(data.trim_ascii_end()).ok()
}

impl<T: StreamTranslator + Unpin + 'static> Stream for TranslatedStream<T> {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.started {
            this.started = true;
            let start = this.writer.start();
            this.queue.extend(start);
        }
        loop {
            if let Some(f) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(f)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            if this.cut.as_mut().poll(cx).is_ready() {
                this.ended = true;
                let e = Error::upstream_status(
                    503,
                    "server_shutting_down",
                    "the gateway is shutting down and its grace period ran out before the answer was complete",
                );
                let events = this.writer.fail(&e);
                this.queue.extend(events);
                continue;
            }
            match this.frames.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(chunk) = frame_json(&frame) {
                        let events = this.writer.chunk(&chunk);
                        this.queue.extend(events);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    let events = this.writer.fail(&e);
                    this.queue.extend(events);
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    let events = this.writer.finish();
                    this.queue.extend(events);
                    if let Some(f) = this.on_finish.take() {
                        f(&this.writer);
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
