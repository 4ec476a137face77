//! Work in progress, for a graceful shutdown that never drops an answer.
//!
//! Every request counts from the moment it arrives until its response has been written in full
//! (for a stream, until its body ends). On shutdown the server stops accepting connections,
//! marks itself draining (responses then carry `Connection: close`, so clients do not send more
//! on those connections), waits until nothing is in progress or the grace period is over, and
//! only then closes what is left: idle keep-alive connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The gateway's count of work in progress.
#[derive(Debug, Default)]
pub struct Activity {
    active: AtomicUsize,
    draining: AtomicBool,
}

/// One piece of work in progress; it ends when dropped.
#[derive(Debug)]
pub struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    /// Starts counting one piece of work.
    pub fn enter(self: &Arc<Self>) -> ActivityGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        ActivityGuard(self.clone())
    }

    /// Work in progress now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
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
        drop(g1);
        assert_eq!(a.active(), 1);
        drop(g2);
        assert_eq!(a.active(), 0);
        assert!(!a.draining());
        a.start_draining();
        assert!(a.draining());
    }
}
