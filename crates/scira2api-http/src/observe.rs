//! Request ids, in-flight tracking, and each request's [`Observation`] (request metrics and
//! the access log).
//!
//! Every request gets an id (the client's `X-Request-Id` when usable, else a fresh one), returned
//! in `x-request-id` and attached to every log line written while it is handled. One access-log
//! line at info is written per request — for a stream, when the stream ends, with its tokens —
//! and it never holds a secret or a prompt.

use crate::route_table::RouteSpec;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use scira2api_core::{Gateway, Observation, request_id};
use std::future::Future;
use std::time::Instant;

/// A 4xx that some layer below answered without a JSON body (actix-cors refusing a preflight,
/// an extractor) gets the route family's error JSON (OpenAI's, or Anthropic's on the Messages
/// routes), with its status and other headers kept.
fn as_openai_error<B: MessageBody>(res: ServiceResponse<B>) -> ServiceResponse<EitherBody<B>> {
    let status = res.status();
    let json = res
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // 499: the client is gone, nothing is written.
    if !status.is_client_error() || json || status.as_u16() == 499 {
        return res.map_into_left_body();
    }
    let (req, old) = res.into_parts();
    let message = match status.as_u16() {
        400 if req.method() == actix_web::http::Method::OPTIONS => {
            "CORS preflight refused: the origin, method or headers asked for are not allowed (CORS_ORIGINS)".to_owned()
        }
        _ => format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("client error")
        ),
    };
    let error = scira2api_types::Error::InvalidRequest {
        message,
        param: None,
        code: None,
    };
    let body = match crate::route_table::family(req.path()) {
        crate::route_table::Family::OpenAi => error.body(),
        crate::route_table::Family::Anthropic => error.anthropic_body(),
    };
    let mut new = actix_web::HttpResponse::build(status);
    for (k, v) in old.headers() {
        if k != actix_web::http::header::CONTENT_TYPE
            && k != actix_web::http::header::CONTENT_LENGTH
        {
            new.append_header((k.clone(), v.clone()));
        }
    }
    let new = new.content_type("application/json").body(body);
    ServiceResponse::new(req, new).map_into_right_body()
}

/// The outermost step of [`crate::gate`]: id, timing, metrics and the access log for every
/// request, around `next` (`route`: the request's entry in the route table).
pub(crate) async fn observe<B, F>(
    gw: &Gateway,
    route: Option<&RouteSpec>,
    req: ServiceRequest,
    next: impl FnOnce(ServiceRequest) -> F,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error>
where
    B: MessageBody,
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
    let id = request_id::from_client(
        req.headers()
            .get(&X_REQUEST_ID)
            .and_then(|v| v.to_str().ok()),
    );
    let start = Instant::now();
    let state = gw.state();
    let _working = state.activity().working();
    let label = route.map_or(crate::route_table::UNMATCHED, |r| r.label);
    let anthropic = route.is_some_and(|r| r.family == crate::route_table::Family::Anthropic);
    // The request's record: handlers and the gateway fill it in, and it writes the metrics
    // and the access line once its last holder lets go (after the response or the stream).
    state.metrics().in_flight.inc();
    let observation = Observation::open(
        state.clone(),
        id.clone(),
        start,
        (req.method().as_str(), req.path()),
        label,
    );
    let res = request_id::scope_observed(observation.clone(), next(req)).await;
    state.metrics().in_flight.dec();
    let res = match res {
        Ok(res) => res,
        Err(e) => {
            observation.set_status(e.as_response_error().status_code().as_u16());
            return Err(e);
        }
    };
    let mut res = as_openai_error(res);
    if state.activity().draining() {
        // Shutting down: the client should not send another request on this connection.
        res.headers_mut().insert(
            actix_web::http::header::CONNECTION,
            HeaderValue::from_static("close"),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        if anthropic {
            // The Anthropic SDKs read the request id from `request-id`.
            res.headers_mut().insert(REQUEST_ID, v.clone());
        }
        res.headers_mut().insert(X_REQUEST_ID, v);
    }
    observation.set_status(res.status().as_u16());
    Ok(res)
}
