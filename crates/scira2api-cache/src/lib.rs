//! Caches for scira2api on quick_cache: complete chat answers, and the upstream's model list.
//!
//! * [`cache_key`] hashes everything that shapes an answer — provider, upstream model, messages
//!   and every generation parameter — in a canonical form, so the order of fields in the
//!   client's JSON does not matter.
//! * [`ResponseStore`] is the small trait the gateway talks to; [`MemoryStore`] keeps answers in
//!   a bounded quick_cache (entries and bytes) with a TTL. A shared store (Redis) can implement
//!   the same trait without touching the HTTP layer.
//! * [`TtlCell`] holds one value with a TTL and keeps the last good value for when a refresh
//!   fails (the model list).

#![deny(missing_docs)]

mod settings;
mod stored;
mod tiered;

pub use settings::{CacheScope, CacheSettings};
pub use stored::{MemoryResponses, ResponseObjects, StoredResponse};
pub use tiered::{FRONT_TTL, TieredStore};

use futures_util::future::{BoxFuture, ready};
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use scira2api_types::{Answer, RawObject};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A 128-bit hash of what shapes an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub u128);

/// Request fields that never change the answer and so stay out of the key.
const NOT_IN_KEY: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
];

/// Writes `v` as JSON with object keys sorted at every level.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// The key of a chat request: `provider`, the upstream model, every top-level field except
/// [`NOT_IN_KEY`] (canonical JSON), and `scope` (the client's key with `CACHE_SCOPE=per_key`).
pub fn cache_key(
    provider: &str,
    internal_model: &str,
    request: &RawObject,
    scope: Option<&str>,
) -> CacheKey {
    let mut buf = Vec::with_capacity(request.bytes().len() + 64);
    buf.extend_from_slice(provider.as_bytes());
    buf.push(0);
    buf.extend_from_slice(internal_model.as_bytes());
    buf.push(0);
    if let Some(s) = scope {
        buf.extend_from_slice(s.as_bytes());
    }
    buf.push(0);
    let mut keys: Vec<&str> = request
        .keys()
        .filter(|k| *k != "model" && !NOT_IN_KEY.contains(k))
        .collect();
    keys.sort_unstable();
    for k in keys {
        buf.extend_from_slice(k.as_bytes());
        buf.push(b'=');
        match request.get::<Value>(k) {
            Some(Ok(v)) => canonical(&v, &mut buf),
            _ => buf.extend_from_slice(request.raw(k).unwrap_or("").as_bytes()),
        }
        buf.push(0);
    }
    CacheKey(xxhash_rust::xxh3::xxh3_128(&buf))
}

/// Cache counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that found nothing (or only an expired entry).
    pub misses: u64,
    /// Answers stored.
    pub entries: u64,
    /// What the entries weigh against `max_bytes`: each answer's approximate size, but at least
    /// `max_bytes / max_entries` (so that the entry bound holds too). Not the bytes held.
    pub bytes: u64,
}

/// Where complete answers are kept. Asynchronous so that a networked store fits behind it.
pub trait ResponseStore: Send + Sync {
    /// The fresh answer for `key`, if any (expired answers are never returned).
    fn get(&self, key: CacheKey) -> BoxFuture<'_, Option<Arc<Answer>>>;
    /// Stores a complete answer (callers store only complete, successful answers).
    fn put(&self, key: CacheKey, answer: Answer) -> BoxFuture<'_, ()>;
    /// Counters.
    fn stats(&self) -> CacheStats;
}

#[derive(Clone)]
struct Entry {
    answer: Arc<Answer>,
    expires: Instant,
    weight: u64,
}

/// Weighs entries so that one bound enforces both limits: an entry weighs its size in bytes,
/// but at least `max_bytes / max_entries`.
#[derive(Clone)]
struct EntryWeighter {
    min_weight: u64,
}

impl Weighter<u128, Entry> for EntryWeighter {
    fn weight(&self, _key: &u128, e: &Entry) -> u64 {
        e.weight.max(self.min_weight)
    }
}

