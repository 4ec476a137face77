//! Request ids, in-flight tracking, request metrics and the access log.
//!
//! Every request gets an id (the client's `X-Request-Id` when usable, else a fresh one), returned
//! in `x-request-id` and attached to every log line written while it is handled. One access-log
//! line at info is written per request — for a stream, when the stream ends, with its tokens —
//! and it never holds a secret or a prompt.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use log::info;
use scira2api_core::metrics::CHAT_ROUTE;
use scira2api_core::{Gateway, UsageSource, request_id};
use scira2api_types::log_safe;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request facts shared between the middleware and the handlers.
#[derive(Clone)]
pub(crate) struct RequestInfo {
    pub(crate) id: Arc<str>,
    pub(crate) start: Instant,
}

/// What the chat handler learned, for the access log.
#[derive(Clone, Default)]
pub(crate) struct ChatLog {
    pub(crate) model: String,
    pub(crate) stream: bool,
    pub(crate) cache: &'static str,
    pub(crate) upstream: Duration,
    pub(crate) retries: u32,
    pub(crate) usage: Option<(u64, u64, UsageSource)>,
    /// The provider instance that answered.
    pub(crate) provider: Option<Arc<str>>,
}

/// One access-log line.
#[allow(clippy::too_many_arguments)]
pub(crate) fn access_line(
    id: &str,
    method: &str,
    path: &str,
    status: u16,
    chat: Option<&ChatLog>,
    total: Duration,
    outcome: &str,
) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    match chat {
        Some(c) => {
            let tokens = c
                .usage
                .map(|(p, k, s)| format!("{p}+{k} ({})", s.as_str()))
                .unwrap_or_else(|| "-".to_owned());
            info!(
                target: "scira2api::access",
                "{method} {} {status} request_id={id} model={} stream={} tokens={tokens} upstream_ms={:.1} total_ms={:.1} cache={} retries={} provider={}{outcome}",
                log_safe(path),
                log_safe(&c.model),
                c.stream,
                ms(c.upstream),
                ms(total),
                c.cache,
                c.retries,
                c.provider.as_deref().unwrap_or("-"),
            );
        }
        None => {
            info!(target: "scira2api::access", "{method} {} {status} request_id={id} total_ms={:.1}{outcome}", log_safe(path), ms(total))
        }
    }
}

/// A 4xx that some layer below answered without a JSON body (actix-cors refusing a preflight,
/// an extractor) gets OpenAI's error JSON, with its status and other headers kept.
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
    let body = scira2api_types::Error::InvalidRequest {
        message,
        param: None,
        code: None,
    }
    .body();
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

/// Whether access-log lines are written at all (so their facts are not gathered in vain).
pub(crate) fn access_log_enabled() -> bool {
    log::log_enabled!(target: "scira2api::access", log::Level::Info)
}

/// Middleware (outermost): id, timing, metrics and the access log for every request.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    let id = request_id::from_client(
        req.headers()
            .get(&X_REQUEST_ID)
            .and_then(|v| v.to_str().ok()),
    );
    let start = Instant::now();
    let gw = req.app_data::<web::Data<Gateway>>().cloned();
    let _working = gw.as_ref().map(|gw| gw.state().activity().enter());
    if let Some(gw) = &gw {
        gw.state().metrics().in_flight.inc();
    }
    req.extensions_mut().insert(RequestInfo {
        id: id.clone(),
        start,
    });
    let route = crate::route_table::label(req.path());
    // The method and path are kept only when an access line will be written.
    let logged = access_log_enabled().then(|| (req.method().clone(), req.path().to_owned()));
    let res = request_id::scope(id.clone(), next.call(req)).await;
    if let Some(gw) = &gw {
        gw.state().metrics().in_flight.dec();
    }
    let mut res = as_openai_error(res?);
    if gw
        .as_ref()
        .is_some_and(|gw| gw.state().activity().draining())
    {
        // Shutting down: the client should not send another request on this connection.
        res.headers_mut().insert(
            actix_web::http::header::CONNECTION,
            HeaderValue::from_static("close"),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(X_REQUEST_ID, v);
    }
    let status = res.status();
    let chat = res.request().extensions_mut().remove::<ChatLog>();
    // A stream is timed and logged when it ends (see the chat handler).
    let streamed = chat.as_ref().is_some_and(|c| c.stream) && status == StatusCode::OK;
    if let Some(gw) = &gw {
        let m = gw.state().metrics();
        if route == CHAT_ROUTE && status == StatusCode::OK {
            m.hot.chat_ok.inc();
            if !streamed {
                m.hot.chat_duration.observe(start.elapsed().as_secs_f64());
            }
        } else {
            m.requests
                .with_label_values(&[route, status.as_str()])
                .inc();
            m.duration
                .with_label_values(&[route])
                .observe(start.elapsed().as_secs_f64());
        }
    }
    if let (Some((method, path)), false) = (logged, streamed) {
        access_line(
            &id,
            method.as_str(),
            &path,
            status.as_u16(),
            chat.as_ref(),
            start.elapsed(),
            "",
        );
    }
    Ok(res)
}
