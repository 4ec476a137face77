//! The Anthropic Messages API routes: `POST /v1/messages` and `POST /v1/messages/count_tokens`
//! (Claude Code adds `?beta=true`; the query is ignored). Errors are answered in Anthropic's
//! shape. The translation and the call are the core's ([`Gateway::messages`]).

use crate::endpoint::{CallContext, Framing, answer, json_body};
use crate::error::AnthropicError;
use actix_web::{HttpRequest, HttpResponse, web};
use scira2api_core::{Gateway, MESSAGES_PING, message_failed_before_first_event};

/// `POST /v1/messages`.
pub async fn create(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AnthropicError> {
    let body = json_body(&gw, &req, payload).await?;
    let stream = scira2api_types::RawObject::parse(body.clone())
        .ok()
        .is_some_and(|r| matches!(r.get::<bool>("stream"), Some(Ok(true))));
    let cx = CallContext::of(&gw, &req);
    let observation = cx.observation.clone();
    let call = {
        let gw = gw.clone();
        async move { gw.messages(&body, cx.chat()).await }
    };
    let framing = Framing {
        stream,
        failed: Box::new(message_failed_before_first_event),
        keepalive: MESSAGES_PING,
    };
    Ok(answer(&gw, &req, observation, call, framing).await?)
}

/// `POST /v1/messages/count_tokens`.
pub async fn count_tokens(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AnthropicError> {
    let body = json_body(&gw, &req, payload).await?;
    Ok(HttpResponse::Ok().json(gw.count_message_tokens(&body)?))
}
