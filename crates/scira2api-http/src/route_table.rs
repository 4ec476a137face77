//! The one route table: every route the gateway serves, with its method, metric label, whether
//! it is public by default and whether it is rate limited. Registration, metric labels,
//! rate-limit exemptions and the default `PUBLIC_PATHS` all read it, so a new endpoint is one
//! line here.

use crate::routes;
use actix_web::{Resource, web};

/// The API family of a route: whose wire format its answers, errors included, use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// OpenAI's (`{"error":{"message","type","param","code"}}`).
    OpenAi,
    /// Anthropic's (`{"type":"error","error":{"type","message"}}`, a `request-id` header).
    Anthropic,
}

/// One route.
pub struct RouteSpec {
    /// The actix path pattern (`/v1/models/{id:.+}`).
    pub path: &'static str,
    /// The metric label (a fixed string, whatever the client sent).
    pub label: &'static str,
    /// The method it serves, for `Allow` on a 405.
    pub allow: &'static str,
    /// Adds the route's handlers (one per method) to its resource.
    pub route: fn(Resource) -> Resource,
    /// Reachable without a key unless `PUBLIC_PATHS` says otherwise.
    pub public: bool,
    /// Counted against the client's rate limit.
    pub limited: bool,
    /// The operator's: when `ADMIN_KEY` is set, it needs that key (and no other).
    pub admin: bool,
    /// Whose wire format it answers in.
    pub family: Family,
}

/// The chat route (the hot one, first: the router tries resources in order).
pub const CHAT: &str = scira2api_core::metrics::CHAT_ROUTE;

/// The metric label of any path that is not a route.
pub const UNMATCHED: &str = "unmatched";

/// The status page: a static shell holding no data (it asks for the key and reads the
/// metrics, which are `admin`), so it is served without a key whatever `PUBLIC_PATHS` says —
/// as a login page is.
pub const STATUS_PAGE: &str = "/status";

/// Every route, the hot one first.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        path: CHAT,
        label: CHAT,
        allow: "POST",
        route: |r| r.route(web::post().to(routes::chat)),
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/responses",
        label: "/v1/responses",
        allow: "POST",
        route: |r| r.route(web::post().to(crate::responses::create)),
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    // Before `/v1/responses/{id}`: the first matching entry labels a path.
    RouteSpec {
        path: "/v1/responses/input_tokens",
        label: "/v1/responses/input_tokens",
        allow: "POST",
        route: |r| r.route(web::post().to(crate::responses::input_tokens)),
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/responses/{id}",
        label: "/v1/responses/{id}",
        allow: "GET, DELETE",
        route: |r| {
            r.route(web::get().to(crate::responses::get))
                .route(web::delete().to(crate::responses::delete))
        },
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/messages",
        label: "/v1/messages",
        allow: "POST",
        route: |r| r.route(web::post().to(crate::messages::create)),
        public: false,
        limited: true,
        admin: false,
        family: Family::Anthropic,
    },
    RouteSpec {
        path: "/v1/messages/count_tokens",
        label: "/v1/messages/count_tokens",
        allow: "POST",
        route: |r| r.route(web::post().to(crate::messages::count_tokens)),
        public: false,
        limited: true,
        admin: false,
        family: Family::Anthropic,
    },
    RouteSpec {
        path: "/v1/embeddings",
        label: "/v1/embeddings",
        allow: "POST",
        route: |r| r.route(web::post().to(crate::forward::embeddings)),
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/completions",
        label: "/v1/completions",
        allow: "POST",
        route: |r| r.route(web::post().to(crate::forward::completions)),
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/moderations",
        label: "/v1/moderations",
        allow: "POST",
        route: |r| r.route(web::post().to(crate::forward::moderations)),
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/images/generations",
        label: "/v1/images/generations",
        allow: "POST",
        route: |r| r.route(web::post().to(crate::forward::image_generations)),
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/audio/speech",
        label: "/v1/audio/speech",
        allow: "POST",
        route: |r| r.route(web::post().to(crate::forward::speech)),
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/audio/transcriptions",
        label: "/v1/audio/transcriptions",
        allow: "POST",
        route: |r| r.route(web::post().to(crate::forward::transcriptions)),
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/audio/translations",
        label: "/v1/audio/translations",
        allow: "POST",
        route: |r| r.route(web::post().to(crate::forward::translations)),
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/images/edits",
        label: "/v1/images/edits",
        allow: "POST",
        route: |r| r.route(web::post().to(crate::forward::image_edits)),
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/files",
        label: "/v1/files",
        allow: "GET, POST",
        route: |r| {
            r.route(web::get().to(crate::forward::files))
                .route(web::post().to(crate::forward::files))
        },
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/files/{id}/content",
        label: "/v1/files/{id}/content",
        allow: "GET",
        route: |r| r.route(web::get().to(crate::forward::files)),
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/files/{id}",
        label: "/v1/files/{id}",
        allow: "GET, DELETE",
        route: |r| {
            r.route(web::get().to(crate::forward::files))
                .route(web::delete().to(crate::forward::files))
        },
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/batches",
        label: "/v1/batches",
        allow: "GET, POST",
        route: |r| {
            r.route(web::get().to(crate::forward::files))
                .route(web::post().to(crate::forward::files))
        },
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/batches/{id}/cancel",
        label: "/v1/batches/{id}/cancel",
        allow: "POST",
        route: |r| r.route(web::post().to(crate::forward::files)),
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/batches/{id}",
        label: "/v1/batches/{id}",
        allow: "GET",
        route: |r| r.route(web::get().to(crate::forward::files)),
        public: false,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/health",
        label: "/health",
        allow: "GET",
        route: |r| r.route(web::get().to(routes::health)),
        public: true,
        limited: false,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/metrics",
        label: "/metrics",
        allow: "GET",
        route: |r| r.route(web::get().to(routes::metrics)),
        public: false,
        limited: false,
        admin: true,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/metrics/prometheus",
        label: "/metrics/prometheus",
        allow: "GET",
        route: |r| r.route(web::get().to(routes::prometheus)),
        public: false,
        limited: false,
        admin: true,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: STATUS_PAGE,
        label: STATUS_PAGE,
        allow: "GET",
        route: |r| r.route(web::get().to(crate::status::page)),
        // Always reachable (see `STATUS_PAGE`), whatever `PUBLIC_PATHS` says.
        public: false,
        limited: false,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/models",
        label: "/v1/models",
        allow: "GET",
        route: |r| r.route(web::get().to(routes::models)),
        public: true,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
    RouteSpec {
        path: "/v1/models/{id:.+}",
        label: "/v1/models/{id}",
        allow: "GET",
        route: |r| r.route(web::get().to(routes::model)),
        public: true,
        limited: true,
        admin: false,
        family: Family::OpenAi,
    },
];

