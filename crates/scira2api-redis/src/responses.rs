//! Stored Responses API responses (`store: true`) in Redis, so that `GET`/`DELETE
//! /v1/responses/{id}` and `previous_response_id` work on any replica: one hash per response
//! (`resp:{id}`: the response object and the conversation it answered) with the memory store's
//! TTL. A response Redis cannot take (it is away) is kept in this replica's memory instead, and
//! looked for there when Redis does not have it: it is then served by this replica only.

use crate::conn::Redis;
use futures_util::future::BoxFuture;
use scira2api_cache::{MemoryResponses, ResponseObjects, StoredResponse};
use std::sync::Arc;
use std::time::Duration;

/// Stored responses in Redis; see the module docs.
pub struct RedisResponses {
    redis: Redis,
    ttl: Duration,
    /// Where a response goes while Redis cannot take it.
    local: MemoryResponses,
}

impl RedisResponses {
    /// Responses kept `ttl` in `redis`; `local` holds those written while it is away.
    pub fn new(redis: Redis, ttl: Duration, local: MemoryResponses) -> RedisResponses {
        RedisResponses { redis, ttl, local }
    }

    fn key(&self, id: &str) -> String {
        self.redis.key(&format!("resp:{id}"))
    }
}

impl ResponseObjects for RedisResponses {
    fn get(&self, id: &str) -> BoxFuture<'_, Option<Arc<StoredResponse>>> {
        let key = self.key(id);
        let id = id.to_owned();
        Box::pin(async move {
            let found = self
                .redis
                .run(|mut conn| async move {
                    redis::cmd("HMGET")
                        .arg(&key)
                        .arg("r")
                        .arg("i")
                        .query_async::<(Option<Vec<u8>>, Option<Vec<u8>>)>(&mut conn)
                        .await
                })
                .await;
            match found {
                Ok((Some(r), Some(i))) => Some(Arc::new(StoredResponse {
                    response: bytes::Bytes::from(r),
                    input: bytes::Bytes::from(i),
                })),
                _ => self.local.get(&id).await,
            }
        })
    }

    fn put(&self, id: String, response: StoredResponse) -> BoxFuture<'_, ()> {
        let key = self.key(&id);
        let ttl = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Box::pin(async move {
            let (r, i) = (response.response.clone(), response.input.clone());
            let written = self
                .redis
                .run(|mut conn| async move {
                    redis::pipe()
                        .atomic()
                        .cmd("HSET")
                        .arg(&key)
                        .arg("r")
                        .arg(&r[..])
                        .arg("i")
                        .arg(&i[..])
                        .ignore()
                        .cmd("PEXPIRE")
                        .arg(&key)
                        .arg(ttl)
                        .ignore()
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await;
            if let Err(e) = written {
                log::warn!(
                    "stored response {id}: Redis cannot take it ({e}); kept by this replica only"
                );
                self.local.put(id, response).await;
            }
        })
    }

    fn delete(&self, id: &str) -> BoxFuture<'_, bool> {
        let key = self.key(id);
        let id = id.to_owned();
        Box::pin(async move {
            let removed = self
                .redis
                .run(|mut conn| async move {
                    redis::cmd("DEL")
                        .arg(&key)
                        .query_async::<u64>(&mut conn)
                        .await
                })
                .await
                .unwrap_or(0);
            let local = self.local.delete(&id).await;
            removed > 0 || local
        })
    }
}
