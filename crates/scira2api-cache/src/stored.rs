//! Stored Responses API responses (`store: true`), for `GET`/`DELETE /v1/responses/{id}` and
//! `previous_response_id`: behind an async trait so that a shared store (Redis) can replace the
//! in-memory one, which is bounded by entries and bytes and expires entries after a TTL.

use futures_util::future::{BoxFuture, ready};
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One stored response.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    /// The response object, as JSON.
    pub response: bytes::Bytes,
    /// The conversation items it answered (its history and its own input), a JSON array.
    pub input: bytes::Bytes,
}

impl StoredResponse {
    fn weight(&self) -> u64 {
        (self.response.len() + self.input.len() + 64) as u64
    }
}

/// Where stored responses are kept.
pub trait ResponseObjects: Send + Sync {
    /// The response `id`, unless unknown or expired.
    fn get(&self, id: &str) -> BoxFuture<'_, Option<Arc<StoredResponse>>>;
    /// Stores a response under its id.
    fn put(&self, id: String, response: StoredResponse) -> BoxFuture<'_, ()>;
    /// Removes a response; whether it was there.
    fn delete(&self, id: &str) -> BoxFuture<'_, bool>;
}

#[derive(Clone)]
struct Entry {
    stored: Arc<StoredResponse>,
    expires: Instant,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<String, Entry> for ByBytes {
    fn weight(&self, key: &String, e: &Entry) -> u64 {
        e.stored.weight() + key.len() as u64
    }
}

/// Stored responses in memory: at most `max_entries` and about `max_bytes`, each for `ttl`.
pub struct MemoryResponses {
    cache: Cache<String, Entry, ByBytes>,
    ttl: Duration,
}

impl MemoryResponses {
    /// A store bounded by entries and bytes, entries kept `ttl`.
    pub fn new(ttl: Duration, max_entries: u64, max_bytes: u64) -> Self {
        MemoryResponses {
            cache: Cache::with_weighter(max_entries.max(1) as usize, max_bytes.max(1024), ByBytes),
            ttl,
        }
    }

    /// Responses kept now.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

impl ResponseObjects for MemoryResponses {
    fn get(&self, id: &str) -> BoxFuture<'_, Option<Arc<StoredResponse>>> {
        let found = match self.cache.get(id) {
            Some(e) if e.expires > Instant::now() => Some(e.stored),
            Some(_) => {
                self.cache.remove(id);
                None
            }
            None => None,
        };
        Box::pin(ready(found))
    }

    fn put(&self, id: String, response: StoredResponse) -> BoxFuture<'_, ()> {
        self.cache.insert(
            id,
            Entry {
                stored: Arc::new(response),
                expires: Instant::now() + self.ttl,
            },
        );
        Box::pin(ready(()))
    }

    fn delete(&self, id: &str) -> BoxFuture<'_, bool> {
        Box::pin(ready(self.cache.remove(id).is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn stored(n: usize) -> StoredResponse {
        StoredResponse {
            response: bytes::Bytes::from(vec![b'x'; n]),
            input: bytes::Bytes::from_static(b"[]"),
        }
    }

    #[test]
    fn keeps_deletes_expires_and_bounds() {
        let s = MemoryResponses::new(Duration::from_secs(60), 100, 1 << 20);
        s.put("resp_a".into(), stored(10)).now_or_never();
        assert!(s.get("resp_a").now_or_never().flatten().is_some());
        assert_eq!(s.delete("resp_a").now_or_never(), Some(true));
        assert_eq!(s.delete("resp_a").now_or_never(), Some(false));
        assert!(s.get("resp_a").now_or_never().flatten().is_none());
        let short = MemoryResponses::new(Duration::from_millis(1), 100, 1 << 20);
        short.put("resp_b".into(), stored(10)).now_or_never();
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.get("resp_b").now_or_never().flatten().is_none());
        // 64 KiB of room: 100 responses of 4 KiB cannot all stay.
        let small = MemoryResponses::new(Duration::from_secs(60), 1000, 64 * 1024);
        for i in 0..100 {
            small.put(format!("resp_{i}"), stored(4096)).now_or_never();
        }
        assert!(small.len() < 20, "{}", small.len());
    }
}
