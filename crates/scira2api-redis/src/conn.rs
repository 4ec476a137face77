//! The one connection to Redis: a connection manager driven by a thread of its own (so that no
//! actix worker's runtime carries it), a deadline on every call, and a circuit breaker that
//! stops calling for a while after repeated failures — so that no request ever waits on a sick
//! Redis for longer than the deadline, and most not at all.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures in a row that open the breaker.
pub const BREAKER_FAILURES: u32 = 3;
/// How long an open breaker stops calling before one call probes again.
pub const BREAKER_OPEN: Duration = Duration::from_secs(2);

/// Why a Redis call gave no answer.
#[derive(Debug)]
pub enum Failure {
    /// Not connected (yet), or the breaker is open: nothing was sent.
    Unavailable,
    /// No answer within the deadline.
    Timeout,
    /// Redis answered with an error, or the connection broke.
    Error(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unavailable => f.write_str("not connected"),
            Failure::Timeout => f.write_str("no answer within REDIS_TIMEOUT"),
            Failure::Error(e) => f.write_str(e),
        }
    }
}

/// The state shown in `/health` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisState {
    /// Not connected yet.
    Connecting,
    /// Answering.
    Up,
    /// Failing: the breaker is open or calls fail.
    Down,
}

impl RedisState {
    /// `connecting`, `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisState::Connecting => "connecting",
            RedisState::Up => "up",
            RedisState::Down => "down",
        }
    }
}

struct Inner {
    conn: Mutex<Option<ConnectionManager>>,
    deadline: Duration,
    prefix: String,
    started: Instant,
    /// Consecutive failures.
    failures: AtomicU32,
    /// Until when the breaker is open, in ms since `started` (0: closed).
    open_until: AtomicU64,
    /// Whether the last state change said "down" (for logging each change once).
    down: AtomicBool,
    errors: AtomicU64,
}

/// A shared handle on the Redis connection (cheap to clone).
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

/// `redis://user:secret@host` with the password hidden, for logs.
pub fn masked(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

impl Redis {
    /// Starts connecting to `url` on a thread of its own (retrying until it succeeds); calls
    /// fail fast as [`Failure::Unavailable`] until then. Keys are prefixed with `prefix`.
    pub fn connect(url: &str, deadline: Duration, prefix: &str) -> Result<Redis, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("REDIS_URL {} is not usable: {e}", masked(url)))?;
        let redis = Redis {
            inner: Arc::new(Inner {
                conn: Mutex::new(None),
                deadline,
                prefix: prefix.to_owned(),
                started: Instant::now(),
                failures: AtomicU32::new(0),
                open_until: AtomicU64::new(0),
                down: AtomicBool::new(false),
                errors: AtomicU64::new(0),
            }),
        };
        let inner = redis.inner.clone();
        let shown = masked(url);
        std::thread::Builder::new()
            .name("redis".to_owned())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("cannot start the Redis connection's runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(2)))
                        .set_response_timeout(Some(deadline.max(Duration::from_millis(10))))
                        .set_number_of_retries(2)
                        .set_max_delay(Duration::from_secs(1));
                    let mut warned = false;
                    loop {
                        match ConnectionManager::new_with_config(client.clone(), config.clone())
                            .await
                        {
                            Ok(m) => {
                                *lock(&inner.conn) = Some(m);
                                log::info!("Redis {shown}: connected");
                                break;
                            }
                            Err(e) => {
                                if !warned {
                                    log::warn!(
                                        "Redis {shown}: cannot connect ({e}); retrying every second"
                                    );
                                    warned = true;
                                }
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                    // The connection's tasks live on this runtime.
                    std::future::pending::<()>().await;
                });
            })
            .map_err(|e| format!("cannot start the Redis thread: {e}"))?;
        Ok(redis)
    }

    /// `name` under the configured prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.inner.prefix)
    }

    fn now_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    /// Whether a call would be made now (connected, and the breaker not open).
    pub fn available(&self) -> bool {
        self.now_ms() >= self.inner.open_until.load(Ordering::Relaxed)
            && lock(&self.inner.conn).is_some()
    }

    /// What `/health` shows.
    pub fn state(&self) -> RedisState {
        if lock(&self.inner.conn).is_none() {
            RedisState::Connecting
        } else if self.inner.down.load(Ordering::Relaxed) {
            RedisState::Down
        } else {
            RedisState::Up
        }
    }

    /// Calls that failed (timeouts and errors).
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Runs `call` on the connection within the deadline; the breaker counts the outcome.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, Failure>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if self.now_ms() < self.inner.open_until.load(Ordering::Relaxed) {
            return Err(Failure::Unavailable);
        }
        let Some(conn) = lock(&self.inner.conn).clone() else {
            return Err(Failure::Unavailable);
        };
        let result = match tokio::time::timeout(self.inner.deadline, call(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::Error(e.to_string())),
            Err(_) => Err(Failure::Timeout),
        };
        match &result {
            Ok(_) => self.succeeded(),
            Err(e) => self.failed(e),
        }
        result
    }

    fn succeeded(&self) {
        self.inner.failures.store(0, Ordering::Relaxed);
        self.inner.open_until.store(0, Ordering::Relaxed);
        if self.inner.down.swap(false, Ordering::Relaxed) {
            log::info!("Redis answers again: shared rate limits and cache are back");
        }
    }

    fn failed(&self, e: &Failure) {
        self.inner.errors.fetch_add(1, Ordering::Relaxed);
        let n = self.inner.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= BREAKER_FAILURES {
            let until = self.now_ms() + BREAKER_OPEN.as_millis() as u64;
            self.inner.open_until.store(until, Ordering::Relaxed);
            if !self.inner.down.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "Redis fails ({e}, {n} times in a row): not called for {}s at a time until it answers",
                    BREAKER_OPEN.as_secs()
                );
            }
        } else {
            log::debug!("Redis call failed: {e}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(masked("redis://:s3cret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(masked("rediss://u:p@h"), "rediss://***@h");
        assert_eq!(masked("redis://h:6379"), "redis://h:6379");
    }

    #[actix_rt::test]
    async fn an_unreachable_redis_fails_fast_and_opens_the_breaker() {
        let r = Redis::connect("redis://127.0.0.1:1", Duration::from_millis(20), "t:").unwrap();
        assert_eq!(r.state(), RedisState::Connecting);
        let started = Instant::now();
        let e = r
            .run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await;
        assert!(matches!(e, Err(Failure::Unavailable)), "{e:?}");
        assert!(started.elapsed() < Duration::from_millis(20));
        assert!(!r.available());
    }
}
