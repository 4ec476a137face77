//! Per-key policies: a client key of the config file may carry its own request limit and a
//! list of the models it may use. `APIKEY` keys, and file keys written as plain strings, keep
//! the global defaults.
//!
//! The HTTP layer finds the key's policy when it checks the key, uses its bucket for the rate
//! limit, and runs the request's handling inside [`scope`]; the gateway's entry points then ask
//! [`admit_model`] before anything else, and the model list shows only what the key may use.

use crate::config::Config;
use scira2api_limiter::{BucketConfig, Decision};
use scira2api_types::Error;
use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

/// What one client key may do.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    /// The key's identity in budgets (`key:` + a hash of it; never the key).
    pub id: Arc<str>,
    /// A name for the access log (the config file's `name`).
    pub name: Option<Arc<str>>,
    /// Its own rate-limit bucket, instead of the default one.
    pub bucket: Option<BucketConfig>,
    /// Its budget of tokens per minute (prompt and completion), if limited.
    pub tpm: Option<u64>,
    /// The only models it may use: exact names, or prefixes ending in `*`; `None`: any.
    pub models: Option<Vec<String>>,
}

impl KeyPolicy {
    /// Whether the key may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|list| {
            list.iter().any(|m| match m.strip_suffix('*') {
                Some(prefix) => model.starts_with(prefix),
                None => m == model,
            })
        })
    }
}

/// Each client key's policy, in the order of `config.auth.api_keys` (`None`: the defaults).
pub(crate) fn policies(config: &Config) -> Vec<Option<Arc<KeyPolicy>>> {
    let specs = config
        .file
        .as_ref()
        .map_or(&[][..], |f| f.key_policies.as_slice());
    config
        .auth
        .api_keys
        .iter()
        .map(|key| {
            // The file's entry for the key (the last one, as a later entry wins).
            let spec = specs.iter().rev().find(|s| &s.key == key)?;
            Some(Arc::new(KeyPolicy {
                id: Arc::from(format!(
                    "key:{:016x}",
                    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
                )),
                tpm: spec.tpm,
                name: spec.name.as_deref().map(Arc::from),
                bucket: spec.rpm.map(|rpm| BucketConfig {
                    per_second: rpm as f64 / 60.0,
                    burst: spec.burst.unwrap_or(rpm),
                }),
                models: spec.models.clone(),
            }))
        })
        .collect()
}

/// Whether some key of the config file has a request limit of its own (then the gateway keeps a
/// limiter for it even with `RATE_LIMIT_ENABLED=false`, which then limits those keys only).
pub(crate) fn own_limits(config: &Config) -> bool {
    config
        .file
        .as_ref()
        .is_some_and(|f| f.key_policies.iter().any(|k| k.rpm.is_some()))
}

/// Whether some key of the config file has a token budget (`tpm`).
pub(crate) fn token_limits(config: &Config) -> bool {
    config
        .file
        .as_ref()
        .is_some_and(|f| f.key_policies.iter().any(|k| k.tpm.is_some()))
}

/// A request handled under a key's policy, and what the gateway learnt for its response
/// headers (the token budget's state after its reservation).
pub struct ClientScope {
    policy: Arc<KeyPolicy>,
    tokens: Cell<Option<Decision>>,
}

impl ClientScope {
    /// The scope of a request let in with a key that has `policy`.
    pub fn new(policy: Arc<KeyPolicy>) -> Rc<ClientScope> {
        Rc::new(ClientScope {
            policy,
            tokens: Cell::new(None),
        })
    }

    /// The token budget's state after the request's reservation, if one was made
    /// (`x-ratelimit-*-tokens`).
    pub fn tokens(&self) -> Option<Decision> {
        self.tokens.get()
    }
}

tokio::task_local! {
    static SCOPE: Rc<ClientScope>;
}

/// Runs `f` (a request's handling) under the client key's policy. (A plain function: an
/// `async fn` would hold `f` twice, see `request_id::scope`.)
pub fn scope<F: Future>(scope: Rc<ClientScope>, f: F) -> impl Future<Output = F::Output> {
    SCOPE.scope(scope, f)
}

/// The policy of the request being handled on this task, if its key has one.
pub fn current() -> Option<Arc<KeyPolicy>> {
    SCOPE.try_with(|s| s.policy.clone()).ok()
}

/// Notes the token budget's state for the response headers.
pub(crate) fn note_tokens(d: Decision) {
    let _ = SCOPE.try_with(|s| s.tokens.set(Some(d)));
}

/// `Ok` when the request's key may use `model` (any key without a model list may); otherwise
/// 404 `model_not_found`, as OpenAI answers for a model a key has no access to (which does not
/// tell whether the model exists).
pub fn admit_model(model: &str) -> Result<(), Error> {
    match SCOPE.try_with(|s| s.policy.allows(model)) {
        Ok(false) => Err(Error::ModelNotFound(model.to_owned())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lists_take_names_and_prefixes() {
        let p = KeyPolicy {
            id: Arc::from("key:0"),
            name: None,
            bucket: None,
            tpm: None,
            models: Some(vec!["gpt-4o".into(), "claude-*".into()]),
        };
        assert!(p.allows("gpt-4o") && p.allows("claude-sonnet-4-5"));
        assert!(!p.allows("gpt-4o-mini") && !p.allows("o3"));
        let any = KeyPolicy {
            models: None,
            ..p.clone()
        };
        assert!(any.allows("anything"));
    }

    #[actix_rt::test]
    async fn the_policy_applies_inside_its_scope_only() {
        assert!(admit_model("x").is_ok(), "no policy: anything");
        let p = ClientScope::new(Arc::new(KeyPolicy {
            id: Arc::from("key:1"),
            name: Some(Arc::from("t")),
            bucket: None,
            tpm: None,
            models: Some(vec!["a".into()]),
        }));
        let inside = scope(p, async { (admit_model("a"), admit_model("b")) }).await;
        assert!(inside.0.is_ok());
        let e = inside.1.unwrap_err();
        assert_eq!(e.status(), 404);
        assert!(admit_model("b").is_ok());
    }
}
