//! Request ids: taken from the client's `X-Request-Id` or minted, returned on every response,
//! and attached to every log line written while the request is handled.
//!
//! The id lives in a task-local for the duration of the request's handling, so code deep in the
//! gateway (retries, upstream errors) logs it without passing it around; the server's log
//! format reads it with [`current`].

use crate::Observation;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

/// What the task-local holds: the id, and the request's record when the HTTP layer keeps one.
struct Current {
    id: Arc<str>,
    observation: Option<Rc<Observation>>,
}

tokio::task_local! {
    static CURRENT: Current;
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<Arc<str>> {
    CURRENT.try_with(|c| Arc::clone(&c.id)).ok()
}

/// The record ([`Observation`]) of the request being handled on this task, if it has one.
/// Kept here rather than in the request's extensions: the id's task-local is there anyway, and
/// an extension costs a map insert and a box for every request.
pub fn observation() -> Option<Rc<Observation>> {
    CURRENT.try_with(|c| c.observation.clone()).ok().flatten()
}

// These two are plain functions returning the task-local's future, not `async fn`s: an
// `async fn` would keep `f` in its own state beside the task-local future it moves `f` into,
// twice the size (the gate's future, 1.9 KB, held the chat route's chain that way).

/// Runs `f` with `id` as the current request id.
pub fn scope<F: Future>(id: Arc<str>, f: F) -> impl Future<Output = F::Output> {
    let current = Current {
        id,
        observation: None,
    };
    CURRENT.scope(current, f)
}

/// Runs `f` with `observation` as the current request's record, and its id as the current id.
pub fn scope_observed<F: Future>(
    observation: Rc<Observation>,
    f: F,
) -> impl Future<Output = F::Output> {
    let current = Current {
        id: Arc::clone(observation.id()),
        observation: Some(observation),
    };
    CURRENT.scope(current, f)
}

/// The client's id when it is usable (1-128 visible ASCII characters), else a fresh one.
pub fn from_client(header: Option<&str>) -> Arc<str> {
    match header.map(str::trim) {
        Some(id)
            if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Arc::from(id)
        }
        _ => mint(),
    }
}

/// A fresh id, `req_<32 hex>` (128 random bits from a fast non-cryptographic generator: ids
/// need to be unique, not secret, and minting one must not cost a system call).
pub fn mint() -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // On the stack, then one allocation for the `Arc` (this runs for every request).
    let mut id = *b"req_00000000000000000000000000000000";
    let bits = fastrand::u128(..);
    for (i, b) in id[4..].iter_mut().enumerate() {
        *b = HEX[((bits >> ((31 - i) * 4)) & 0xf) as usize];
    }
    Arc::from(std::str::from_utf8(&id).unwrap_or("req_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_checked() {
        assert_eq!(&*from_client(Some("abc-123")), "abc-123");
        assert!(from_client(Some("has space")).starts_with("req_"));
        assert!(from_client(Some("")).starts_with("req_"));
        assert!(from_client(Some(&"x".repeat(200))).starts_with("req_"));
        let minted = from_client(None);
        assert_eq!(minted.len(), 36);
        assert!(minted.starts_with("req_"));
        assert!(
            minted[4..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(mint(), mint());
    }

    #[actix_rt::test]
    async fn scoped_id_is_visible_inside_only() {
        assert!(current().is_none());
        let id: Arc<str> = Arc::from("r1");
        let seen = scope(id, async { (current(), observation().is_none()) }).await;
        assert_eq!(seen, (Some(Arc::from("r1")), true));
    }

    #[actix_rt::test]
    async fn the_observation_and_its_id_are_visible_inside_only() {
        let vars = [("BASE_URL", "http://127.0.0.1:9")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let state = crate::GatewayState::new(crate::Config::from_vars(vars).unwrap());
        let o = Observation::open(
            state,
            Arc::from("r2"),
            std::time::Instant::now(),
            ("POST", "/v1/chat/completions"),
            "/v1/chat/completions",
        );
        let (id, seen) = scope_observed(o.clone(), async {
            tokio::task::yield_now().await;
            (current(), observation())
        })
        .await;
        assert_eq!(id.as_deref(), Some("r2"));
        assert!(seen.is_some_and(|s| Rc::ptr_eq(&s, &o)));
        assert!(observation().is_none() && current().is_none());
    }
}
