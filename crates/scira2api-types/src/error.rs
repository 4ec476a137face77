//! The gateway's one error type and its OpenAI JSON rendering.
//!
//! Every failure a client can see — bad input, auth, limits, upstream trouble — is an [`Error`].
//! [`Error::body`] renders it as `{"error":{"message","type","param","code"}}`, the shape every
//! OpenAI SDK parses, and [`Error::status`] gives the HTTP status that goes with it.

use bytes::Bytes;
use serde::Serialize;
use std::time::Duration;

/// Whether an upstream HTTP status may turn out differently on a second try: 408, 429, 500,
/// 502, 503, 504, and Anthropic's 529 (overloaded). The one definition of the rule; retries, fallbacks and the error flags all
/// read it. (Quota errors are 429s that are not retried: see [`Error::upstream_api`].)
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 529)
}

/// A failure that ends a request, with everything needed to answer the client in OpenAI form.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed or fails validation (400). `param` names the offending field.
    #[error("{message}")]
    InvalidRequest {
        /// Human-readable explanation, naming where the input broke.
        message: String,
        /// The request field at fault, when there is one.
        param: Option<String>,
        /// A machine-readable code, when one applies.
        code: Option<&'static str>,
    },
    /// Missing or wrong gateway API key (401 `invalid_api_key`).
    #[error("{0}")]
    InvalidApiKey(&'static str),
    /// The requested model is not known (404 `model_not_found`).
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    /// A stored object (e.g. a response by id) does not exist or has expired (404; `param`
    /// names the field that held the id, when it came from the body).
    #[error("{message}")]
    ResourceNotFound {
        /// What was not found.
        message: String,
        /// The request field that named it.
        param: Option<String>,
    },
    /// No route matches the path (404).
    #[error("Unknown request URL: {method} {path}. Please check the URL and method.")]
    NotFound {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// The path exists but not for this method (405).
    #[error("Method {method} is not allowed for {path}.")]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// The request body exceeds `MAX_BODY_BYTES` (413).
    #[error("Request body is larger than the limit of {limit} bytes.")]
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The client did not send its request in time (408 `request_timeout`).
    #[error("{0}")]
    RequestTimeout(String),
    /// The request body is not declared as JSON (415).
    #[error("Unsupported Content-Type `{0}`; send `application/json`.")]
    UnsupportedMediaType(String),
    /// The client exceeded its rate limit (429 `rate_limit_exceeded`).
    #[error("{message}")]
    RateLimited {
        /// Explanation for the client.
        message: String,
        /// How long until a retry can succeed, sent as `Retry-After`/`retry-after-ms`.
        retry_after: Option<Duration>,
    },
    /// The upstream answered with an OpenAI error object: passed to the client as it was.
    #[error("upstream answered {status}: {message}")]
    UpstreamApi {
        /// The upstream HTTP status.
        status: u16,
        /// The upstream body, verified to be `{"error":{...}}`, forwarded byte for byte.
        body: Bytes,
        /// The upstream's `error.message`, for logs.
        message: String,
        /// The upstream's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
        /// Whether sending the same request again can succeed.
        retryable: bool,
    },
    /// An upstream failure mapped to our own OpenAI error (status, type and code chosen by the
    /// provider that understood the upstream's answer).
    #[error("{message}")]
    Upstream {
        /// The status the client gets.
        status: u16,
        /// OpenAI error `type`.
        kind: &'static str,
        /// OpenAI error `code`.
        code: &'static str,
        /// Human-readable explanation, telling the operator what to check.
        message: String,
        /// The upstream's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
        /// Whether sending the same request again can succeed.
        retryable: bool,
    },
    /// The upstream did not answer in time (504 `upstream_timeout`).
    #[error("{0}")]
    UpstreamTimeout(String),
    /// A configured proxy failed (502 `proxy_error`); the gateway never falls back to direct.
    #[error("{0}")]
    Proxy(String),
    /// A bug or an impossible state inside the gateway (500).
    #[error("{0}")]
    Internal(String),
}

/// The `error` object inside an OpenAI error body.
#[derive(Debug, Serialize)]
pub struct ErrorObject<'a> {
    /// Human-readable explanation.
    pub message: &'a str,
    /// Error category, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The request field at fault, or null.
    pub param: Option<&'a str>,
    /// Machine-readable code (always a string or null, never a number).
    pub code: Option<&'a str>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: ErrorObject<'a>,
}