/// Answers in memory: bounded by entries and bytes (quick_cache evicts), expired after `ttl`.
pub struct MemoryStore {
    cache: Cache<u128, Entry, EntryWeighter>,
    ttl: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl MemoryStore {
    /// A store for at most `max_entries` answers and about `max_bytes` bytes, each kept `ttl`.
    pub fn new(ttl: Duration, max_entries: u64, max_bytes: u64) -> Self {
        let max_entries = max_entries.max(1);
        let max_bytes = max_bytes.max(1024);
        let weighter = EntryWeighter {
            min_weight: (max_bytes / max_entries).max(1),
        };
        MemoryStore {
            cache: Cache::with_weighter(max_entries as usize, max_bytes, weighter),
            ttl,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lookup(&self, key: CacheKey) -> Option<Arc<Answer>> {
        let found = match self.cache.get(&key.0) {
            Some(e) if e.expires > Instant::now() => Some(e.answer),
            Some(_) => {
                self.cache.remove(&key.0);
                None
            }
            None => None,
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }
}

impl ResponseStore for MemoryStore {
    fn get(&self, key: CacheKey) -> BoxFuture<'_, Option<Arc<Answer>>> {
        Box::pin(ready(self.lookup(key)))
    }

    fn put(&self, key: CacheKey, answer: Answer) -> BoxFuture<'_, ()> {
        let weight = answer.weight() as u64;
        self.cache.insert(
            key.0,
            Entry {
                answer: Arc::new(answer),
                expires: Instant::now() + self.ttl,
                weight,
            },
        );
        Box::pin(ready(()))
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.cache.len() as u64,
            bytes: self.cache.weight(),
        }
    }
}

/// One value with a time to live that remembers the last good value after it expires.
pub struct TtlCell<T> {
    ttl: Duration,
    slot: Mutex<Option<(Instant, Arc<T>)>>,
}

impl<T> TtlCell<T> {
    /// An empty cell.
    pub fn new(ttl: Duration) -> Self {
        TtlCell {
            ttl,
            slot: Mutex::new(None),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Arc<T>)>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value if it is still fresh.
    pub fn fresh(&self) -> Option<Arc<T>> {
        self.slot()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    /// The last value stored, fresh or not.
    pub fn last(&self) -> Option<Arc<T>> {
        self.slot().as_ref().map(|(_, v)| v.clone())
    }

    /// Stores a new good value.
    pub fn set(&self, value: T) -> Arc<T> {
        let v = Arc::new(value);
        *self.slot() = Some((Instant::now(), v.clone()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use scira2api_types::AnswerChoice;

    fn obj(s: &str) -> RawObject {
        RawObject::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    fn key(s: &str) -> CacheKey {
        cache_key("openai", "int", &obj(s), None)
    }

    #[test]
    fn key_ignores_field_order_stream_and_user_but_not_parameters() {
        let a = key(
            r#"{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":0.5,"tools":[{"b":1,"a":2}]}"#,
        );
        let b = key(
            r#"{"tools":[{"a":2,"b":1}],"temperature":0.50,"stream":true,"user":"u","messages":[{"content":"hi","role":"user"}],"model":"y"}"#,
        );
        assert_eq!(
            a, b,
            "order, stream, user and the external name do not matter"
        );
        let c = key(
            r#"{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":0.6,"tools":[{"b":1,"a":2}]}"#,
        );
        assert_ne!(a, c, "temperature matters");
        let d = key(
            r#"{"model":"x","messages":[{"role":"user","content":"hi!"}],"temperature":0.5,"tools":[{"b":1,"a":2}]}"#,
        );
        assert_ne!(a, d, "messages matter");
        let body = r#"{"model":"x","messages":[]}"#;
        assert_ne!(
            cache_key("openai", "int", &obj(body), None),
            cache_key("scira", "int", &obj(body), None)
        );
        assert_ne!(
            cache_key("openai", "int", &obj(body), None),
            cache_key("openai", "int2", &obj(body), None)
        );
        assert_ne!(
            cache_key("openai", "int", &obj(body), Some("k1")),
            cache_key("openai", "int", &obj(body), Some("k2"))
        );
    }

    fn answer(text: &str) -> Answer {
        Answer {
            choices: vec![AnswerChoice {
                index: 0,
                content: Some(text.to_owned()),
                finish_reason: Some("stop".into()),
                ..AnswerChoice::default()
            }],
            ..Answer::default()
        }
    }

    #[actix_rt::test]
    async fn stores_and_expires() {
        let s = MemoryStore::new(Duration::from_millis(50), 100, 1 << 20);
        assert!(s.get(CacheKey(1)).await.is_none());
        s.put(CacheKey(1), answer("a")).await;
        assert_eq!(
            s.get(CacheKey(1)).await.unwrap().choices[0]
                .content
                .as_deref(),
            Some("a")
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            s.get(CacheKey(1)).await.is_none(),
            "expired answers are never served"
        );
        let st = s.stats();
        assert_eq!((st.hits, st.misses), (1, 2));
    }

    #[actix_rt::test]
    async fn bounded_by_entries_and_bytes() {
        let s = MemoryStore::new(Duration::from_secs(60), 10, 1 << 20);
        for i in 0..1000 {
            s.put(CacheKey(i), answer("x")).await;
        }
        assert!(s.stats().entries <= 10, "{:?}", s.stats());
        let s = MemoryStore::new(Duration::from_secs(60), 1000, 64 * 1024);
        let big = "y".repeat(10 * 1024);
        for i in 0..100 {
            s.put(CacheKey(i), answer(&big)).await;
        }
        assert!(s.stats().bytes <= 64 * 1024, "{:?}", s.stats());
        assert!(s.stats().entries <= 6, "{:?}", s.stats());
    }

    #[test]
    fn ttl_cell_keeps_last_good_value() {
        let c = TtlCell::new(Duration::from_millis(20));
        assert!(c.fresh().is_none() && c.last().is_none());
        c.set(vec![1]);
        assert_eq!(*c.fresh().unwrap(), vec![1]);
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.fresh().is_none());
        assert_eq!(*c.last().unwrap(), vec![1]);
    }
}
