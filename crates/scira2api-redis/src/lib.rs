//! Redis (or Valkey) behind scira2api's seams, for several replicas sharing one store
//! (`REDIS_URL`): request rate limits ([`RedisLimiter`], one atomic script per decision) and
//! the response cache ([`RedisStore`]) and upstream cool-downs ([`RestBoard`]). Every call has a short deadline (`REDIS_TIMEOUT`) and a
//! circuit breaker stops calling a Redis that keeps failing, so nothing waits on a sick Redis;
//! what the limiter then does is the operator's choice ([`FailMode`]), and the cache simply
//! misses. Without `REDIS_URL` the gateway keeps its in-memory limiter and cache.

#![deny(missing_docs)]

mod conn;
mod limiter;
mod responses;
mod rests;
mod store;
mod tokens;

pub use conn::{BREAKER_FAILURES, BREAKER_OPEN, Failure, Redis, RedisState, masked};
pub use limiter::{FailMode, RedisLimiter};
pub use responses::RedisResponses;
pub use rests::RestBoard;
pub use store::RedisStore;
pub use tokens::RedisTokens;

use std::time::Duration;

/// The Redis section of the settings, with its defaults.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…`; `None`: no Redis. Secret.
    pub url: Option<String>,
    /// The longest any call may take (`REDIS_TIMEOUT`).
    pub timeout: Duration,
    /// Prefix of every key the gateway writes (`REDIS_KEY_PREFIX`).
    pub prefix: String,
    /// What the rate limiter does without Redis (`RATE_LIMIT_FAIL_MODE`).
    pub fail_mode: FailMode,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: None,
            timeout: Duration::from_millis(50),
            prefix: "scira2api:".to_owned(),
            fail_mode: FailMode::Local,
        }
    }
}

/// Shows the URL with its password hidden.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url.as_deref().map(masked))
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .field("fail_mode", &self.fail_mode)
            .finish()
    }
}
