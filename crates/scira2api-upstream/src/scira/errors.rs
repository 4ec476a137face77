//! Scira's errors before the stream starts, as OpenAI errors.
//!
//! Scira answers a rejected request with `{"code":"<type>:<surface>","message","cause"}` and a
//! status per type. A bare 500 (empty or not JSON) is what Scira sends for its own failures and
//! for several limits (the signed-in 100/day, chat ownership, its database): a 502 that says
//! so, retried once at most. The hosting platform's challenge (`x-vercel-mitigated: challenge`,
//! `cf-mitigated: challenge`, or an HTML 403/429) is a 502 `upstream_blocked` that is never
//! retried.

use crate::config::UpstreamConfig;
use crate::errors::describe_body;
use awc::http::header::HeaderMap;
use bytes::Bytes;
use scira2api_types::{Error, openai_error_message};
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
struct SciraError {
    code: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    cause: Option<String>,
}

/// A Scira 429 is worth retrying only when Scira says the wait is short.
const SHORT_WAIT: Duration = Duration::from_secs(60);

/// Whether the hosting platform answered with its bot challenge.
fn challenged(headers: &HeaderMap) -> bool {
    ["x-vercel-mitigated", "cf-mitigated"].iter().any(|h| {
        headers
            .get(*h)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("challenge"))
    })
}

