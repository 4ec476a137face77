//! Noticing a client that has gone while its request is still being answered.
//!
//! actix-web keeps running a handler after its client has closed the connection: until the
//! response is written, nothing reads the socket on the handler's behalf. A client that gives
//! up while the upstream is still thinking would hold the upstream call — and its retries — for
//! up to `CLIENT_TIMEOUT`. [`on_connect`] keeps a duplicate of each accepted socket; a handler
//! races its work against [`ConnWatch::gone`], which the kernel wakes (`EPOLLRDHUP`) the moment
//! the peer closes, and drops the work — and with it the upstream request — at once.
//!
//! The duplicate is registered with the reactor only for a request still running after
//! [`WATCH_AFTER`], and only while it runs. Registered for the connection's whole life, every
//! readiness event of the socket — each request arriving, each answer's write space — would
//! be delivered and handled twice, a cost every fast request paid for a watch that only a slow
//! one needs. The wait for [`WATCH_AFTER`] makes no timer per request: one worker-wide pulse
//! wakes every request that is waiting for it.

use actix_web::HttpRequest;
use actix_web::dev::Extensions;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;
use tokio::io::Interest;

/// How long a request runs before its client is watched: a client that leaves sooner is
/// noticed this long after the request began, at most.
pub const WATCH_AFTER: Duration = Duration::from_millis(100);

/// A connection's watch: a duplicate of its socket, registered with the reactor only while a
/// slow request on it is being answered.
pub struct ConnWatch {
    fd: OwnedFd,
}

/// The worker's pulse: every [`WATCH_AFTER`] it wakes the requests waiting to be watched. Its
/// task runs only while some request waits. It lives on one worker thread, so its waiters are
/// kept in plain cells: waiting costs no lock and no atomic beyond the waker's own clone.
struct Pulse {
    /// Counts the pulses: a waiter that saw another number than the current one is done.
    beat: Cell<u64>,
    /// This beat's waiters' wakers, by slot; a waiter that leaves empties its slot.
    wakers: RefCell<Vec<Option<Waker>>>,
    /// Slots emptied during this beat, for the next waiters.
    free: RefCell<Vec<usize>>,
    running: Cell<bool>,
}

thread_local! {
    static PULSE: Rc<Pulse> = Rc::new(Pulse {
        beat: Cell::new(0),
        wakers: RefCell::new(Vec::new()),
        free: RefCell::new(Vec::new()),
        running: Cell::new(false),
    });
}

impl Pulse {
    /// Waiters of this beat still waiting.
    fn waiting(&self) -> usize {
        self.wakers.borrow().len() - self.free.borrow().len()
    }

    /// Ends the beat: wakes its waiters and forgets their slots.
    fn beat(&self) {
        self.beat.set(self.beat.get() + 1);
        self.free.borrow_mut().clear();
        let mut wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        wakers.drain(..).flatten().for_each(Waker::wake);
        // The emptied list, to keep its room for the next beat's waiters.
        let mut now = self.wakers.borrow_mut();
        if now.is_empty() {
            *now = wakers;
        }
    }
}

/// A request waiting for the pulse: its beat and its slot, emptied when it is dropped.
struct Waiting {
    pulse: Rc<Pulse>,
    beat: u64,
    slot: Option<usize>,
}

