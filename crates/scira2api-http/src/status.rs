//! `GET /status`: the operator's live status page, one self-contained HTML file embedded in the
//! binary (no build step, nothing fetched from elsewhere). It holds no data: it polls
//! `/metrics?history=1` (with the admin key the operator typed, kept in the tab's session
//! storage) and draws what it gets.

use actix_web::HttpResponse;
use actix_web::http::header;

/// The page.
const PAGE: &str = include_str!("status.html");

/// What the page may do: run its own inline script and style, talk to this origin only, never
/// be framed, never send a referrer.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// `GET /status`.
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(PAGE)
}
