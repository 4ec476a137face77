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
    stamp: bool,
}

/// The placeholder a stamped event carries until it is sent: 16 digits, overwritten in place
/// with the send time in microseconds since the Unix epoch.
pub(crate) const STAMP: &str = "\"x_mock_sent_us\":0000000000000000";

/// Writes the current time into an event's [`STAMP`].
fn stamp(event: Bytes) -> Bytes {
    let key = &STAMP.as_bytes()[..STAMP.len() - 16];
    let Some(pos) = event.windows(key.len()).position(|w| w == key) else {
        return event;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let mut out = event.to_vec();
    let digits = format!("{now:016}");
    out[pos + key.len()..pos + key.len() + 16].copy_from_slice(&digits.as_bytes()[..16]);
    Bytes::from(out)
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
            stamp: false,
        }
    }

    /// Stamps each event with its send time as it goes out (benchmarks measure delivery).
    pub(crate) fn stamped(mut self, on: bool) -> Self {
        self.stamp = on;
        self
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
        let event = this.events.pop_front();
        Poll::Ready(event.map(|e| Ok(if this.stamp { stamp(e) } else { e })))
    }
}

impl Drop for Paced {
    fn drop(&mut self) {
        if !self.finished {
            self.state.aborted.fetch_add(1, Ordering::SeqCst);
        }
    }
}