/// Whether an actix pattern matches a request path: literal segments, and a trailing
/// `{name...}` parameter matching the rest (at least one character).
fn matches(pattern: &str, path: &str) -> bool {
    match memchr_brace(pattern.as_bytes()) {
        None => pattern == path,
        Some(i) => path.len() > i && path.as_bytes().starts_with(&pattern.as_bytes()[..i]),
    }
}

/// Where a pattern's parameter starts (byte search: this runs for every request).
fn memchr_brace(p: &[u8]) -> Option<usize> {
    p.iter().position(|&b| b == b'{')
}

/// The route a path belongs to.
pub fn find(path: &str) -> Option<&'static RouteSpec> {
    ROUTES.iter().find(|r| matches(r.path, path))
}

/// The metric label of a path (`unmatched` for any path that is not a route).
pub fn label(path: &str) -> &'static str {
    find(path).map_or(UNMATCHED, |r| r.label)
}

/// The API family of a path (OpenAI's for any path that is not a route).
pub fn family(path: &str) -> Family {
    find(path).map_or(Family::OpenAi, |r| r.family)
}

/// The `PUBLIC_PATHS` entries when the setting is unset: each public route, a parameter
/// pattern as a `/*` prefix.
pub fn default_public_paths() -> Vec<String> {
    ROUTES
        .iter()
        .filter(|r| r.public)
        .map(|r| match r.path.find('{') {
            Some(i) => format!("{}*", &r.path[..i]),
            None => r.path.to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_limits_and_public_paths_come_from_the_table() {
        assert_eq!(label("/v1/chat/completions"), CHAT);
        assert_eq!(label("/v1/models/gpt-4o"), "/v1/models/{id}");
        assert_eq!(label("/v1/models/"), "unmatched");
        assert_eq!(label("/admin"), "unmatched");
        assert_eq!(label("/v1/responses/resp_1"), "/v1/responses/{id}");
        assert_eq!(
            label("/v1/responses/input_tokens"),
            "/v1/responses/input_tokens"
        );
        assert!(!find("/metrics").unwrap().limited);
        assert!(find("/metrics").unwrap().admin && find("/metrics/prometheus").unwrap().admin);
        assert!(!find("/status").unwrap().admin && !find("/v1/models").unwrap().admin);
        assert!(find("/v1/models").unwrap().limited);
        assert_eq!(
            default_public_paths(),
            ["/health", "/v1/models", "/v1/models/*"]
        );
    }
}
