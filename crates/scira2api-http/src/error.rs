//! Rendering [`Error`] as an actix response: OpenAI JSON (or Anthropic's shape on the Messages
//! API routes), the right status, retry headers.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use scira2api_types::Error;
use std::fmt;

/// An [`Error`] that actix can answer with.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    fn error_response(&self) -> HttpResponse {
        error_response(&self.0)
    }
}

/// The HTTP response for an error: status, `application/json` body in OpenAI form, and
/// `Retry-After` / `retry-after-ms` when the wait is known, and `x-should-retry: false` when
/// sending the same request again cannot help (the OpenAI SDKs obey it).
pub fn error_response(e: &Error) -> HttpResponse {
    respond(e, e.body())
}

/// The same in Anthropic's shape (`{"type":"error","error":{"type","message"}}`), for the
/// Messages API routes: the Anthropic SDKs parse that one.
pub fn anthropic_error_response(e: &Error) -> HttpResponse {
    respond(e, e.anthropic_body())
}

/// An error answered in the error shape of the API family `path` belongs to (the route table
/// says which).
pub fn error_for(path: &str, e: &Error) -> HttpResponse {
    match crate::route_table::family(path) {
        crate::route_table::Family::OpenAi => error_response(e),
        crate::route_table::Family::Anthropic => anthropic_error_response(e),
    }
}

fn respond(e: &Error, body: bytes::Bytes) -> HttpResponse {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = HttpResponse::build(status);
    resp.content_type("application/json");
    if let Some(wait) = e.retry_after() {
        let ms = wait.as_millis().max(1);
        resp.insert_header(("retry-after", ms.div_ceil(1000).to_string()));
        resp.insert_header(("retry-after-ms", ms.to_string()));
    }
    if !e.should_retry() {
        resp.insert_header(("x-should-retry", "false"));
    }
    resp.body(body)
}

/// An [`Error`] answered in Anthropic's shape (the Messages API handlers return it).
#[derive(Debug)]
pub struct AnthropicError(pub Error);

impl From<Error> for AnthropicError {
    fn from(e: Error) -> Self {
        AnthropicError(e)
    }
}

impl fmt::Display for AnthropicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for AnthropicError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    fn error_response(&self) -> HttpResponse {
        anthropic_error_response(&self.0)
    }
}
