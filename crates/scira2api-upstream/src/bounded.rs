//! A body streamed on as it arrives within two bounds — no silence longer than an idle timeout,
//! and at most a number of bytes — ending with an `Err` item when it breaks one or breaks off.
//! Upstream answers passed through (speech, file contents) and client uploads streamed upstream
//! both use it; [`Bounds`] says, for each, what the error is.

use bytes::Bytes;
use futures_util::Stream;
use scira2api_types::Error;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The errors of a [`Bounded`] body.
pub trait Bounds {
    /// More than the byte limit arrived.
    fn too_large(&self) -> Error;
    /// The body broke off with `e`.
    fn broken(&self, e: &dyn Display) -> Error;
    /// Nothing arrived for `idle`.
    fn silent(&self, idle: Duration) -> Error;
}

/// `inner` within an idle timeout and an optional byte limit; see the module docs.
pub struct Bounded<S, B> {
    inner: S,
    bounds: B,
    idle: Duration,
    sleep: Pin<Box<actix_rt::time::Sleep>>,
    left: Option<usize>,
    done: bool,
}

impl<S, B> Bounded<S, B> {
    /// `inner` with no silence over `idle` and at most `limit` bytes (`None`: no limit, for a
    /// body that is only passed on, never held).
    pub fn new(inner: S, idle: Duration, limit: Option<usize>, bounds: B) -> Self {
        Bounded {
            inner,
            bounds,
            idle,
            sleep: Box::pin(actix_rt::time::sleep(idle)),
            left: limit,
            done: false,
        }
    }
}

impl<S, E, B> Stream for Bounded<S, B>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
    B: Bounds + Unpin,
{
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let item = match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let deadline = actix_rt::time::Instant::now() + this.idle;
                this.sleep.as_mut().reset(deadline);
                match &mut this.left {
                    Some(left) if chunk.len() > *left => Err(this.bounds.too_large()),
                    Some(left) => {
                        *left -= chunk.len();
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    None => return Poll::Ready(Some(Ok(chunk))),
                }
            }
            Poll::Ready(Some(Err(e))) => Err(this.bounds.broken(&e)),
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                Err(this.bounds.silent(this.idle))
            }
        };
        this.done = true;
        Poll::Ready(Some(item))
    }
}
