//! A request's token reservation (a key's `tpm`): taken when the request is admitted — its
//! prompt's token count plus the completion it allows (`max_completion_tokens`, `max_tokens`,
//! else `TPM_DEFAULT_MAX_TOKENS`) — and settled with the real usage when the answer ends (a
//! stream that breaks settles what it produced, estimated). Dropped unsettled (the upstream
//! failed before answering), everything goes back.

use crate::Gateway;
use scira2api_limiter::{Check, TokenLimiter};
use scira2api_types::{ChatRequest, Error};
use std::sync::Arc;

/// Tokens reserved for one request.
pub(crate) struct TokenReservation {
    limiter: Arc<dyn TokenLimiter>,
    key: Arc<str>,
    tpm: u64,
    reserved: u64,
    settled: bool,
}

impl TokenReservation {
    /// `reserved` tokens taken from `key`'s budget of `tpm` in `limiter`.
    pub(crate) fn new(
        limiter: Arc<dyn TokenLimiter>,
        key: Arc<str>,
        tpm: u64,
        reserved: u64,
    ) -> TokenReservation {
        TokenReservation {
            limiter,
            key,
            tpm,
            reserved,
            settled: false,
        }
    }

    /// Settles with what the answer used.
    pub(crate) fn settle(mut self, used: u64) {
        self.settled = true;
        let refund = i64::try_from(self.reserved).unwrap_or(i64::MAX)
            - i64::try_from(used).unwrap_or(i64::MAX);
        log::debug!("tokens: reserved {}, used {used}", self.reserved);
        self.limiter.settle(&self.key, self.tpm, refund);
    }
}

impl Drop for TokenReservation {
    fn drop(&mut self) {
        if !self.settled {
            // Nothing was answered: all of it goes back.
            self.limiter.settle(
                &self.key,
                self.tpm,
                i64::try_from(self.reserved).unwrap_or(i64::MAX),
            );
        }
    }
}

impl Gateway {
    /// Whether a chat request for `req` needs its token count: its key has a budget, or a
    /// deployment that may answer it has a `tpm`.
    pub(crate) fn counts_tokens(&self, req: &ChatRequest) -> bool {
        let state = self.state();
        let key = state.token_limiter().is_some()
            && crate::client::current().is_some_and(|p| p.tpm.is_some());
        key || (state.deployment_limits().is_some()
            && state
                .router()
                .chain(&req.model)
                .iter()
                .any(|g| g.deployments.iter().any(|d| d.tpm.is_some())))
    }

    /// What `req` may use: its prompt's token count (on a blocking thread, as every estimate:
    /// a long prompt is real work) and the completion it allows (`max_completion_tokens`,
    /// `max_tokens`, else `TPM_DEFAULT_MAX_TOKENS`).
    pub(crate) async fn tokens_asked(&self, req: &ChatRequest, internal_model: &str) -> (u64, u64) {
        let asked = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| req.object().get::<u64>(k).and_then(Result::ok));
        let completion = asked.unwrap_or(self.state().config().limiter.tpm_default_max_tokens);
        let (r, m) = (req.clone(), internal_model.to_owned());
        let prompt = actix_rt::task::spawn_blocking(move || {
            let messages = r.messages().unwrap_or_default();
            let tools = r
                .object()
                .get::<serde_json::Value>("tools")
                .and_then(Result::ok);
            scira2api_tokens::count_prompt(&m, &messages, tools.as_ref())
        })
        .await
        .unwrap_or(0);
        (prompt, completion)
    }

    /// Reserves `(prompt, completion)` tokens from the request's key's `tpm` budget (`None`:
    /// no key budget applies), or refuses with 429 (503 when the shared store cannot decide
    /// and fails closed). The decision is noted for the `x-ratelimit-*-tokens` headers.
    pub(crate) async fn reserve_tokens(
        &self,
        asked: Option<(u64, u64)>,
    ) -> Result<Option<TokenReservation>, Error> {
        let (Some((prompt, completion)), Some(policy)) = (asked, crate::client::current()) else {
            return Ok(None);
        };
        let (Some(tpm), Some(limiter)) = (policy.tpm, self.state().token_limiter()) else {
            return Ok(None);
        };
        let tokens = prompt.saturating_add(completion);
        let d = match limiter.reserve(&policy.id, tpm, tokens) {
            Check::Now(d) => d,
            Check::Later(f) => f.await,
        };
        crate::client::note_tokens(d);
        if d.unavailable {
            return Err(Error::upstream_status(
                503,
                "rate_limiter_unavailable",
                "The rate limiter's store (Redis) cannot be reached and RATE_LIMIT_FAIL_MODE=closed; please try again shortly.",
            )
            .with_retry_after(d.retry_after));
        }
        if !d.allowed {
            let wait = d.retry_after.unwrap_or_default();
            return Err(Error::RateLimited {
                message: format!(
                    "Rate limit reached for tokens: limit {tpm} per minute, requested {tokens} ({prompt} in the prompt, {completion} for the completion), {} left; please try again in {}.",
                    d.remaining,
                    scira2api_limiter::format_reset(wait)
                ),
                retry_after: Some(wait),
            });
        }
        Ok(Some(TokenReservation::new(
            limiter.clone(),
            policy.id.clone(),
            tpm,
            tokens.min(tpm),
        )))
    }
}
