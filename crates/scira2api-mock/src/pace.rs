//! Sending a list of stream events at a fixed pace, with a cut and abort detection.

use crate::server::MockState;
use bytes::Bytes;
use futures_util::Stream;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

/// Yields `events` one by one with `delay` before each but the first; after `cut` events it
/// fails, which breaks the connection. Dropped before the end, it counts as aborted.
pub(crate) struct Paced {
    events: VecDeque<Bytes>,
    delay: Duration,
    sleep: Option<Pin<Box<actix_rt::time::Sleep>>>,
    sent: usize,
    cut: Option<usize>,
    finished: bool,
    state: Arc<MockState>,
}

impl Paced {
    pub(crate) fn new(
        events: Vec<Bytes>,
        delay: Duration,
        cut: Option<usize>,
        state: Arc<MockState>,
    ) -> Self {
        Paced {
            events: events.into(),
            delay,
            sleep: None,
            sent: 0,
            cut,
            finished: false,
            state,
        }
    }
}

impl Stream for Paced {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.cut == Some(this.sent) {
            this.finished = true;
            this.cut = None;
            return Poll::Ready(Some(Err(std::io::Error::other(
                "mock: stream cut on purpose",
            ))));
        }
        if this.events.is_empty() {
            this.finished = true;
            return Poll::Ready(None);
        }
        if this.sent > 0 && !this.delay.is_zero() {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(actix_rt::time::sleep(this.delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        this.sent += 1;
        Poll::Ready(this.events.pop_front().map(Ok))
    }
}

impl Drop for Paced {
    fn drop(&mut self) {
        if !self.finished {
            self.state.aborted.fetch_add(1, Ordering::SeqCst);
        }
    }
}