impl Error {
    /// A 400 `invalid_request_error` naming the field at fault.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Error::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_owned),
            code: None,
        }
    }

    /// An upstream failure with its own status and code (type `upstream_error`, not retryable,
    /// no `Retry-After`); adjust with [`Error::retryable`] and [`Error::with_retry_after`].
    pub fn upstream_status(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Error::Upstream {
            status,
            kind: "upstream_error",
            code,
            message: message.into(),
            retry_after: None,
            retryable: false,
        }
    }

    /// The same upstream failure marked retryable or not.
    pub fn retryable(mut self, yes: bool) -> Self {
        if let Error::Upstream { retryable, .. } | Error::UpstreamApi { retryable, .. } = &mut self
        {
            *retryable = yes;
        }
        self
    }

    /// The same upstream failure with a `Retry-After`.
    pub fn with_retry_after(mut self, wait: Option<Duration>) -> Self {
        if let Error::Upstream { retry_after, .. } = &mut self {
            *retry_after = wait;
        }
        self
    }

    /// The same upstream error with OpenAI error `type` `kind` (for a provider that knows the
    /// upstream's category, such as `invalid_request_error` for a request it refused).
    pub fn with_kind(mut self, new: &'static str) -> Self {
        if let Error::Upstream { kind, .. } = &mut self {
            *kind = new;
        }
        self
    }

    /// A 502 `upstream_error` with a message for the operator.
    pub fn upstream(message: impl Into<String>) -> Self {
        Error::upstream_status(502, "upstream_error", message).retryable(true)
    }

    /// An upstream OpenAI error object (`body` is `{"error":{...}}`), forwarded as it is.
    /// Quota errors (`insufficient_quota`) are marked as not worth retrying.
    pub fn upstream_api(
        status: u16,
        body: Bytes,
        message: String,
        retry_after: Option<Duration>,
    ) -> Self {
        let retryable =
            retryable_status(status) && !body.windows(18).any(|w| w == b"insufficient_quota");
        Error::UpstreamApi {
            status,
            body,
            message,
            retry_after,
            retryable,
        }
    }

    /// The same error after the gateway has already retried it and given up: the client is told
    /// not to retry (`x-should-retry: false`), so attempts do not multiply.
    pub fn exhausted(self) -> Self {
        match self {
            Error::Upstream { .. } | Error::UpstreamApi { .. } => self.retryable(false),
            Error::UpstreamTimeout(message) => Error::Upstream {
                status: 504,
                kind: "timeout_error",
                code: "upstream_timeout",
                message,
                retry_after: None,
                retryable: false,
            },
            Error::Proxy(message) => Error::upstream_status(502, "proxy_error", message),
            other => other,
        }
    }

    /// The same error with `note` appended to its message in parentheses (for example how long
    /// the gateway tried). An upstream error object forwarded as it was is left unchanged.
    pub fn with_note(mut self, note: &str) -> Self {
        if let Error::Upstream { message, .. }
        | Error::UpstreamTimeout(message)
        | Error::Proxy(message) = &mut self
        {
            *message = format!("{message} ({note})");
        }
        self
    }

    /// Whether the client may succeed by sending the same request again (`x-should-retry`).
    pub fn should_retry(&self) -> bool {
        match self {
            Error::Upstream { retryable, .. } | Error::UpstreamApi { retryable, .. } => *retryable,
            Error::RateLimited { .. }
            | Error::UpstreamTimeout(_)
            | Error::Proxy(_)
            | Error::Internal(_) => true,
            _ => false,
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidRequest { .. } => 400,
            Error::InvalidApiKey(_) => 401,
            Error::ModelNotFound(_) | Error::NotFound { .. } | Error::ResourceNotFound { .. } => {
                404
            }
            Error::MethodNotAllowed { .. } => 405,
            Error::PayloadTooLarge { .. } => 413,
            Error::RequestTimeout(_) => 408,
            Error::UnsupportedMediaType(_) => 415,
            Error::RateLimited { .. } => 429,
            Error::UpstreamApi { status, .. } | Error::Upstream { status, .. } => *status,
            Error::UpstreamTimeout(_) => 504,
            Error::Proxy(_) => 502,
            Error::Internal(_) => 500,
        }
    }

    /// OpenAI error `type`.
    pub fn kind(&self) -> &str {
        match self {
            Error::InvalidRequest { .. }
            | Error::ModelNotFound(_)
            | Error::NotFound { .. }
            | Error::ResourceNotFound { .. }
            | Error::MethodNotAllowed { .. }
            | Error::PayloadTooLarge { .. }
            | Error::RequestTimeout(_)
            | Error::UnsupportedMediaType(_) => "invalid_request_error",
            Error::InvalidApiKey(_) => "invalid_request_error",
            Error::RateLimited { .. } => "rate_limit_error",
            Error::Upstream { kind, .. } => kind,
            Error::UpstreamApi { .. } => "upstream_error",
            Error::UpstreamTimeout(_) => "timeout_error",
            Error::Proxy(_) => "upstream_error",
            Error::Internal(_) => "server_error",
        }
    }

    /// OpenAI error `code`: always a string or null.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::InvalidRequest { code, .. } => *code,
            Error::InvalidApiKey(_) => Some("invalid_api_key"),
            Error::ModelNotFound(_) => Some("model_not_found"),
            Error::NotFound { .. } => Some("unknown_url"),
            Error::ResourceNotFound { .. } => None,
            Error::MethodNotAllowed { .. } => Some("method_not_allowed"),
            Error::PayloadTooLarge { .. } => Some("request_too_large"),
            Error::RequestTimeout(_) => Some("request_timeout"),
            Error::UnsupportedMediaType(_) => Some("unsupported_media_type"),
            Error::RateLimited { .. } => Some("rate_limit_exceeded"),
            Error::Upstream { code, .. } => Some(code),
            Error::UpstreamApi { .. } => None,
            Error::UpstreamTimeout(_) => Some("upstream_timeout"),
            Error::Proxy(_) => Some("proxy_error"),
            Error::Internal(_) => Some("internal_error"),
        }
    }

    /// The request field at fault, when there is one.
    pub fn param(&self) -> Option<&str> {
        match self {
            Error::InvalidRequest { param, .. } | Error::ResourceNotFound { param, .. } => {
                param.as_deref()
            }
            Error::ModelNotFound(_) => Some("model"),
            _ => None,
        }
    }

    /// How long the client should wait before retrying, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. }
            | Error::UpstreamApi { retry_after, .. }
            | Error::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The OpenAI error JSON body: `{"error":{"message","type","param","code"}}`.
    ///
    /// An upstream OpenAI error object is returned exactly as the upstream sent it.
    pub fn body(&self) -> Bytes {
        if let Error::UpstreamApi { body, .. } = self {
            return body.clone();
        }
        let message = self.to_string();
        let envelope = Envelope {
            error: ErrorObject {
                message: &message,
                kind: self.kind(),
                param: self.param(),
                code: self.code(),
            },
        };
        // Serialising plain strings into a Vec cannot fail.
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }

    /// Anthropic's error `type` for this error's status (the Messages API routes answer in
    /// Anthropic's shape, which the Anthropic SDKs parse).
    pub fn anthropic_kind(&self) -> &'static str {
        match self.status() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            s if s >= 500 => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// The Anthropic error JSON body: `{"type":"error","error":{"type","message"}}` (an
    /// upstream's own error object is reduced to its message).
    pub fn anthropic_body(&self) -> Bytes {
        let message = match self {
            Error::UpstreamApi { body, .. } => {
                openai_error_message(body).unwrap_or_else(|| self.to_string())
            }
            _ => self.to_string(),
        };
        let v = serde_json::json!({
            "type": "error",
            "error": {"type": self.anthropic_kind(), "message": message},
        });
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }

    /// The error as one SSE event, `data: {"error":{...}}\n\n`, for failures after the first byte.
    pub fn sse_event(&self) -> Bytes {
        crate::response::sse_frame(&self.body())
    }
}

