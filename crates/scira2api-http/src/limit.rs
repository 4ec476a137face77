//! Rate limiting middleware: one token per request from the client's bucket, answered at once.
//!
//! A refused request gets 429 `rate_limit_exceeded` with `Retry-After` and `retry-after-ms`;
//! every limited route's response carries OpenAI's `x-ratelimit-*-requests` headers. `/health`,
//! `/metrics` and CORS preflights are never limited. Cache hits count like any other request.

use crate::auth::{client_key, key_identity, key_matches};
use crate::error::error_for;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use scira2api_core::{Decision, Gateway, RateLimitScope, format_reset};
use scira2api_types::Error;

/// Paths that are never limited (the route table says which).
fn exempt(path: &str) -> bool {
    crate::route_table::find(path).is_some_and(|r| !r.limited)
}

/// Adds OpenAI's rate-limit headers for `d`.
fn add_headers(headers: &mut HeaderMap, d: &Decision) {
    const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
    const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
    const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
    headers.insert(LIMIT, HeaderValue::from(d.limit));
    headers.insert(REMAINING, HeaderValue::from(d.remaining));
    if let Ok(v) = HeaderValue::from_str(&format_reset(d.reset)) {
        headers.insert(RESET, v);
    }
}

/// The bucket a request belongs to: a valid key's identity (never the raw secret), otherwise the
/// client's IP address, so that whatever a client sends, the number and size of buckets stay
/// bounded by `RATE_LIMIT_MAX_KEYS`.
fn bucket_key(req: &ServiceRequest, gw: &Gateway) -> String {
    let config = gw.state().config();
    let ip = || {
        req.peer_addr()
            .map(|a| format!("ip:{}", a.ip()))
            .unwrap_or_else(|| "ip:unknown".to_owned())
    };
    match config.limiter.scope {
        RateLimitScope::Global => String::new(),
        RateLimitScope::Ip => ip(),
        RateLimitScope::Key => match client_key(req.headers())
            .filter(|k| !config.auth.api_keys.is_empty() && key_matches(&config.auth.api_keys, k))
        {
            Some(k) => key_identity(k),
            None => ip(),
        },
    }
}

/// Middleware: takes a token or answers 429 at once.
pub async fn rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let decision = match req.app_data::<web::Data<Gateway>>() {
        Some(gw) if !exempt(req.path()) && req.method() != Method::OPTIONS => {
            match gw.state().limiter() {
                Some(limiter) => {
                    let key = bucket_key(&req, gw);
                    Some(limiter.check(&key).await)
                }
                None => None,
            }
        }
        _ => None,
    };
    let Some(d) = decision else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
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
    let mut res = next.call(req).await?;
    add_headers(res.headers_mut(), &d);
    Ok(res.map_into_left_body())
}
