//! What the translated endpoints (Responses, Messages) share on the HTTP side: reading the
//! body, the call's context, waiting for the head while watching the client and the heartbeat,
//! the answer's headers, and the event stream's writer. Each endpoint supplies its call, the
//! events of a failure after an early head, and its keep-alive frame.

use crate::conn::ConnWatch;
use crate::routes::{
    X_OVERHEAD, cache_control, check_content_type, client_gone_response, read_body, stream_headers,
};
use crate::sse::SseBody;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use scira2api_core::{
    AnthropicHeaders, CacheControl, ChatContext, EndpointOutcome, EndpointReply, FrameStream,
    Gateway, Observation,
};
use scira2api_types::Error;
use std::future::Future;
use std::rc::Rc;

/// The request body (JSON content type, `MAX_BODY_BYTES`, `BODY_READ_TIMEOUT`), logged at
/// debug level with `LOG_BODIES`.
pub(crate) async fn json_body(
    gw: &Gateway,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<bytes::Bytes, Error> {
    check_content_type(req)?;
    let config = gw.state().config();
    let body = read_body(
        req,
        payload,
        config.server.max_body_bytes,
        config.server.body_read_timeout,
    )
    .await?;
    if config.server.log_bodies {
        log::debug!("request body: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

/// What a call needs from the request beyond its body.
pub(crate) struct CallContext {
    pub(crate) observation: Option<Rc<Observation>>,
    pub(crate) client_key: Option<String>,
    pub(crate) cache_control: CacheControl,
    pub(crate) anthropic: AnthropicHeaders,
}

impl CallContext {
    /// The core's view of it.
    pub(crate) fn chat(&self) -> ChatContext<'_> {
        ChatContext {
            observation: self.observation.clone(),
            client_key: self.client_key.as_deref(),
            cache_control: self.cache_control,
            anthropic: self.anthropic.clone(),
        }
    }

    pub(crate) fn of(gw: &Gateway, req: &HttpRequest) -> CallContext {
        CallContext {
            observation: scira2api_core::request_id::observation(),
            client_key: crate::auth::key_for_cache(gw.state().config(), req.headers()),
            cache_control: cache_control(req),
            anthropic: anthropic_headers(req),
        }
    }
}

/// The client's `anthropic-version` and `anthropic-beta` headers (forwarded to an Anthropic
/// upstream).
fn anthropic_headers(req: &HttpRequest) -> AnthropicHeaders {
    let get = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    AnthropicHeaders {
        version: get("anthropic-version"),
        beta: get("anthropic-beta"),
    }
}

/// How an endpoint's stream is framed.
pub(crate) struct Framing {
    /// Whether the request asked for a stream (only a stream commits its head early).
    pub(crate) stream: bool,
    /// The events of a failure after the head went out early.
    pub(crate) failed: Box<dyn FnOnce(&Error) -> FrameStream>,
    /// What is written during silences.
    pub(crate) keepalive: &'static [u8],
}

/// Waits for `call`'s answer head, watching the client (gone: the call is dropped, 499) and, for
/// a stream, the heartbeat (silent that long: the 200 head goes out with keep-alives and the call
/// goes on inside the body); then answers with the outcome's headers and body.
pub(crate) async fn answer(
    gw: &web::Data<Gateway>,
    req: &HttpRequest,
    observation: Option<Rc<Observation>>,
    call: impl Future<Output = Result<EndpointOutcome, Error>> + 'static,
    framing: Framing,
) -> Result<HttpResponse, Error> {
    let watch = crate::conn::watch(req);
    let mut gone = watch.clone().map(ConnWatch::gone);
    let heartbeat = gw.state().config().server.heartbeat_interval;
    let mut call = Box::pin(call);
    let outcome: EndpointOutcome = tokio::select! {
        biased;
        r = &mut call => r?,
        _ = async { match gone.as_mut() { Some(g) => g.await, None => std::future::pending().await } } => {
            log::info!("client closed the connection before the answer: upstream call dropped");
            return Ok(client_gone_response());
        }
        _ = crate::routes::first_heartbeat(heartbeat, framing.stream) => {
            let failed = framing.failed;
            let pending = Box::pin(async move {
                Ok(match call.await {
                    Ok(EndpointOutcome { reply: EndpointReply::Stream(events), .. }) => events,
                    Ok(_) => failed(&Error::Internal("a stream request got a non-stream answer".into())),
                    Err(e) => {
                        if let Some(o) = &observation {
                            o.stream_failed(e.code().unwrap_or("upstream_error"));
                        }
                        log::warn!("stream failed before its first event, after the response started: {e}");
                        failed(&e)
                    }
                })
            });
            let body = SseBody::pending(pending, heartbeat)
                .own_framing()
                .keepalive(framing.keepalive)
                .ending_when(watch.map(ConnWatch::gone))
                .counted(gw.state().activity().enter());
            return Ok(stream_headers(&mut HttpResponse::Ok()).streaming(body));
        }
    };
    let mut resp = HttpResponse::Ok();
    crate::routes::answer_headers(
        &mut resp,
        outcome.cache,
        &outcome.provider,
        outcome.usage_source,
    );
    crate::routes::dropped_params_header(&mut resp, &outcome.dropped);
    if let Some(o) = &observation {
        let overhead = o.start().elapsed().saturating_sub(outcome.upstream_time);
        resp.insert_header((
            X_OVERHEAD,
            crate::routes::overhead_value(overhead.as_micros()),
        ));
    }
    Ok(match outcome.reply {
        EndpointReply::Json(body) => resp
            .insert_header((
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ))
            .body(body),
        EndpointReply::Stream(events) => {
            let body = SseBody::new(events, heartbeat)
                .own_framing()
                .keepalive(framing.keepalive)
                .ending_when(gone)
                .counted(gw.state().activity().enter());
            stream_headers(&mut resp).streaming(body)
        }
    })
}
