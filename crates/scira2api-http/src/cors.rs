//! CORS: actix-cors for what a browser sends cross-origin, and only `Vary` for the rest.
//!
//! A browser sends `Origin` on every cross-origin request and on every preflight; a request
//! without it (an SDK, curl, a server-side client) is not a CORS request, and the CORS headers
//! of its answer — the allowed origin and the ~300-byte list of exposed headers — would be
//! read by nobody. [`CrossOrigin`] passes such a request straight on and gives its answer the
//! same `Vary` that actix-cors writes, so a shared cache still keeps the answers apart by
//! origin. `OPTIONS` always goes through actix-cors, so preflight handling is actix-cors's own.

use actix_cors::Cors;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use futures_util::future::LocalBoxFuture;
use scira2api_core::Config;
use std::rc::Rc;

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

/// Middleware: [`Cors`] for requests with an `Origin` header and for `OPTIONS`; every other
/// request goes straight to the service below, its answer with `Vary` only (see the module).
pub(crate) struct CrossOrigin(Cors);

impl CrossOrigin {
    pub(crate) fn new(cors: Cors) -> Self {
        CrossOrigin(cors)
    }
}

impl<S, B> Transform<S, ServiceRequest> for CrossOrigin
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type InitError = ();
    type Transform = CrossOriginService<S>;
    type Future = LocalBoxFuture<'static, Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let inner = Rc::new(service);
        let cors = self.0.new_transform(Rc::clone(&inner));
        Box::pin(async move {
            Ok(CrossOriginService {
                cors: cors.await?,
                inner,
            })
        })
    }
}

/// The service [`CrossOrigin`] makes: one service below, reached through actix-cors or not.
pub(crate) struct CrossOriginService<S> {
    cors: actix_cors::CorsMiddleware<Rc<S>>,
    inner: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for CrossOriginService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(inner);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if req.headers().contains_key(header::ORIGIN) || req.method() == Method::OPTIONS {
            return self.cors.call(req);
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            add_vary(res.headers_mut());
            Ok(res.map_into_left_body())
        })
    }
}

/// Adds the CORS request headers to the answer's `Vary`, after any it already has.
fn add_vary(headers: &mut header::HeaderMap) {
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
    use actix_web::{App, HttpResponse, test, web};

    /// A one-route app behind [`CrossOrigin`]; its answer has `Vary: vary` when given.
    macro_rules! app {
        ($vary:expr) => {{
            let vary: Option<&'static str> = $vary;
            let cors = Cors::default()
                .allow_any_origin()
                .allowed_methods(["GET", "POST"])
                .expose_headers(EXPOSED_HEADERS);
            test::init_service(App::new().wrap(CrossOrigin::new(cors)).route(
                "/",
                web::get().to(move || async move {
                    let mut r = HttpResponse::Ok();
                    if let Some(v) = vary {
                        r.insert_header((header::VARY, v));
                    }
                    r.finish()
                }),
            ))
            .await
        }};
    }

    fn get(res: &ServiceResponse<impl MessageBody>, name: header::HeaderName) -> Option<&str> {
        res.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[actix_web::test]
    async fn same_origin_answers_vary_only() {
        let app = app!(None);
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert!(res.status().is_success());
        assert_eq!(get(&res, header::VARY), Some(VARY_CORS));
        assert_eq!(get(&res, header::ACCESS_CONTROL_EXPOSE_HEADERS), None);
        assert_eq!(get(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
        let app = app!(Some("Accept"));
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(
            get(&res, header::VARY),
            Some("Accept, Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
        );
    }

    #[actix_web::test]
    async fn cross_origin_and_preflight_go_through_actix_cors() {
        let app = app!(None);
        let req = test::TestRequest::get()
            .uri("/")
            .insert_header((header::ORIGIN, "https://chat.example"))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(
            get(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://chat.example")
        );
        let exposed = get(&res, header::ACCESS_CONTROL_EXPOSE_HEADERS).unwrap_or_default();
        assert!(exposed.contains("x-request-id"), "{exposed}");
        assert_eq!(get(&res, header::VARY), Some(VARY_CORS));
        let preflight = test::TestRequest::default()
            .method(Method::OPTIONS)
            .uri("/")
            .insert_header((header::ORIGIN, "https://chat.example"))
            .insert_header((header::ACCESS_CONTROL_REQUEST_METHOD, "POST"))
            .to_request();
        let res = test::call_service(&app, preflight).await;
        assert!(res.status().is_success());
        assert!(
            get(&res, header::ACCESS_CONTROL_ALLOW_METHODS).is_some_and(|m| m.contains("POST"))
        );
    }
}