/// Maps a non-2xx answer of Scira's web endpoint to an [`Error`].
pub(crate) fn map_error(
    _config: &UpstreamConfig,
    status: u16,
    retry: Option<Duration>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Error {
    if challenged(headers) {
        return Error::Upstream {
            status: 502,
            kind: "upstream_error",
            code: "upstream_blocked",
            message: format!(
                "Scira's hosting platform answered HTTP {status} with its bot challenge (it refuses this server's traffic for now); not retried: check SCIRA_USER_AGENT, SCIRA_COOKIE and whether this IP is allowed"
            ),
            retry_after: None,
            retryable: false,
        };
    }
    map_body(status, retry, body)
}

fn map_body(status: u16, retry: Option<Duration>, body: &Bytes) -> Error {
    if let Ok(e) = serde_json::from_slice::<SciraError>(body) {
        let text = match (&e.message, &e.cause) {
            (Some(m), Some(c)) => format!("{m} ({c})"),
            (Some(m), None) => m.clone(),
            (None, Some(c)) => c.clone(),
            (None, None) => e.code.clone(),
        };
        let err = |status, kind, code, message: String, retryable| Error::Upstream {
            status,
            kind,
            code,
            message,
            retry_after: retry,
            retryable,
        };
        return match status {
            400 => err(
                400,
                "invalid_request_error",
                "bad_request",
                format!("Scira rejected the request: {text}"),
                false,
            ),
            401 => err(
                403,
                "permission_error",
                "upstream_unauthorized",
                format!("Scira requires a signed-in session for this (set SCIRA_COOKIE): {text}"),
                false,
            ),
            402 => err(
                402,
                "insufficient_quota",
                "upgrade_required",
                format!("Scira requires a paid plan for this: {text}"),
                false,
            ),
            403 => err(
                403,
                "permission_error",
                "upstream_forbidden",
                format!("Scira refused the request: {text}"),
                false,
            ),
            404 => err(
                404,
                "invalid_request_error",
                "not_found",
                format!("Scira: {text}"),
                false,
            ),
            429 => err(
                429,
                "rate_limit_error",
                "rate_limit_exceeded",
                format!("Scira's rate limit was reached: {text}"),
                retry.is_some_and(|w| w <= SHORT_WAIT),
            ),
            503 => err(
                503,
                "server_error",
                "upstream_unavailable",
                format!("Scira is offline: {text}"),
                true,
            ),
            s => err(
                502,
                "upstream_error",
                "upstream_error",
                format!("Scira answered HTTP {s}: {text}"),
                s >= 500,
            ),
        };
    }
    if let Some(message) = openai_error_message(body) {
        return Error::upstream_api(status, body.clone(), message, retry);
    }
    if status == 500 {
        return Error::Upstream {
            status: 502,
            kind: "upstream_error",
            code: "scira_server_error",
            message: format!(
                "Scira failed with HTTP 500 and {}: most likely a limit of the signed-in account (100 messages a day on a free plan), a chat id that belongs to another user, or a failure inside Scira; retried once at most",
                describe_body(body)
            ),
            retry_after: retry,
            retryable: true,
        };
    }
    let blocked = matches!(status, 401 | 403 | 429);
    Error::Upstream {
        status: 502,
        kind: "upstream_error",
        code: if blocked {
            "upstream_blocked"
        } else {
            "upstream_error"
        },
        message: if blocked {
            format!(
                "Scira blocked the request (HTTP {status} with {}): the service or its firewall refused this server; check SCIRA_COOKIE, SCIRA_USER_AGENT and whether this IP is allowed",
                describe_body(body)
            )
        } else {
            format!(
                "Scira failed with HTTP {status} and {}; check BASE_URL and SCIRA_PATH",
                describe_body(body)
            )
        },
        retry_after: retry,
        retryable: status >= 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> (u16, Bytes) {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/scira/errors/"
        );
        let body = std::fs::read(format!("{dir}{name}.json")).expect("fixture");
        let status = std::fs::read_to_string(format!("{dir}{name}.status")).expect("status");
        (status.trim().parse().unwrap(), Bytes::from(body))
    }

    #[test]
    fn scira_fixtures_map_to_openai_errors() {
        let (s, b) = fixture("rate_limit_429");
        let e = map_body(s, None, &b);
        assert_eq!((e.status(), e.code()), (429, Some("rate_limit_exceeded")));
        assert!(e.to_string().contains("25 searches"), "{e}");
        assert!(
            !e.should_retry(),
            "a days-long window is not worth retrying"
        );
        let e = map_body(s, Some(Duration::from_secs(5)), &b);
        assert!(e.should_retry());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(5)));

        let (s, b) = fixture("upgrade_required_402");
        let e = map_body(s, None, &b);
        assert_eq!(
            (e.status(), e.code(), e.kind()),
            (402, Some("upgrade_required"), "insufficient_quota")
        );
        assert!(!e.should_retry());

        let (s, b) = fixture("bad_request_400");
        let e = map_body(s, None, &b);
        assert_eq!((e.status(), e.code()), (400, Some("bad_request")));
        assert!(e.to_string().contains("Messages array is required"), "{e}");
    }

    #[test]
    fn the_non_json_fixtures_are_told_apart() {
        let (s, b) = fixture("empty_500");
        assert!(b.is_empty());
        let e = map_body(s, None, &b);
        assert_eq!((e.status(), e.code()), (502, Some("scira_server_error")));
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/scira/errors/"
        );
        let html = std::fs::read(format!("{dir}challenge_429.html")).unwrap();
        let mut headers = HeaderMap::new();
        for line in std::fs::read_to_string(format!("{dir}challenge_429.headers"))
            .unwrap()
            .lines()
        {
            let (k, v) = line.split_once(": ").unwrap();
            headers.insert(
                awc::http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                awc::http::header::HeaderValue::from_str(v).unwrap(),
            );
        }
        let config = crate::config::tests::cfg("https://scira.ai");
        let e = map_error(&config, 429, None, &headers, &Bytes::from(html.clone()));
        assert_eq!(
            (e.status(), e.code(), e.should_retry()),
            (502, Some("upstream_blocked"), false)
        );
        assert!(e.to_string().contains("challenge"), "{e}");
        // Without the header, the HTML 429 is still a block, never Scira's own rate limit.
        let e = map_error(&config, 429, None, &HeaderMap::new(), &Bytes::from(html));
        assert_eq!(
            (e.code(), e.should_retry()),
            (Some("upstream_blocked"), false)
        );
    }

    #[test]
    fn html_and_empty_bodies_tell_the_operator_what_to_check() {
        let e = map_body(
            403,
            None,
            &Bytes::from_static(b"<!DOCTYPE html><html>Forbidden</html>"),
        );
        assert_eq!((e.status(), e.code()), (502, Some("upstream_blocked")));
        assert!(e.to_string().contains("SCIRA_COOKIE"), "{e}");
        let e = map_body(500, None, &Bytes::new());
        assert_eq!((e.status(), e.code()), (502, Some("scira_server_error")));
        assert!(e.to_string().contains("empty body"), "{e}");
        assert!(e.to_string().contains("100 messages a day"), "{e}");
        assert!(e.should_retry() && crate::retry::retried_once_at_most(&e));
        let mut challenge = HeaderMap::new();
        challenge.insert(
            awc::http::header::HeaderName::from_static("x-vercel-mitigated"),
            awc::http::header::HeaderValue::from_static("challenge"),
        );
        let config = crate::config::tests::cfg("https://scira.ai");
        let e = map_error(
            &config,
            429,
            None,
            &challenge,
            &Bytes::from_static(b"<html>Vercel Security Checkpoint</html>"),
        );
        assert_eq!(
            (e.status(), e.code(), e.should_retry()),
            (502, Some("upstream_blocked"), false)
        );
        let e = map_body(
            503,
            None,
            &Bytes::from_static(br#"{"code":"offline:chat","message":"down"}"#),
        );
        assert_eq!((e.status(), e.code()), (503, Some("upstream_unavailable")));
    }
}
