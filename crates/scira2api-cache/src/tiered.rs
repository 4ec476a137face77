//! A small in-memory cache in front of a shared one (`CACHE_FRONT_ENTRIES` with `REDIS_URL`):
//! answers looked up often are served from this process without a round trip. Cached answers
//! never change under a key (the same question, the same answer, until it expires), so a front
//! copy cannot disagree with the shared one; it is kept a short while only
//! ([`FRONT_TTL`] at most), so that it never outlives the shared entry by much.

use crate::{CacheKey, CacheStats, MemoryStore, ResponseStore};
use futures_util::future::BoxFuture;
use scira2api_types::Answer;
use std::sync::Arc;
use std::time::Duration;

/// The longest a front copy is kept.
pub const FRONT_TTL: Duration = Duration::from_secs(60);

/// `front` before `back`.
pub struct TieredStore {
    front: MemoryStore,
    back: Arc<dyn ResponseStore>,
}

impl TieredStore {
    /// A front of `entries` answers (and about `max_bytes`), each kept `min(ttl, FRONT_TTL)`,
    /// before `back`.
    pub fn new(back: Arc<dyn ResponseStore>, entries: u64, max_bytes: u64, ttl: Duration) -> Self {
        TieredStore {
            front: MemoryStore::new(ttl.min(FRONT_TTL), entries, max_bytes),
            back,
        }
    }
}

impl ResponseStore for TieredStore {
    fn get(&self, key: CacheKey) -> BoxFuture<'_, Option<Arc<Answer>>> {
        Box::pin(async move {
            if let Some(a) = self.front.get(key).await {
                return Some(a);
            }
            let found = self.back.get(key).await?;
            self.front.put(key, (*found).clone()).await;
            Some(found)
        })
    }

    fn put(&self, key: CacheKey, answer: Answer) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.front.put(key, answer.clone()).await;
            self.back.put(key, answer).await;
        })
    }

    /// Hits in either; misses are lookups neither had; entries and bytes are the shared one's.
    fn stats(&self) -> CacheStats {
        let (f, b) = (self.front.stats(), self.back.stats());
        CacheStats {
            hits: f.hits + b.hits,
            misses: b.misses,
            entries: b.entries,
            bytes: b.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A back store that counts its lookups.
    struct Counting {
        inner: MemoryStore,
        gets: AtomicU64,
    }

    impl ResponseStore for Counting {
        fn get(&self, key: CacheKey) -> BoxFuture<'_, Option<Arc<Answer>>> {
            self.gets.fetch_add(1, Ordering::Relaxed);
            self.inner.get(key)
        }
        fn put(&self, key: CacheKey, answer: Answer) -> BoxFuture<'_, ()> {
            self.inner.put(key, answer)
        }
        fn stats(&self) -> CacheStats {
            self.inner.stats()
        }
    }

    #[test]
    fn the_front_answers_repeated_lookups_without_the_back() {
        let back = Arc::new(Counting {
            inner: MemoryStore::new(Duration::from_secs(300), 100, 1 << 20),
            gets: AtomicU64::new(0),
        });
        // Another replica stored it in the shared store.
        let answer = Answer::from_completion(br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#)
            .expect("an answer");
        back.inner.put(CacheKey(7), answer).now_or_never();
        let t = TieredStore::new(back.clone(), 10, 1 << 20, Duration::from_secs(300));
        for _ in 0..5 {
            assert!(t.get(CacheKey(7)).now_or_never().flatten().is_some());
        }
        assert_eq!(
            back.gets.load(Ordering::Relaxed),
            1,
            "one round trip, then the front"
        );
        assert!(t.get(CacheKey(8)).now_or_never().flatten().is_none());
        let s = t.stats();
        assert_eq!((s.hits, s.misses), (5, 1));
    }
}
