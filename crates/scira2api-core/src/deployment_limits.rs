//! The `rpm` and `tpm` of the model groups' deployments as buckets checked when a deployment
//! is picked: a request bucket (`rpm` a minute, holding `rpm`) and a token budget from which a
//! chat request reserves its prompt plus its `max_tokens` (settled with the real usage when the
//! answer ends, as for a key's `tpm`), so that a burst cannot overshoot while answers are still
//! being written. In this process's memory, or in Redis with `REDIS_URL` (shared by every
//! replica; while Redis cannot answer each replica's own minute window decides alone). The
//! deployment's own window (the router's) applies beside them.

use crate::tpm::TokenReservation;
use scira2api_limiter::{
    BucketConfig, Check, MemoryLimiter, MemoryTokens, RateLimiter, TokenLimiter,
};
use scira2api_models::{Deployment, Router};
use std::collections::HashMap;
use std::sync::Arc;

/// See the module docs.
pub(crate) struct DeploymentLimits {
    requests: Arc<dyn RateLimiter>,
    tokens: Arc<dyn TokenLimiter>,
    /// Each limited deployment's name in the stores (`d:group|instance|model`), by address.
    ids: HashMap<usize, Arc<str>>,
}

/// What the limits say about one pick.
pub(crate) enum Admit {
    /// It may take the request (with its tokens reserved, when it has a `tpm`).
    Yes(Option<TokenReservation>),
    /// It is at its `rpm` or `tpm`.
    No,
}

impl DeploymentLimits {
    /// The limits of `router`'s deployments (in Redis when `shared`), or `None` when none has
    /// an `rpm` or a `tpm`.
    pub(crate) fn of(
        router: &Router,
        shared: Option<&crate::shared::SharedStore>,
        max_keys: usize,
    ) -> Option<Self> {
        let mut ids = HashMap::new();
        for g in router.groups() {
            for d in g
                .deployments
                .iter()
                .filter(|d| d.rpm.is_some() || d.tpm.is_some())
            {
                ids.insert(
                    Arc::as_ptr(d) as usize,
                    Arc::from(crate::shared::deployment_field(&g.name, d)),
                );
            }
        }
        if ids.is_empty() {
            return None;
        }
        let (requests, tokens) = match shared {
            Some(s) => s.deployment_stores(max_keys),
            None => (
                Arc::new(MemoryLimiter::new(None, None, ids.len())) as Arc<dyn RateLimiter>,
                Arc::new(MemoryTokens::new(ids.len())) as Arc<dyn TokenLimiter>,
            ),
        };
        Some(DeploymentLimits {
            requests,
            tokens,
            ids,
        })
    }

    /// Takes one request from `d`'s `rpm` bucket and reserves `tokens` from its `tpm` budget.
    pub(crate) async fn admit(&self, d: &Arc<Deployment>, tokens: Option<u64>) -> Admit {
        let Some(id) = self.ids.get(&(Arc::as_ptr(d) as usize)) else {
            return Admit::Yes(None);
        };
        if let Some(rpm) = d.rpm {
            let own = BucketConfig {
                per_second: rpm as f64 / 60.0,
                burst: rpm,
            };
            let decision = match self.requests.check(id, Some(own)) {
                Check::Now(d) => d,
                Check::Later(f) => f.await,
            };
            if !decision.allowed {
                return Admit::No;
            }
        }
        let (Some(tpm), Some(n)) = (d.tpm, tokens) else {
            return Admit::Yes(None);
        };
        let decision = match self.tokens.reserve(id, tpm, n) {
            Check::Now(d) => d,
            Check::Later(f) => f.await,
        };
        if !decision.allowed {
            return Admit::No;
        }
        Admit::Yes(Some(TokenReservation::new(
            self.tokens.clone(),
            id.clone(),
            tpm,
            n.min(tpm),
        )))
    }
}
