//! The Responses API routes: `POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}` and
//! `POST /v1/responses/input_tokens`. The translation and the call are the core's
//! ([`Gateway::respond`]); the HTTP part they share with the Messages routes is
//! [`crate::endpoint`].

use crate::endpoint::{CallContext, Framing, answer, json_body};
use crate::error::ApiError;
use actix_web::{HttpRequest, HttpResponse, web};
use scira2api_core::Gateway;

/// `POST /v1/responses`.
pub async fn create(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_body(&gw, &req, payload).await?;
    let raw = scira2api_types::RawObject::parse(body.clone()).ok();
    let stream = raw
        .as_ref()
        .is_some_and(|r| matches!(r.get::<bool>("stream"), Some(Ok(true))));
    let model = raw
        .and_then(|r| r.get::<String>("model").and_then(Result::ok))
        .unwrap_or_default();
    let cx = CallContext::of(&gw, &req);
    let observation = cx.observation.clone();
    let call = {
        let gw = gw.clone();
        async move { gw.respond(body, cx.chat()).await }
    };
    let framing = Framing {
        stream,
        failed: Box::new(move |e| scira2api_core::failed_before_first_event(&model, e)),
        keepalive: crate::sse::KEEPALIVE,
    };
    Ok(answer(&gw, &req, observation, call, framing).await?)
}

/// `GET /v1/responses/{id}`.
pub async fn get(gw: web::Data<Gateway>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let body = gw.stored_response(&id).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    gw: web::Data<Gateway>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(gw.delete_response(&id).await?))
}

/// `POST /v1/responses/input_tokens`.
pub async fn input_tokens(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_body(&gw, &req, payload).await?;
    Ok(HttpResponse::Ok().json(gw.responses_input_tokens(&body).await?))
}
