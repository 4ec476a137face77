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
use crate::routes::{X_CACHE, X_PROVIDER, X_USAGE_SOURCE, stream_headers};
use crate::sse::SseBody;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::Stream;
use scira2api_core::{Forwarded, Gateway, JsonEndpoint, StreamedOutcome, UploadEndpoint};
use scira2api_types::Error;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

async fn json_endpoint(
    endpoint: JsonEndpoint,
    gw: web::Data<Gateway>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_body(&gw, &req, payload).await?;
    let cx = CallContext::of(&req);
    let outcome = gw.forward(endpoint, body, cx.chat()).await?;
    let mut resp = HttpResponse::Ok();
    resp.insert_header((X_CACHE, HeaderValue::from_static(outcome.cache.as_str())));
    if let Ok(v) = HeaderValue::from_str(&outcome.provider) {
        resp.insert_header((X_PROVIDER, v));
    }
    if let Some(source) = outcome.usage_source {
        resp.insert_header((X_USAGE_SOURCE, HeaderValue::from_static(source.as_str())));
    }
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

/// A request body streamed on as it arrives: at most `limit` bytes (413 after), and no silence
/// longer than `BODY_READ_TIMEOUT` between chunks (408).
struct UploadBody {
    payload: web::Payload,
    left: usize,
    limit: usize,
    idle: Duration,
    sleep: Pin<Box<actix_rt::time::Sleep>>,
    done: bool,
}

impl UploadBody {
    fn new(req: &HttpRequest, payload: web::Payload, gw: &Gateway) -> Result<UploadBody, Error> {
        let server = &gw.state().config().server;
        let limit = server.max_upload_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(Error::PayloadTooLarge { limit });
        }
        Ok(UploadBody {
            payload,
            left: limit,
            limit,
            idle: server.body_read_timeout,
            sleep: Box::pin(actix_rt::time::sleep(server.body_read_timeout)),
            done: false,
        })
    }
}

impl Stream for UploadBody {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.payload).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let deadline = actix_rt::time::Instant::now() + this.idle;
                this.sleep.as_mut().reset(deadline);
                if chunk.len() > this.left {
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::PayloadTooLarge { limit: this.limit })));
                }
                this.left -= chunk.len();
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(Error::invalid(
                    format!("could not read the request body: {e}"),
                    None,
                ))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.done = true;
                Poll::Ready(Some(Err(Error::RequestTimeout(format!(
                    "The upload paused for more than {}s (BODY_READ_TIMEOUT).",
                    this.idle.as_secs_f64()
                )))))
            }
        }
    }
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
    let body = UploadBody::new(&req, payload, &gw)?;
    let limit = gw.state().config().server.max_upload_bytes;
    let cx = CallContext::of(&req);
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
    let headers = req.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|n| n.trim() != "0");
    let body = if has_body {
        Some(UploadBody::new(&req, payload, &gw)?)
    } else {
        None
    };
    let cx = CallContext::of(&req);
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
