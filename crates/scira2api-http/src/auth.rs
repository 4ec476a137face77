//! API key check: `Authorization: Bearer <key>` against `APIKEY`, in constant time.

use crate::error::error_for;
use crate::route_table::RouteSpec;
use actix_web::HttpMessage;
use actix_web::body::EitherBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use scira2api_core::Gateway;
use scira2api_core::client::ClientScope;
use scira2api_types::Error;
use std::future::Future;
use subtle::ConstantTimeEq;

/// Whether `token` equals one of `keys`. Every key is compared, in constant time per key, so the
/// time taken does not tell how much of a key matched.
pub fn key_matches(keys: &[String], token: &[u8]) -> bool {
    key_index(keys, token).is_some()
}

/// The position of `token` among `keys`, comparing against every key in constant time per key.
pub fn key_index(keys: &[String], token: &[u8]) -> Option<usize> {
    let mut found = None;
    for (i, k) in keys.iter().enumerate() {
        if bool::from(k.as_bytes().ct_eq(token)) {
            found = Some(i);
        }
    }
    found
}

/// A short, stable identity of a valid client key (`key:` + 16 hex digits of its xxh3 hash):
/// what rate-limit buckets are keyed by, so the secret itself is never held in the limiter's
/// map, and a bucket exists only for a key that is configured.
pub fn key_identity(key: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = xxhash_rust::xxh3::xxh3_64(key);
    let mut id = String::with_capacity(20);
    id.push_str("key:");
    // By hand, not `format!`: this runs for every limited request.
    for shift in (0..16).rev() {
        id.push(char::from(HEX[((h >> (shift * 4)) & 0xf) as usize]));
    }
    id
}

/// Whether `path` is covered by a `PUBLIC_PATHS` entry: the same path, or, for an entry
/// ending in `/*`, any path below it (`/v1/models/*` covers `/v1/models/gpt-4o`).
pub fn path_matches(entry: &str, path: &str) -> bool {
    // Bytes, not `str` patterns: this runs for every request when auth is on.
    let e = entry.as_bytes();
    if e.len() >= 2 && e[e.len() - 2..] == *b"/*" {
        let prefix = &e[..e.len() - 1];
        return path.len() > prefix.len() && path.as_bytes().starts_with(prefix);
    }
    entry == path
}

/// Whether `path` needs no key: `PUBLIC_PATHS` when set, else the route table's public routes.
fn is_public(configured: Option<&[String]>, path: &str) -> bool {
    match configured {
        Some(list) => list.iter().any(|p| path_matches(p, path)),
        None => {
            static DEFAULTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
            DEFAULTS
                .get_or_init(crate::route_table::default_public_paths)
                .iter()
                .any(|p| path_matches(p, path))
        }
    }
}

/// The client's key: the token of an `Authorization: Bearer <token>` header (scheme
/// case-insensitive), else an `x-api-key` header (what the Anthropic SDKs and Claude Code send).
pub(crate) fn client_key(headers: &actix_web::http::header::HeaderMap) -> Option<&[u8]> {
    let bearer = headers
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| {
            let value = v.as_bytes();
            let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
            scheme
                .eq_ignore_ascii_case(b"bearer")
                .then(|| token.trim_ascii())
        });
    bearer.or_else(|| {
        headers
            .get("x-api-key")
            .map(|v| v.as_bytes().trim_ascii())
            .filter(|k| !k.is_empty())
    })
}

/// The client's key as the answer cache needs it: only when the cache is on and scoped per key
/// (`CACHE_SCOPE=per_key`), its one reader, so that other requests neither look it up again
/// nor copy it.
pub(crate) fn key_for_cache(
    config: &scira2api_core::Config,
    headers: &actix_web::http::header::HeaderMap,
) -> Option<String> {
    if !config.cache.enabled || config.cache.scope != scira2api_core::CacheScope::PerKey {
        return None;
    }
    client_key(headers)
        .and_then(|k| std::str::from_utf8(k).ok())
        .map(str::to_owned)
}

/// The client key a request was let in with: its position in `config.auth.api_keys`, for its
/// policy and its rate-limit bucket (kept in the request's extensions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientKey {
    pub(crate) index: usize,
}

