//! The response cache in Redis: the same keys (a hash of everything that shapes the answer) and
//! TTL as the in-memory store, so an answer one replica stored is served by every other. An
//! answer larger than the memory store's per-entry share is not stored, as there. The cache
//! never fails a request: any Redis error or timeout is a miss, and a store that fails is
//! skipped.

use crate::conn::Redis;
use futures_util::future::BoxFuture;
use redis::AsyncCommands;
use scira2api_cache::{CacheKey, CacheStats, ResponseStore};
use scira2api_types::{Answer, AnswerChoice, Citation, ToolCall, Usage};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// An answer as it is kept in Redis (JSON).
#[derive(Serialize, Deserialize)]
struct Stored {
    choices: Vec<StoredChoice>,
    usage: Option<Usage>,
    estimated: bool,
    fingerprint: Option<String>,
    /// A verbatim body (embeddings, legacy completions), as text: those bodies are JSON.
    body: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredChoice {
    index: u32,
    content: Option<String>,
    reasoning: Option<String>,
    /// `(id, name, arguments)`.
    tools: Vec<(String, String, String)>,
    finish: Option<String>,
    /// `(url, title, start, end)`.
    citations: Vec<(String, Option<String>, usize, usize)>,
}

impl Stored {
    fn of(a: &Answer) -> Option<Stored> {
        let body = match &a.body {
            Some(b) => Some(String::from_utf8(b.to_vec()).ok()?),
            None => None,
        };
        Some(Stored {
            choices: a
                .choices
                .iter()
                .map(|c| StoredChoice {
                    index: c.index,
                    content: c.content.clone(),
                    reasoning: c.reasoning_content.clone(),
                    tools: c
                        .tool_calls
                        .iter()
                        .map(|t| (t.id.clone(), t.name.clone(), t.arguments.clone()))
                        .collect(),
                    finish: c.finish_reason.clone(),
                    citations: c
                        .annotations
                        .iter()
                        .map(|x| (x.url.clone(), x.title.clone(), x.start_index, x.end_index))
                        .collect(),
                })
                .collect(),
            usage: a.usage,
            estimated: a.usage_estimated,
            fingerprint: a.system_fingerprint.clone(),
            body,
        })
    }

    fn answer(self) -> Answer {
        Answer {
            choices: self
                .choices
                .into_iter()
                .map(|c| AnswerChoice {
                    index: c.index,
                    content: c.content,
                    reasoning_content: c.reasoning,
                    tool_calls: c
                        .tools
                        .into_iter()
                        .map(|(id, name, arguments)| ToolCall {
                            id,
                            name,
                            arguments,
                        })
                        .collect(),
                    finish_reason: c.finish,
                    annotations: c
                        .citations
                        .into_iter()
                        .map(|(url, title, start_index, end_index)| Citation {
                            url,
                            title,
                            start_index,
                            end_index,
                        })
                        .collect(),
                })
                .collect(),
            usage: self.usage,
            usage_estimated: self.estimated,
            system_fingerprint: self.fingerprint,
            body: self.body.map(bytes::Bytes::from),
        }
    }
}

/// Complete answers in Redis; see the module docs.
pub struct RedisStore {
    redis: Redis,
    ttl: Duration,
    max_entry: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
}

impl RedisStore {
    /// Answers kept for `ttl`; none larger than `max_bytes / max_entries` (at least 64 KiB).
    pub fn new(redis: Redis, ttl: Duration, max_entries: u64, max_bytes: u64) -> Self {
        let share = max_bytes / max_entries.max(1);
        RedisStore {
            redis,
            ttl,
            max_entry: usize::try_from(share.max(64 * 1024)).unwrap_or(usize::MAX),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stored: AtomicU64::new(0),
        }
    }

    fn key(&self, key: CacheKey) -> String {
        self.redis.key(&format!("cache:{:032x}", key.0))
    }

    async fn lookup(&self, key: CacheKey) -> Option<Arc<Answer>> {
        let k = self.key(key);
        let found = self
            .redis
            .run(|mut c| async move { c.get::<_, Option<Vec<u8>>>(k).await })
            .await
            .ok()
            .flatten()
            .and_then(|raw| serde_json::from_slice::<Stored>(&raw).ok());
        match found {
            Some(s) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(Arc::new(s.answer()))
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    async fn store(&self, key: CacheKey, answer: Answer) {
        if answer.weight() > self.max_entry {
            return;
        }
        let Some(json) = Stored::of(&answer).and_then(|s| serde_json::to_vec(&s).ok()) else {
            return;
        };
        let k = self.key(key);
        let ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let ok = self
            .redis
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(k)
                    .arg(json)
                    .arg("PX")
                    .arg(ms)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
            .is_ok();
        if ok {
            self.stored.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ResponseStore for RedisStore {
    fn get(&self, key: CacheKey) -> BoxFuture<'_, Option<Arc<Answer>>> {
        Box::pin(self.lookup(key))
    }

    fn put(&self, key: CacheKey, answer: Answer) -> BoxFuture<'_, ()> {
        Box::pin(self.store(key, answer))
    }

    /// Hits and misses of this replica; `entries` counts what it stored (Redis holds the rest).
    fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.stored.load(Ordering::Relaxed),
            bytes: 0,
        }
    }
}
