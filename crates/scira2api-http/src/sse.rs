//! The SSE writer: frames from the gateway, keep-alive comments while upstream is silent, an
//! error event when the answer breaks off, and `data: [DONE]` at the end.

use bytes::Bytes;
use futures_util::Stream;
use log::warn;
use scira2api_core::FrameStream;
use scira2api_types::DONE_FRAME;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The comment written while upstream is silent; clients and proxies ignore it.
pub const KEEPALIVE: &[u8] = b": keep-alive\n\n";

enum Tail {
    Streaming,
    /// Frames still to write after the upstream stream ended.
    Closing(Vec<Bytes>),
    Done,
}

/// The response body of a streamed chat completion.
pub struct SseBody {
    frames: FrameStream,
    heartbeat: Duration,
    timer: Pin<Box<actix_rt::time::Sleep>>,
    tail: Tail,
}

impl SseBody {
    /// Writes `frames`, with a keep-alive comment after each `heartbeat` of silence.
    pub fn new(frames: FrameStream, heartbeat: Duration) -> Self {
        SseBody {
            frames,
            heartbeat,
            timer: Box::pin(actix_rt::time::sleep(heartbeat)),
            tail: Tail::Streaming,
        }
    }
}

impl Stream for SseBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match &mut this.tail {
            Tail::Done => return Poll::Ready(None),
            Tail::Closing(rest) => {
                let next = rest.pop();
                if rest.is_empty() {
                    this.tail = Tail::Done;
                }
                return Poll::Ready(next.map(Ok));
            }
            Tail::Streaming => {}
        }
        match this.frames.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = actix_rt::time::Instant::now() + this.heartbeat;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                warn!("stream ended with an error after the response started: {e}");
                this.tail = Tail::Closing(vec![Bytes::from_static(DONE_FRAME)]);
                Poll::Ready(Some(Ok(e.sse_event())))
            }
            Poll::Ready(None) => {
                this.tail = Tail::Done;
                Poll::Ready(Some(Ok(Bytes::from_static(DONE_FRAME))))
            }
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_ready() {
                    let next = actix_rt::time::Instant::now() + this.heartbeat;
                    this.timer.as_mut().reset(next);
                    return Poll::Ready(Some(Ok(Bytes::from_static(KEEPALIVE))));
                }
                Poll::Pending
            }
        }
    }
}
