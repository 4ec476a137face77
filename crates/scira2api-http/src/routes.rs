//! Route handlers.

use crate::conn::ConnWatch;
use crate::error::{ApiError, error_response};
use crate::sse::SseBody;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use futures_util::StreamExt;
use scira2api_core::{
    CacheControl, CacheStatus, ChatContext, ChatOutcome, ChatReply, ChatRequest, Gateway,
    UsageSource,
};
use scira2api_types::Error;
use serde_json::json;
use std::time::Duration;

/// `GET /health`: liveness, uptime and version; never needs a key.
pub async fn health(gw: web::Data<Gateway>) -> HttpResponse {
    let state = gw.state();
    let up = state.uptime();
    let config = state.config();
    // An instance rests when every deployment it serves rests; one with none never does.
    // Public: names and states only (the counters are the metrics', behind their key).
    let providers = scira2api_core::metrics::Metrics::provider_states_json(state);
    let serving = providers
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["state"] != "resting"));
    let body = json!({
        "status": if serving { "ok" } else { "degraded" },
        "uptime": humantime::format_duration(std::time::Duration::from_secs(up.as_secs())).to_string(),
        "uptime_seconds": up.as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "provider": config.provider().as_str(),
        "providers": providers,
        // Several replicas' shared store: a Redis that is down degrades nothing by itself (the
        // fail mode decides), so it is reported, not made a failing status.
        "redis": gw.state().shared().map(|s| json!({
            "state": s.state().as_str(),
            "fail_mode": s.fail_mode().as_str(),
        })),
    });
    if serving {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `GET /v1/models`.
pub async fn models(gw: web::Data<Gateway>) -> HttpResponse {
    let data = gw.models().await;
    HttpResponse::Ok().json(json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{id}`.
pub async fn model(
    gw: web::Data<Gateway>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let m = gw.model(&id).await?;
    Ok(HttpResponse::Ok().json(m))
}

/// Reads the body up to `limit` bytes within `deadline`; larger is a 413 before or while
/// reading, slower a 408 (a client that announces a body and stalls holds nothing for long).
pub(crate) async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    deadline: Duration,
) -> Result<bytes::Bytes, Error> {
    use std::task::Poll;
    let mut body = std::pin::pin!(read_body_within(req, payload, limit));
    // A body that arrives with its head (the common case) is read without making a timer.
    // actix-web polls the handler once as soon as the head is decoded, before it hands over
    // the body bytes that came in the same read; so a first poll that finds nothing asks to be
    // polled again at once, and only a second one that still finds nothing starts the clock.
    let mut again = false;
    let early = std::future::poll_fn(|cx| match body.as_mut().poll(cx) {
        Poll::Ready(body) => Poll::Ready(Some(body)),
        Poll::Pending if !again => {
            again = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    if let Some(body) = early {
        return body;
    }
    match actix_rt::time::timeout(deadline, body).await {
        Ok(body) => body,
        Err(_) => Err(Error::RequestTimeout(format!(
            "The request body did not arrive within {}s (BODY_READ_TIMEOUT).",
            deadline.as_secs_f64()
        ))),
    }
}

/// The request's `Content-Length`, when it declares a valid one.
pub(crate) fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

async fn read_body_within(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<bytes::Bytes, Error> {
    let declared = declared_length(req);
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge { limit });
    }
    // Most bodies arrive in one chunk: that chunk is the body, with no copy.
    let mut first: Option<bytes::Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut len = 0;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| Error::invalid(format!("could not read the request body: {e}"), None))?;
        len += chunk.len();
        if len > limit {
            return Err(Error::PayloadTooLarge { limit });
        }
        match (&mut joined, first.take()) {
            (Some(body), _) => body.extend_from_slice(&chunk),
            (None, None) => first = Some(chunk),
            (None, Some(head)) => {
                let mut body = BytesMut::with_capacity(declared.unwrap_or(len).clamp(len, limit));
                body.extend_from_slice(&head);
                body.extend_from_slice(&chunk);
                joined = Some(body);
            }
        }
    }
    Ok(match (joined, first) {
        (Some(body), _) => body.freeze(),
        (None, Some(body)) => body,
        (None, None) => bytes::Bytes::new(),
    })
}

/// Accepts `application/json` (any parameters) or no Content-Type at all.
pub(crate) fn check_content_type(req: &HttpRequest) -> Result<(), Error> {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let raw = ct.as_bytes();
    let essence = raw[..raw.iter().position(|&b| b == b';').unwrap_or(raw.len())].trim_ascii();
    if essence.eq_ignore_ascii_case(b"application/json") || essence.is_empty() {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(
            String::from_utf8_lossy(raw).into_owned(),
        ))
    }
}

/// The client's wish about the cache: `Cache-Control: no-store` (neither read nor write) or
/// `no-cache` (do not read).
pub(crate) fn cache_control(req: &HttpRequest) -> CacheControl {
    let Some(value) = req.headers().get(header::CACHE_CONTROL) else {
        return CacheControl::Default;
    };
    let has = |d: &[u8]| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|p| p.trim_ascii().eq_ignore_ascii_case(d))
    };
    if has(b"no-store") {
        CacheControl::NoStore
    } else if has(b"no-cache") {
        CacheControl::NoCache
    } else {
        CacheControl::Default
    }
}

/// `x-cache`, `x-gateway-provider` and, when known, `x-usage-source` of an answer (chat,
/// Responses, Messages and the other OpenAI endpoints alike).
pub(crate) fn answer_headers(
    resp: &mut actix_web::HttpResponseBuilder,
    cache: CacheStatus,
    provider: &str,
    usage: Option<UsageSource>,
) {
    resp.insert_header((X_CACHE, HeaderValue::from_static(cache.as_str())));
    if let Ok(v) = HeaderValue::from_str(provider) {
        resp.insert_header((X_PROVIDER, v));
    }
    if let Some(source) = usage {
        resp.insert_header((X_USAGE_SOURCE, HeaderValue::from_static(source.as_str())));
    }
}

/// The `x-gateway-overhead-ms` value for `us` microseconds: milliseconds with three decimals
/// (`0.042`), written by hand rather than through `format!` (this is set on every answer).
pub(crate) fn overhead_value(us: u128) -> HeaderValue {
    let mut buf = [0u8; 48];
    let mut i = buf.len();
    let (mut ms, frac) = (us / 1000, us % 1000);
    for d in [frac % 10, frac / 10 % 10, frac / 100] {
        i -= 1;
        buf[i] = b'0' + d as u8;
    }
    i -= 1;
    buf[i] = b'.';
    loop {
        i -= 1;
        buf[i] = b'0' + (ms % 10) as u8;
        ms /= 10;
        if ms == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&buf[i..]).unwrap_or(HeaderValue::from_static("0.000"))
}

/// Response headers the chat route sets (names parsed once, at compile time).
pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
pub(crate) const X_OVERHEAD: HeaderName = HeaderName::from_static("x-gateway-overhead-ms");
pub(crate) const X_USAGE_SOURCE: HeaderName = HeaderName::from_static("x-usage-source");
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
/// The provider instance that served a chat answer (`cache` for a cache hit).
pub(crate) const X_PROVIDER: HeaderName = HeaderName::from_static("x-gateway-provider");
/// Request fields accepted but without effect on the chosen upstream, comma-separated.
const X_DROPPED_PARAMS: HeaderName = HeaderName::from_static("x-dropped-params");

/// Names the request fields the upstream ignored in `x-dropped-params` (and the debug log).
pub(crate) fn dropped_params_header(resp: &mut actix_web::HttpResponseBuilder, dropped: &[String]) {
    if dropped.is_empty() {
        return;
    }
    let list = dropped.join(", ");
    log::debug!(
        "accepted without effect: {}",
        scira2api_types::log_safe(&list)
    );
    if let Ok(v) = HeaderValue::from_str(&list) {
        resp.insert_header((X_DROPPED_PARAMS, v));
    }
}

/// What came first while a request was being answered.
enum First {
    Answered(Result<ChatOutcome, Error>),
    /// The client closed its connection.
    Gone,
    /// A stream request waited a whole heartbeat without an upstream event.
    Heartbeat,
}

/// The status recorded for a request whose client left before its answer (nginx's 499).
pub(crate) fn client_gone_response() -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)).finish()
}

/// Ready after `every` for a stream (its first heartbeat is due), never for a JSON answer. The
/// timer is only made when polled, so a JSON answer reads no clock for it.
pub(crate) async fn first_heartbeat(every: Duration, stream: bool) {
    if stream {
        actix_rt::time::sleep(every).await
    } else {
        std::future::pending().await
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let config = gw.state().config();
    let body = crate::endpoint::json_body(&gw, &req, payload).await?;
    let chat = ChatRequest::parse(body)?;
    let observation = scira2api_core::request_id::observation();
    if let Some(o) = &observation {
        o.chat(&chat.model, chat.stream);
    }
    let client_key = crate::auth::key_for_cache(config, req.headers());
    let cache_control = cache_control(&req);
    let stream = chat.stream;
    let mut call = {
        let (gw, observation) = (gw.clone(), observation.clone());
        Box::pin(async move {
            let ctx = ChatContext {
                observation,
                client_key: client_key.as_deref(),
                cache_control,
                anthropic: Default::default(),
            };
            gw.chat(&chat, ctx).await
        })
    };
    let watch = crate::conn::watch(&req);
    let mut gone = watch.clone().map(ConnWatch::gone);
    let heartbeat = config.server.heartbeat_interval;
    let first = tokio::select! {
        biased;
        r = &mut call => First::Answered(r),
        _ = async { match gone.as_mut() { Some(g) => g.await, None => std::future::pending().await } } => First::Gone,
        _ = first_heartbeat(heartbeat, stream) => First::Heartbeat,
    };
    let outcome = match first {
        First::Answered(Ok(o)) => o,
        First::Answered(Err(e)) => return Err(e.into()),
        First::Gone => {
            log::info!("client closed the connection before the answer: upstream call dropped");
            return Ok(client_gone_response());
        }
        First::Heartbeat => {
            // Commit the 200 head now and keep the connection alive until the first event; the
            // call goes on (retries and all) inside the body.
            let pending = Box::pin(async move {
                match call.await {
                    Ok(outcome) => match outcome.reply {
                        ChatReply::Stream(frames) => Ok(frames),
                        ChatReply::Json(_) => Err(Error::Internal(
                            "a stream request got a non-stream answer".into(),
                        )),
                    },
                    Err(e) => {
                        if let Some(o) = &observation {
                            o.stream_failed(e.code().unwrap_or("upstream_error"));
                        }
                        Err(e)
                    }
                }
            });
            let cache =
                if gw.state().config().cache.enabled && cache_control == CacheControl::Default {
                    "MISS"
                } else {
                    "BYPASS"
                };
            let mut resp = HttpResponse::Ok();
            resp.insert_header((X_CACHE, HeaderValue::from_static(cache)));
            let body = SseBody::pending(pending, heartbeat)
                .ending_when(watch.map(ConnWatch::gone))
                .cut_by(Box::pin(gw.state().streams_cut()))
                .counted(gw.state().activity().enter());
            return Ok(stream_headers(&mut resp).streaming(body));
        }
    };
    let mut resp = HttpResponse::Ok();
    answer_headers(
        &mut resp,
        outcome.cache,
        &outcome.provider,
        outcome.usage.map(|(_, s)| s),
    );
    if let Some(o) = &observation {
        let overhead = o.start().elapsed().saturating_sub(outcome.upstream_time);
        gw.state()
            .metrics()
            .overhead
            .observe(overhead.as_secs_f64());
        resp.insert_header((X_OVERHEAD, overhead_value(overhead.as_micros())));
    }
    dropped_params_header(&mut resp, &outcome.dropped);
    match outcome.reply {
        ChatReply::Json(body) => Ok(resp
            .insert_header((
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ))
            .body(body)),
        ChatReply::Stream(frames) => {
            let body = SseBody::new(frames, heartbeat)
                .ending_when(gone)
                .cut_by(Box::pin(gw.state().streams_cut()))
                .counted(gw.state().activity().enter());
            Ok(stream_headers(&mut resp).streaming(body))
        }
    }
}

/// The headers of every streamed answer.
pub(crate) fn stream_headers(
    resp: &mut actix_web::HttpResponseBuilder,
) -> &mut actix_web::HttpResponseBuilder {
    resp.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    ))
    .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
    .insert_header((X_ACCEL_BUFFERING, HeaderValue::from_static("no")))
}

/// `GET /metrics`: JSON, or the Prometheus text format when the client accepts `text/plain`
/// (and not JSON), as Prometheus scrapers do.
pub async fn metrics(gw: web::Data<Gateway>, req: HttpRequest) -> HttpResponse {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("text/plain") && !accept.contains("application/json") {
        return prometheus(gw).await;
    }
    let state = gw.state();
    let mut v = state.metrics().json(state);
    v["providers"] = scira2api_core::metrics::Metrics::providers_json(state);
    v["deployments"] = scira2api_core::metrics::Metrics::deployments_json(state);
    // `?history=1`: the status page's recent past as well.
    if req
        .query_string()
        .split('&')
        .any(|p| p == "history=1" || p == "history=true")
    {
        v["history"] = state.history().json();
    }
    HttpResponse::Ok().json(v)
}

/// `GET /metrics/prometheus`: the Prometheus text exposition format.
pub async fn prometheus(gw: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(gw.state().metrics().prometheus_text(gw.state()))
}

/// Any path that is not a route: 404 in OpenAI form.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(&Error::NotFound {
        method: req.method().to_string(),
        path: req.path().to_owned(),
    })
}

/// A route called with a method it does not serve: 405 in OpenAI form, with `Allow`.
pub fn method_not_allowed(
    allow: &'static str,
) -> impl Fn(HttpRequest) -> std::future::Ready<HttpResponse> + Clone {
    move |req: HttpRequest| {
        let mut resp = crate::error::error_for(
            req.path(),
            &Error::MethodNotAllowed {
                method: req.method().to_string(),
                path: req.path().to_owned(),
            },
        );
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        std::future::ready(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::{CacheControl, cache_control, check_content_type, overhead_value};
    use actix_web::test::TestRequest;

    #[test]
    fn content_types_json_with_parameters_or_none() {
        let with = |ct: &str| {
            let req = TestRequest::default()
                .insert_header(("content-type", ct))
                .to_http_request();
            check_content_type(&req).is_ok()
        };
        assert!(check_content_type(&TestRequest::default().to_http_request()).is_ok());
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;x=1",
            "",
        ] {
            assert!(with(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "application/x-www-form-urlencoded",
        ] {
            assert!(!with(bad), "{bad}");
        }
    }

    #[test]
    fn cache_control_directives_in_any_case() {
        let of = |v: Option<&str>| {
            let mut req = TestRequest::default();
            if let Some(v) = v {
                req = req.insert_header(("cache-control", v));
            }
            cache_control(&req.to_http_request())
        };
        assert!(of(None) == CacheControl::Default);
        assert!(of(Some("max-age=0, No-Store")) == CacheControl::NoStore);
        assert!(of(Some("no-cache")) == CacheControl::NoCache);
        assert!(of(Some("no-cache, no-store")) == CacheControl::NoStore);
        assert!(of(Some("no-storex, private")) == CacheControl::Default);
    }

    #[test]
    fn overhead_values_are_milliseconds_with_three_decimals() {
        for (us, text) in [
            (0, "0.000"),
            (7, "0.007"),
            (42, "0.042"),
            (1234, "1.234"),
            (60_000_001, "60000.001"),
        ] {
            assert_eq!(overhead_value(us).to_str().unwrap(), text);
        }
        let max = u128::MAX;
        assert_eq!(
            overhead_value(max).to_str().unwrap(),
            format!("{}.{:03}", max / 1000, max % 1000)
        );
    }
}