/// Runs `next` for a request let in with key number `index`: the key noted in the request (for
/// the limiter, when there is one), and its policy (when it has one) in force while the
/// request is handled.
async fn call_as<B, F>(
    gw: &Gateway,
    req: ServiceRequest,
    next: impl FnOnce(ServiceRequest) -> F,
    index: usize,
) -> Result<ServiceResponse<B>, actix_web::Error>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    if gw.state().limiter().is_some() {
        req.extensions_mut().insert(ClientKey { index });
    }
    let Some(policy) = gw.state().key_policy(index).cloned() else {
        return next(req).await;
    };
    if let Some(name) = policy.name.clone() {
        if let Some(o) = scira2api_core::request_id::observation() {
            o.client(name);
        }
    }
    let scope = ClientScope::new(policy);
    let mut res = scira2api_core::client::scope(scope.clone(), next(req)).await?;
    if let Some(d) = scope.tokens() {
        crate::limit::add_token_headers(res.headers_mut(), &d);
    }
    Ok(res)
}

/// The auth step of [`crate::gate`]: lets public paths and preflights through to `next`,
/// otherwise demands a valid key (`route`: the request's entry in the route table).
pub(crate) async fn require_key<B, F>(
    gw: &Gateway,
    route: Option<&RouteSpec>,
    req: ServiceRequest,
    next: impl FnOnce(ServiceRequest) -> F,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    let config = gw.state().config();
    let preflight = req.method() == Method::OPTIONS;
    if let Some(admin) = config.auth.admin_key.as_deref() {
        if route.is_some_and(|r| r.admin) && !preflight {
            // The operator's routes take the admin key and nothing else, whatever
            // `PUBLIC_PATHS` and `APIKEY` say.
            let given = client_key(req.headers());
            if given.is_some_and(|k| bool::from(admin.as_bytes().ct_eq(k))) {
                return next(req).await.map(ServiceResponse::map_into_left_body);
            }
            let err = Error::InvalidApiKey(if given.is_none() {
                "This path needs the admin key (ADMIN_KEY). Send it as `Authorization: Bearer <key>`."
            } else {
                "Incorrect admin key provided."
            });
            let resp = error_for(req.path(), &err);
            return Ok(req.into_response(resp).map_into_right_body());
        }
    }
    if config.auth.api_keys.is_empty() || preflight {
        return next(req).await.map(ServiceResponse::map_into_left_body);
    }
    let found = client_key(req.headers()).map(|token| key_index(&config.auth.api_keys, token));
    if req.path() == crate::route_table::STATUS_PAGE
        || is_public(config.auth.public_paths.as_deref(), req.path())
    {
        // No key needed; a valid one still brings its policy (the model list it may see).
        return match found.flatten() {
            Some(i) => call_as(gw, req, next, i).await,
            None => next(req).await,
        }
        .map(ServiceResponse::map_into_left_body);
    }
    let err = match found {
        None => Error::InvalidApiKey(
            "You didn't provide an API key. Send it as `Authorization: Bearer <key>` or `x-api-key: <key>`.",
        ),
        Some(Some(i)) => {
            return call_as(gw, req, next, i)
                .await
                .map(ServiceResponse::map_into_left_body);
        }
        Some(None) => Error::InvalidApiKey("Incorrect API key provided."),
    };
    let resp = error_for(req.path(), &err);
    Ok(req.into_response(resp).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_against_every_key() {
        let keys = vec!["alpha".to_owned(), "beta".to_owned()];
        assert!(key_matches(&keys, b"beta"));
        assert!(key_matches(&keys, b"alpha"));
        assert!(!key_matches(&keys, b"alph"));
        assert!(!key_matches(&keys, b""));
        assert!(!key_matches(&[], b"x"));
        assert_eq!(key_index(&keys, b"beta"), Some(1));
    }

    #[test]
    fn public_path_entries() {
        assert!(path_matches("/v1/models", "/v1/models"));
        assert!(!path_matches("/v1/models", "/v1/models/x"));
        assert!(path_matches("/v1/models/*", "/v1/models/gpt-4o"));
        assert!(path_matches("/v1/models/*", "/v1/models/org/model"));
        assert!(!path_matches("/v1/models/*", "/v1/models/"));
        assert!(!path_matches("/v1/models/*", "/v1/modelsx"));
        assert!(!path_matches("/v1/models/*", "/v1/chat/completions"));
    }

    #[test]
    fn identities_are_short_and_never_the_key() {
        let id = key_identity(b"sk-very-secret");
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("key:") && !id.contains("secret"));
        assert_eq!(id, key_identity(b"sk-very-secret"));
        assert_eq!(
            id,
            format!("key:{:016x}", xxhash_rust::xxh3::xxh3_64(b"sk-very-secret"))
        );
        assert_ne!(id, key_identity(b"sk-other"));
    }
}
