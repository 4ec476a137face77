//! The OpenAI endpoints beside chat and Responses: the JSON ones with a `model` (embeddings,
//! legacy completions, moderations, image generation, speech) answered by
//! [`Gateway::forward`], in OpenAI's shapes, a completions stream with chat's framing (an error
//! event and `[DONE]` on a failure after the first byte), speech audio streamed with its content
//! type; the multipart uploads ([`Gateway::forward_upload`]) and files and batches
//! ([`Gateway::forward_files`]) streamed both ways, within `MAX_UPLOAD_BYTES` and
//! `BODY_READ_TIMEOUT` between chunks.

use crate::conn::ConnWatch;
use crate::endpoint::{CallContext, json_body};
use crate::error::ApiError;
use crate::routes::{X_PROVIDER, answer_headers, declared_length, stream_headers};
use crate::sse::SseBody;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use scira2api_core::{
    Bounded, Bounds, Forwarded, Gateway, JsonEndpoint, StreamedOutcome, UploadEndpoint,
};
use scira2api_types::Error;
use std::time::Duration;

async fn json_endpoint(
    endpoint: JsonEndpoint,
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_body(&gw, &req, payload).await?;
    let cx = CallContext::of(&gw, &req);
    let outcome = gw.forward(endpoint, body, cx.chat()).await?;
    let mut resp = HttpResponse::Ok();
    answer_headers(
        &mut resp,
        outcome.cache,
        &outcome.provider,
        outcome.usage_source,
    );
    Ok(match outcome.reply {
        Forwarded::Json(body) => resp
            .insert_header((
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ))
            .body(body),
        Forwarded::Stream(frames) => {
            let heartbeat = gw.state().config().server.heartbeat_interval;
            let gone = crate::conn::watch(&req).map(ConnWatch::gone);
            let body = SseBody::new(frames, heartbeat)
                .ending_when(gone)
                .cut_by(Box::pin(gw.state().streams_cut()))
                .counted(gw.state().activity().enter());
            stream_headers(&mut resp).streaming(body)
        }
        Forwarded::Binary { content_type, body } => {
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                resp.insert_header((header::CONTENT_TYPE, v));
            }
            resp.streaming(body)
        }
    })
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    json_endpoint(JsonEndpoint::Embeddings, gw, req, payload).await
}

/// `POST /v1/completions` (legacy).
pub async fn completions(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    json_endpoint(JsonEndpoint::Completions, gw, req, payload).await
}

/// `POST /v1/moderations`.
pub async fn moderations(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    json_endpoint(JsonEndpoint::Moderations, gw, req, payload).await
}

/// `POST /v1/images/generations`.
pub async fn image_generations(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    json_endpoint(JsonEndpoint::ImageGenerations, gw, req, payload).await
}

/// `POST /v1/audio/speech`.
pub async fn speech(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    json_endpoint(JsonEndpoint::Speech, gw, req, payload).await
}

/// The errors of a client's upload streamed on: 413 over `MAX_UPLOAD_BYTES`, 408 after a pause
/// longer than `BODY_READ_TIMEOUT`.
struct Upload {
    limit: usize,
}

impl Bounds for Upload {
    fn too_large(&self) -> Error {
        Error::PayloadTooLarge { limit: self.limit }
    }

    fn broken(&self, e: &dyn std::fmt::Display) -> Error {
        Error::invalid(format!("could not read the request body: {e}"), None)
    }

    fn silent(&self, idle: Duration) -> Error {
        Error::RequestTimeout(format!(
            "The upload paused for more than {}s (BODY_READ_TIMEOUT).",
            idle.as_secs_f64()
        ))
    }
}

/// The request body streamed on as it arrives, within `MAX_UPLOAD_BYTES` (a declared
/// `Content-Length` over it is refused at once) and `BODY_READ_TIMEOUT` between chunks.
type UploadBody = Bounded<web::Payload, Upload>;

fn upload_body(
    req: &HttpRequest,
    payload: web::Payload,
    gw: &Gateway,
) -> Result<UploadBody, Error> {
    let server = &gw.state().config().server;
    let limit = server.max_upload_bytes;
    if declared_length(req).is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge { limit });
    }
    Ok(Bounded::new(
        payload,
        server.body_read_timeout,
        Some(limit),
        Upload { limit },
    ))
}

/// A streamed answer with the upstream's status and content type.
fn streamed(outcome: StreamedOutcome) -> HttpResponse {
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::OK);
    let mut resp = HttpResponse::build(status);
    if let Ok(v) = HeaderValue::from_str(&outcome.provider) {
        resp.insert_header((X_PROVIDER, v));
    }
    if let Some(v) = outcome
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        resp.insert_header((header::CONTENT_TYPE, v));
    }
    resp.streaming(outcome.body)
}

async fn upload(
    endpoint: UploadEndpoint,
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = upload_body(&req, payload, &gw)?;
    let limit = gw.state().config().server.max_upload_bytes;
    let cx = CallContext::of(&gw, &req);
    let outcome = gw
        .forward_upload(endpoint, &content_type, body, limit, cx.chat())
        .await?;
    Ok(streamed(outcome))
}

/// `POST /v1/audio/transcriptions`.
pub async fn transcriptions(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    upload(UploadEndpoint::Transcriptions, gw, req, payload).await
}

/// `POST /v1/audio/translations`.
pub async fn translations(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    upload(UploadEndpoint::Translations, gw, req, payload).await
}

/// `POST /v1/images/edits`.
pub async fn image_edits(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    upload(UploadEndpoint::ImageEdits, gw, req, payload).await
}

/// `/v1/files…` and `/v1/batches…`, any method: forwarded as they are to the instance the
/// config names for them.
pub async fn files(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let target = req
        .uri()
        .path_and_query()
        .map_or(req.path(), |p| p.as_str())
        .trim_start_matches("/v1/")
        .to_owned();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || declared_length(&req).is_some_and(|n| n > 0);
    let body = if has_body {
        Some(upload_body(&req, payload, &gw)?)
    } else {
        None
    };
    let cx = CallContext::of(&gw, &req);
    let outcome = gw
        .forward_files(
            req.method().as_str(),
            &target,
            content_type.as_deref(),
            body,
            cx.chat(),
        )
        .await?;
    Ok(streamed(outcome))
}
