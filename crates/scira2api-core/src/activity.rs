//! Work in progress, for a graceful shutdown that never drops an answer.
//!
//! Every request counts from the moment it arrives until its response has been written in full
//! (for a stream, until its body ends). On shutdown the server stops accepting connections,
//! marks itself draining (responses then carry `Connection: close`, so clients do not send more
//! on those connections), waits until nothing is in progress or the grace period is over, and
//! only then closes what is left: idle keep-alive connections.

use crate::per_thread::PerThreadGauge;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The gateway's count of work in progress (counted per thread: every request enters it).
#[derive(Default)]
pub struct Activity {
    active: PerThreadGauge,
    draining: AtomicBool,
}

/// One piece of work in progress that outlives its caller (a response body); it ends when
/// dropped.
pub struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.active.dec();
    }
}

/// One piece of work in progress within its caller's scope; it ends when dropped.
pub struct Working<'a>(&'a Activity);

impl Drop for Working<'_> {
    fn drop(&mut self) {
        self.0.active.dec();
    }
}

impl Activity {
    /// Starts counting one piece of work that a response body carries on.
    pub fn enter(self: &Arc<Self>) -> ActivityGuard {
        self.active.inc();
        ActivityGuard(self.clone())
    }

    /// Starts counting one piece of work that ends in the caller's scope.
    pub fn working(&self) -> Working<'_> {
        self.active.inc();
        Working(self)
    }

    /// Work in progress now.
    pub fn active(&self) -> usize {
        usize::try_from(self.active.get()).unwrap_or(0)
    }

    /// Marks the server as shutting down.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the server is shutting down.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_until_dropped() {
        let a = Arc::new(Activity::default());
        let g1 = a.enter();
        let g2 = a.enter();
        assert_eq!(a.active(), 2);
        {
            let _w = a.working();
            assert_eq!(a.active(), 3);
        }
        drop(g1);
        assert_eq!(a.active(), 1);
        drop(g2);
        assert_eq!(a.active(), 0);
        assert!(!a.draining());
        a.start_draining();
        assert!(a.draining());
    }
}
