//! CORS: actix-cors for what a browser sends cross-origin, and only `Vary` for the rest.
//!
//! A browser sends `Origin` on every cross-origin request and on every preflight; a request
//! without it (an SDK, curl, a server-side client) is not a CORS request, and the CORS headers
//! of its answer — the allowed origin and the ~300-byte list of exposed headers — would be
//! read by nobody. The gate ([`crate::gate`]) passes such a request straight on and gives its answer the
//! same `Vary` that actix-cors writes, so a shared cache still keeps the answers apart by
//! origin. `OPTIONS` always goes through actix-cors, so preflight handling is actix-cors's own.

use actix_cors::Cors;
use actix_web::dev::ServiceRequest;
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use scira2api_core::Config;

/// The response headers a browser client may read: the gateway's own (request id, rate limits,
/// cache and usage facts, retry hints). A fixed list is encoded once; "expose any header" would
/// make actix-cors collect every response's header names anew on every response.
pub const EXPOSED_HEADERS: [&str; 15] = [
    "x-request-id",
    "x-gateway-provider",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-cache",
    "x-usage-source",
    "x-gateway-overhead-ms",
    "x-should-retry",
    "x-dropped-params",
    "retry-after",
    "retry-after-ms",
];

/// CORS from the settings: any origin with `*`, otherwise exactly the listed origins.
pub fn cors(config: &Config) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "DELETE", "OPTIONS"])
        .allow_any_header()
        .expose_headers(EXPOSED_HEADERS)
        .max_age(86_400);
    if config.server.cors_origins.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin();
    } else {
        for origin in &config.server.cors_origins {
            cors = cors.allowed_origin(origin);
        }
    }
    cors
}

/// The `Vary` actix-cors gives every answer (the request headers a CORS answer depends on).
const VARY_CORS: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// Whether `req` goes through actix-cors: it has an `Origin` header (a browser's cross-origin
/// request) or is an `OPTIONS` (a preflight). Any other request is not a CORS request, and its
/// answer gets [`add_vary`] only (see the module).
pub(crate) fn is_cors_request(req: &ServiceRequest) -> bool {
    req.headers().contains_key(header::ORIGIN) || req.method() == Method::OPTIONS
}

/// Adds the CORS request headers to the answer's `Vary`, after any it already has.
pub(crate) fn add_vary(headers: &mut header::HeaderMap) {
    let value = match headers.get(header::VARY) {
        None => HeaderValue::from_static(VARY_CORS),
        Some(v) => {
            let mut joined = Vec::with_capacity(v.len() + 2 + VARY_CORS.len());
            joined.extend_from_slice(v.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(VARY_CORS.as_bytes());
            match HeaderValue::from_bytes(&joined) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
    };
    headers.insert(header::VARY, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vary_is_added_after_the_answers_own() {
        let mut headers = header::HeaderMap::new();
        add_vary(&mut headers);
        assert_eq!(headers.get(header::VARY).unwrap(), VARY_CORS);
        let mut headers = header::HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("Accept"));
        add_vary(&mut headers);
        assert_eq!(
            headers.get(header::VARY).unwrap(),
            "Accept, Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        );
    }
}
