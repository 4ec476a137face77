//! Turning transport failures and non-2xx upstream answers into [`Error`]s that tell the client
//! (and the operator) what happened.

use crate::config::UpstreamConfig;
use crate::connect::proxy_failure;
use crate::stream::humantime_short;
use awc::error::{ConnectError, PayloadError, SendRequestError};
use awc::http::header::HeaderMap;
use bytes::Bytes;
use scira2api_types::{Error, openai_error_message};
use std::time::Duration;

/// Whether a transport failure can turn out differently on a second try: connection errors,
/// no response head in time, a connection that broke while sending, a garbled response head.
pub(crate) fn retryable_send_error(e: &SendRequestError) -> bool {
    matches!(
        e,
        SendRequestError::Connect(_)
            | SendRequestError::Timeout
            | SendRequestError::Send(_)
            | SendRequestError::Response(_)
    )
}

/// The error for a request that got no response.
pub(crate) fn send_error(e: SendRequestError, config: &UpstreamConfig) -> Error {
    let host = config.host();
    let settings = config.settings();
    if let SendRequestError::Connect(ConnectError::Io(io)) = &e {
        if let Some(msg) = proxy_failure(io) {
            return Error::Proxy(format!(
                "{msg} (reaching {host}; no direct connection is tried)"
            ));
        }
    }
    if let (Some(proxy), SendRequestError::Connect(ConnectError::Timeout)) = (config.proxied(), &e)
    {
        return Error::Proxy(format!(
            "proxy {} failed: no connection to {host} within {} (CONNECT_TIMEOUT)",
            proxy.describe(),
            humantime_short(settings.connect_timeout)
        ));
    }
    match e {
        SendRequestError::Timeout => Error::UpstreamTimeout(format!(
            "{host} did not answer within {} (CLIENT_TIMEOUT)",
            humantime_short(settings.client_timeout)
        )),
        SendRequestError::Connect(ConnectError::Timeout) => Error::UpstreamTimeout(format!(
            "could not connect to {host} within {} (CONNECT_TIMEOUT)",
            humantime_short(settings.connect_timeout)
        )),
        SendRequestError::Connect(c) => {
            Error::upstream(format!("could not connect to {host}: {c}"))
        }
        other => Error::upstream(format!("request to {host} failed: {other}")),
    }
}

/// The error for a body that could not be read.
pub(crate) fn body_error(e: PayloadError, config: &UpstreamConfig) -> Error {
    let host = config.host();
    match e {
        PayloadError::Overflow => Error::upstream(format!(
            "the answer from {host} is larger than MAX_BODY_BYTES ({} bytes)",
            config.settings().max_body_bytes
        )),
        other => Error::upstream(format!("reading the answer from {host} failed: {other}")),
    }
}

/// `retry-after-ms` (preferred) or `retry-after` in seconds.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_millis(ms as u64));
        }
    }
    get("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Maps a non-2xx answer of an OpenAI-compatible upstream: an OpenAI error object is kept as it
/// was; anything else becomes a 502 that says what came back.
pub(crate) fn map_openai_error(status: u16, retry: Option<Duration>, body: &Bytes) -> Error {
    let parsed = openai_error_message(body);
    if status == 401 {
        // Passed on as it was, a 401 would tell the client its *gateway* key is wrong.
        let detail = parsed.unwrap_or_else(|| describe_body(body));
        return Error::upstream_status(
            403,
            "upstream_unauthorized",
            format!(
                "the upstream rejected the gateway's upstream credentials (HTTP 401: {detail}); the operator should check UPSTREAM_API_KEY"
            ),
        );
    }
    if let Some(message) = parsed {
        return Error::upstream_api(status, body.clone(), message, retry);
    }
    Error::upstream(format!(
        "the upstream answered HTTP {status} with {}",
        describe_body(body)
    ))
    .retryable(scira2api_types::retryable_status(status))
    .with_retry_after(retry)
}

/// The error for a 3xx answer: the gateway never follows redirects (they could lead the
/// upstream key anywhere), and a bare 3xx without its `Location` would mean nothing to a client.
pub(crate) fn redirect_error(status: u16, location: Option<&str>, host: &str) -> Error {
    let to = location
        .map(|l| format!(" to {}", l.chars().take(200).collect::<String>()))
        .unwrap_or_default();
    Error::upstream_status(
        502,
        "upstream_redirect",
        format!(
            "{host} answered HTTP {status} (a redirect{to}); the gateway does not follow redirects: set BASE_URL to the final address"
        ),
    )
}

/// A short, safe description of a body for error messages.
pub(crate) fn describe_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return "an empty body".to_owned();
    }
    let lower = trimmed
        .get(..trimmed.len().min(64))
        .unwrap_or("")
        .to_ascii_lowercase();
    if lower.starts_with("<!doctype") || lower.starts_with("<html") {
        return "an HTML page (a firewall, a bot check, or a wrong BASE_URL?)".to_owned();
    }
    let snippet: String = trimmed.chars().take(200).collect();
    format!("a non-OpenAI body: {snippet}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_bodies() {
        assert_eq!(describe_body(b""), "an empty body");
        assert!(describe_body(b"<!DOCTYPE html><html>").contains("HTML page"));
        assert!(describe_body(b"oops").contains("oops"));
    }

    #[test]
    fn maps_openai_and_other_bodies() {
        let e = map_openai_error(
            503,
            None,
            &Bytes::from_static(
                br#"{"error":{"message":"busy","type":"server_error","param":null,"code":null}}"#,
            ),
        );
        assert_eq!(e.status(), 503);
        assert!(e.should_retry());
        let e = map_openai_error(
            401,
            None,
            &Bytes::from_static(br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#),
        );
        assert_eq!((e.status(), e.code()), (403, Some("upstream_unauthorized")));
        assert!(e.to_string().contains("upstream credentials"));
        let e = redirect_error(302, Some("https://elsewhere/"), "h");
        assert_eq!((e.status(), e.code()), (502, Some("upstream_redirect")));
        assert!(e.to_string().contains("https://elsewhere/"));
        let e = map_openai_error(404, None, &Bytes::from_static(b"nope"));
        assert_eq!((e.status(), e.code()), (502, Some("upstream_error")));
        assert!(!e.should_retry());
    }

    #[test]
    fn reads_retry_after_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            awc::http::header::HeaderName::from_static("retry-after"),
            "3".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            awc::http::header::HeaderName::from_static("retry-after-ms"),
            "1500".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
    }
}