/// Parses an upstream body as an OpenAI error object; returns its `error.message` when it is one.
pub fn openai_error_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Env {
        error: Obj,
    }
    #[derive(serde::Deserialize)]
    struct Obj {
        message: Option<serde_json::Value>,
    }
    let env: Env = serde_json::from_slice(body).ok()?;
    Some(match env.error.message {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body(e: &Error) -> Value {
        serde_json::from_slice(&e.body()).unwrap()
    }

    #[test]
    fn renders_openai_shape_with_string_code() {
        let e = Error::invalid("`model` must be a string", Some("model"));
        assert_eq!(e.status(), 400);
        assert_eq!(
            body(&e),
            json!({"error":{"message":"`model` must be a string","type":"invalid_request_error","param":"model","code":null}})
        );
        let e = Error::InvalidApiKey("Incorrect API key provided.");
        assert_eq!(e.status(), 401);
        assert_eq!(body(&e)["error"]["code"], "invalid_api_key");
        assert_eq!(Error::ModelNotFound("x".into()).status(), 404);
        assert_eq!(
            body(&Error::ModelNotFound("x".into()))["error"]["code"],
            "model_not_found"
        );
    }

    #[test]
    fn upstream_openai_error_is_forwarded_verbatim() {
        let raw = br#"{"error":{"message":"quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        let msg = openai_error_message(raw).unwrap();
        let e = Error::upstream_api(429, Bytes::from_static(raw), msg, None);
        assert_eq!(&e.body()[..], &raw[..]);
        assert_eq!(e.status(), 429);
        assert!(!e.should_retry(), "quota errors are not retryable");
        let e = Error::upstream_api(
            503,
            Bytes::from_static(b"{\"error\":{}}"),
            String::new(),
            None,
        );
        assert!(e.should_retry());
        let e = e.exhausted();
        assert!(!e.should_retry());
        let t = Error::UpstreamTimeout("slow".into()).exhausted();
        assert_eq!(
            (t.status(), t.code(), t.kind()),
            (504, Some("upstream_timeout"), "timeout_error")
        );
        assert!(!t.should_retry());
        assert_eq!(openai_error_message(b"<html>"), None);
        assert_eq!(openai_error_message(br#"{"detail":"x"}"#), None);
    }

    #[test]
    fn sse_event_is_one_frame() {
        let e = Error::upstream("stream broke");
        let ev = e.sse_event();
        assert!(ev.starts_with(b"data: {\"error\":"));
        assert!(ev.ends_with(b"}\n\n"));
    }
}
