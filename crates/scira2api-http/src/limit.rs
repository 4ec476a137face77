//! Rate limiting middleware: one token per request from the client's bucket, answered at once.
//!
//! A refused request gets 429 `rate_limit_exceeded` with `Retry-After` and `retry-after-ms`;
//! every limited route's response carries OpenAI's `x-ratelimit-*-requests` headers. `/health`,
//! `/metrics` and CORS preflights are never limited. Cache hits count like any other request.

use crate::auth::{ClientKey, client_key, key_identity};
use crate::error::error_for;
use crate::route_table::RouteSpec;
use actix_web::HttpMessage;
use actix_web::body::EitherBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use scira2api_core::{BucketConfig, Decision, Gateway, RateLimitScope, format_reset};
use scira2api_types::Error;
use std::future::Future;

/// Adds OpenAI's rate-limit headers for `d` (none when no bucket applied).
fn add_headers(headers: &mut HeaderMap, d: &Decision) {
    const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
    const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
    const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
    write_headers(headers, d, [LIMIT, REMAINING, RESET]);
}

/// Adds OpenAI's token rate-limit headers (`x-ratelimit-*-tokens`) for a key's token budget.
pub(crate) fn add_token_headers(headers: &mut HeaderMap, d: &Decision) {
    const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
    const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
    const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
    write_headers(headers, d, [LIMIT, REMAINING, RESET]);
}

fn write_headers(
    headers: &mut HeaderMap,
    d: &Decision,
    [limit, remaining, reset]: [HeaderName; 3],
) {
    if d.limit == u64::MAX {
        return;
    }
    headers.insert(limit, HeaderValue::from(d.limit));
    headers.insert(remaining, HeaderValue::from(d.remaining));
    if let Ok(v) = HeaderValue::from_str(&format_reset(d.reset)) {
        headers.insert(reset, v);
    }
}

/// The bucket a request belongs to: a valid key's identity (never the raw secret), otherwise the
/// client's IP address, so that whatever a client sends, the number and size of buckets stay
/// bounded by `RATE_LIMIT_MAX_KEYS`.
///
/// With a key's own bucket (its policy's `rpm`) when the scope is per key.
fn bucket_key(req: &ServiceRequest, gw: &Gateway) -> (String, Option<BucketConfig>) {
    let config = gw.state().config();
    let ip = || {
        req.peer_addr()
            .map(|a| format!("ip:{}", a.ip()))
            .unwrap_or_else(|| "ip:unknown".to_owned())
    };
    match config.limiter.scope {
        RateLimitScope::Global => (String::new(), None),
        RateLimitScope::Ip => (ip(), None),
        RateLimitScope::Key => {
            // The auth middleware has matched the key already (when auth is on).
            let admitted = req.extensions().get::<ClientKey>().copied();
            match (admitted, client_key(req.headers())) {
                (Some(ClientKey { index }), Some(k)) => (
                    key_identity(k),
                    gw.state().key_policy(index).and_then(|p| p.bucket),
                ),
                _ => (ip(), None),
            }
        }
    }
}

/// The rate-limit step of [`crate::gate`]: takes a token for the request, then runs `next`, or
/// answers 429 at once (`route`: the request's entry in the route table).
pub(crate) async fn rate_limit<B, F>(
    gw: &Gateway,
    route: Option<&RouteSpec>,
    req: ServiceRequest,
    next: impl FnOnce(ServiceRequest) -> F,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    let exempt = route.is_some_and(|r| !r.limited) || req.method() == Method::OPTIONS;
    let decision = match gw.state().limiter() {
        Some(limiter) if !exempt => {
            let (key, own) = bucket_key(&req, gw);
            Some(limiter.check(&key, own).await)
        }
        _ => None,
    };
    let Some(d) = decision else {
        return next(req).await.map(ServiceResponse::map_into_left_body);
    };
    if d.unavailable {
        let err = Error::upstream_status(
            503,
            "rate_limiter_unavailable",
            "The rate limiter's store (Redis) cannot be reached and RATE_LIMIT_FAIL_MODE=closed; please try again shortly.",
        )
        .with_retry_after(d.retry_after);
        let resp = error_for(req.path(), &err);
        return Ok(req.into_response(resp).map_into_right_body());
    }
    if !d.allowed {
        let wait = d.retry_after.unwrap_or_default();
        let err = Error::RateLimited {
            message: format!(
                "Rate limit reached for requests: limit {} with refill; please try again in {}.",
                d.limit,
                format_reset(wait)
            ),
            retry_after: Some(wait),
        };
        let mut resp = error_for(req.path(), &err);
        add_headers(resp.headers_mut(), &d);
        return Ok(req.into_response(resp).map_into_right_body());
    }
    let mut res = next(req).await?;
    add_headers(res.headers_mut(), &d);
    Ok(res.map_into_left_body())
}