impl Waiting {
    fn poll(&mut self, waker: &Waker) -> Poll<()> {
        let pulse = &self.pulse;
        if pulse.beat.get() != self.beat {
            self.slot = None;
            return Poll::Ready(());
        }
        let mut wakers = pulse.wakers.borrow_mut();
        match self.slot {
            Some(i) => match &mut wakers[i] {
                Some(w) if w.will_wake(waker) => {}
                w => *w = Some(waker.clone()),
            },
            None => {
                let i = match pulse.free.borrow_mut().pop() {
                    Some(i) => {
                        wakers[i] = Some(waker.clone());
                        i
                    }
                    None => {
                        wakers.push(Some(waker.clone()));
                        wakers.len() - 1
                    }
                };
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        // A slot of an ended beat is gone already.
        if let Some(i) = self.slot.filter(|_| self.pulse.beat.get() == self.beat) {
            self.pulse.wakers.borrow_mut()[i] = None;
            self.pulse.free.borrow_mut().push(i);
        }
    }
}

/// Completes at the worker's next pulse: between no time and [`WATCH_AFTER`] from now.
async fn next_pulse() {
    let pulse = PULSE.with(Rc::clone);
    if !pulse.running.replace(true) {
        let pulse = Rc::clone(&pulse);
        actix_rt::spawn(async move {
            loop {
                actix_rt::time::sleep(WATCH_AFTER).await;
                let idle = pulse.waiting() == 0;
                pulse.beat();
                if idle {
                    pulse.running.set(false);
                    return;
                }
            }
        });
    }
    let mut waiting = Waiting {
        beat: pulse.beat.get(),
        pulse,
        slot: None,
    };
    std::future::poll_fn(|cx| waiting.poll(cx.waker())).await;
}

impl ConnWatch {
    /// The connection's socket registered with the reactor, through a duplicate of its own
    /// (dropping it deregisters and closes the duplicate only).
    fn register(&self) -> Option<tokio::net::TcpStream> {
        let std = std::net::TcpStream::from(self.fd.try_clone().ok()?);
        std.set_nonblocking(true).ok()?;
        tokio::net::TcpStream::from_std(std).ok()
    }

    /// Completes when the client has closed its side of the connection (or it broke). Pending
    /// forever when the connection cannot be watched.
    pub fn gone(self: Rc<Self>) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            next_pulse().await;
            let Some(stream) = self.register() else {
                return std::future::pending().await;
            };
            loop {
                match stream.ready(Interest::READABLE).await {
                    Ok(r) if r.is_read_closed() || r.is_error() => return,
                    Ok(_) => {
                        // Data (a pipelined request) is actix's to read: forget this readiness
                        // and wait for the next event.
                        let _ = stream.try_io(Interest::READABLE, || {
                            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                        });
                    }
                    Err(_) => return,
                }
            }
        })
    }
}

/// The watch of the connection `req` arrived on, when [`on_connect`] installed one.
pub fn watch(req: &HttpRequest) -> Option<Rc<ConnWatch>> {
    req.conn_data::<Rc<ConnWatch>>().cloned()
}

/// The `HttpServer::on_connect` callback every server of the gateway should install: turns
/// Nagle's algorithm off (see [`crate::tcp_nodelay`]) and keeps the connection's watch, so
/// that a request whose client has gone is cancelled, upstream call included, at once.
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut Extensions) {
    crate::tcp_nodelay(conn, ext);
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Ok(fd) = tcp.as_fd().try_clone_to_owned() {
            ext.insert(Rc::new(ConnWatch { fd }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[actix_rt::test]
    async fn the_pulse_wakes_every_waiter_and_stops_when_none_is_left() {
        let started = Instant::now();
        futures_util::future::join(next_pulse(), next_pulse()).await;
        assert!(
            started.elapsed() < WATCH_AFTER * 3,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(PULSE.with(|p| p.waiting()), 0);
        // A waiter that is dropped leaves the count too, and its slot is used again.
        use futures_util::FutureExt;
        assert!(next_pulse().now_or_never().is_none(), "waits for a pulse");
        assert_eq!(PULSE.with(|p| p.waiting()), 0);
        assert!(next_pulse().now_or_never().is_none(), "waits for a pulse");
        assert_eq!(PULSE.with(|p| p.wakers.borrow().len()), 1);
        // With nobody waiting, the pulse's task ends at its next pulse, and a new waiter
        // starts it again.
        actix_rt::time::sleep(WATCH_AFTER * 3).await;
        assert!(!PULSE.with(|p| p.running.get()));
        let started = Instant::now();
        next_pulse().await;
        assert!(started.elapsed() < WATCH_AFTER * 3);
    }
}
