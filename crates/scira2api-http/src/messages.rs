//! The Anthropic Messages API routes: `POST /v1/messages` and `POST /v1/messages/count_tokens`
//! (Claude Code adds `?beta=true`; the query is ignored). Errors are answered in Anthropic's
//! shape. The translation and the call are the core's ([`Gateway::messages`]).

use crate::conn::ConnWatch;
use crate::error::AnthropicError;
use crate::routes::{
    X_CACHE, X_OVERHEAD, X_PROVIDER, X_USAGE_SOURCE, cache_control, check_content_type,
    client_gone_response, read_body, stream_headers,
};
use crate::sse::SseBody;
use actix_web::HttpMessage;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use scira2api_core::{
    ChatContext, EndpointOutcome, EndpointReply, Gateway, MESSAGES_PING, Observation,
    message_failed_before_first_event,
};
use scira2api_types::Error;
use std::rc::Rc;

/// Request fields accepted but without effect on the chosen upstream, comma-separated.
const X_DROPPED_PARAMS: HeaderName = HeaderName::from_static("x-dropped-params");

async fn body(
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

/// `POST /v1/messages`.
pub async fn create(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AnthropicError> {
    let body = body(&gw, &req, payload).await?;
    // Only a stream can commit its head early (pings while the upstream is silent).
    let early = scira2api_types::RawObject::parse(body.clone())
        .ok()
        .is_some_and(|r| matches!(r.get::<bool>("stream"), Some(Ok(true))));
    let observation = req.extensions().get::<Rc<Observation>>().cloned();
    let client_key = crate::auth::client_key(req.headers())
        .and_then(|k| std::str::from_utf8(k).ok())
        .map(str::to_owned);
    let cache_control = cache_control(&req);
    let call = {
        let (gw, observation) = (gw.clone(), observation.clone());
        async move {
            let ctx = ChatContext {
                observation,
                client_key: client_key.as_deref(),
                cache_control,
            };
            gw.messages(&body, ctx).await
        }
    };
    let watch = crate::conn::watch(&req);
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
        _ = actix_rt::time::sleep(heartbeat), if early => {
            // Commit the 200 head and send pings until the first event; a failure from here on
            // is the stream's own `error` event.
            let pending = Box::pin(async move {
                Ok(match call.await {
                    Ok(EndpointOutcome { reply: EndpointReply::Stream(events), .. }) => events,
                    Ok(_) => message_failed_before_first_event(&Error::Internal(
                        "a stream request got a non-stream answer".into(),
                    )),
                    Err(e) => {
                        if let Some(o) = &observation {
                            o.stream_failed(e.code().unwrap_or("upstream_error"));
                        }
                        log::warn!("stream failed before its first event, after the response started: {e}");
                        message_failed_before_first_event(&e)
                    }
                })
            });
            let body = SseBody::pending(pending, heartbeat)
                .own_framing()
                .keepalive(MESSAGES_PING)
                .ending_when(watch.map(ConnWatch::gone))
                .counted(gw.state().activity().enter());
            return Ok(stream_headers(&mut HttpResponse::Ok()).streaming(body));
        }
    };
    let mut resp = HttpResponse::Ok();
    resp.insert_header((X_CACHE, HeaderValue::from_static(outcome.cache.as_str())));
    if let Ok(v) = HeaderValue::from_str(&outcome.provider) {
        resp.insert_header((X_PROVIDER, v));
    }
    if !outcome.dropped.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&outcome.dropped.join(", ")) {
            resp.insert_header((X_DROPPED_PARAMS, v));
        }
    }
    if let Some(source) = outcome.usage_source {
        resp.insert_header((X_USAGE_SOURCE, HeaderValue::from_static(source.as_str())));
    }
    if let Some(o) = &observation {
        let overhead = o.start().elapsed().saturating_sub(outcome.upstream_time);
        let us = overhead.as_micros();
        if let Ok(v) = HeaderValue::try_from(format!("{}.{:03}", us / 1000, us % 1000)) {
            resp.insert_header((X_OVERHEAD, v));
        }
    }
    match outcome.reply {
        EndpointReply::Json(body) => Ok(resp
            .insert_header((
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ))
            .body(body)),
        EndpointReply::Stream(events) => {
            let body = SseBody::new(events, heartbeat)
                .own_framing()
                .keepalive(MESSAGES_PING)
                .ending_when(gone)
                .counted(gw.state().activity().enter());
            Ok(stream_headers(&mut resp).streaming(body))
        }
    }
}

/// `POST /v1/messages/count_tokens`.
pub async fn count_tokens(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AnthropicError> {
    let body = body(&gw, &req, payload).await?;
    Ok(HttpResponse::Ok().json(gw.count_message_tokens(&body)?))
}
