//! The HTTP surface in process (`actix_web::test`), against the mock upstream: the route table,
//! auth, rate limits and CORS, without starting the server binary.

use actix_web::{App, http::StatusCode, test};
use scira2api_core::{Config, Gateway, GatewayState};
use scira2api_mock::MockServer;
use std::collections::HashMap;

fn config(mock: &MockServer, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = [
        ("BASE_URL", mock.url()),
        ("CACHE_ENABLED", "false".into()),
        ("RATE_LIMIT_ENABLED", "false".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_vars(vars).expect("config")
}

macro_rules! app {
    ($config:expr) => {{
        let state = GatewayState::new($config);
        test::init_service(App::new().configure(scira2api_http::configure(Gateway::new(state))))
            .await
    }};
}

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn chat(key: Option<&str>) -> test::TestRequest {
    let mut r = test::TestRequest::post()
        .uri("/v1/chat/completions")
        .insert_header(("content-type", "application/json"))
        .set_payload(CHAT);
    if let Some(k) = key {
        r = r.insert_header(("authorization", format!("Bearer {k}")));
    }
    r
}

#[actix_rt::test]
async fn the_route_table_serves_every_route_and_refuses_the_rest_in_json() {
    let mock = MockServer::start().unwrap();
    let app = app!(config(&mock, &[]));
    for (path, want) in [
        ("/health", StatusCode::OK),
        ("/v1/models", StatusCode::OK),
        ("/metrics", StatusCode::OK),
        ("/metrics/prometheus", StatusCode::OK),
        ("/nope", StatusCode::NOT_FOUND),
    ] {
        let resp = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        assert_eq!(resp.status(), want, "{path}");
    }
    let resp = test::call_service(&app, chat(None).to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("x-gateway-provider"));
    let resp = test::call_service(
        &app,
        test::TestRequest::delete()
            .uri("/v1/chat/completions")
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers().get("allow").unwrap(), "POST");
    let body: serde_json::Value = test::read_body_json(resp).await;
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[actix_rt::test]
async fn auth_guards_chat_but_not_the_public_routes() {
    let mock = MockServer::start().unwrap();
    let app = app!(config(&mock, &[("APIKEY", "sk-a,sk-b")]));
    let resp = test::call_service(&app, chat(None).to_request()).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = test::call_service(&app, chat(Some("sk-wrong")).to_request()).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = test::call_service(&app, chat(Some("sk-b")).to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    for path in ["/health", "/v1/models", "/v1/models/mock-gpt"] {
        let resp = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path} is public by default");
    }
    let resp =
        test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[actix_rt::test]
async fn the_limiter_counts_limited_routes_only() {
    let mock = MockServer::start().unwrap();
    let app = app!(config(
        &mock,
        &[
            ("RATE_LIMIT_ENABLED", "true"),
            ("BURST", "2"),
            ("REQUESTS_PER_SECOND", "0.01")
        ]
    ));
    for _ in 0..2 {
        let resp = test::call_service(&app, chat(None).to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()
                .contains_key("x-ratelimit-remaining-requests")
        );
    }
    let resp = test::call_service(&app, chat(None).to_request()).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    for _ in 0..5 {
        let resp =
            test::call_service(&app, test::TestRequest::get().uri("/health").to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK, "/health is never limited");
    }
}

#[actix_rt::test]
async fn cors_answers_preflights_before_auth_and_refuses_in_json() {
    let mock = MockServer::start().unwrap();
    let app = app!(config(
        &mock,
        &[("APIKEY", "sk-a"), ("CORS_ORIGINS", "https://ok.example")]
    ));
    let preflight = |origin: &str| {
        test::TestRequest::default()
            .method(actix_web::http::Method::OPTIONS)
            .uri("/v1/chat/completions")
            .insert_header(("origin", origin.to_owned()))
            .insert_header(("access-control-request-method", "POST"))
            .to_request()
    };
    let resp = test::call_service(&app, preflight("https://ok.example")).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(
        resp.headers().get("access-control-allow-origin").unwrap(),
        "https://ok.example"
    );
    let resp = test::call_service(&app, preflight("https://evil.example")).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = test::read_body_json(resp).await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("CORS"),
        "{body}"
    );
}

const VARY_CORS: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

#[actix_rt::test]
async fn a_request_without_origin_gets_vary_only_and_a_cross_origin_one_the_cors_headers() {
    let mock = MockServer::start().unwrap();
    let app = app!(config(
        &mock,
        &[("APIKEY", "sk-a"), ("CORS_ORIGINS", "https://ok.example")]
    ));
    // Same origin (an SDK, curl): no CORS headers, the same `Vary` actix-cors writes.
    let resp = test::call_service(&app, chat(Some("sk-a")).to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers().get("vary").unwrap(), VARY_CORS);
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
    assert!(!resp.headers().contains_key("access-control-expose-headers"));
    assert!(resp.headers().contains_key("x-request-id"));
    // Cross-origin: through actix-cors, and still behind auth.
    let resp = test::call_service(
        &app,
        chat(Some("sk-a"))
            .insert_header(("origin", "https://ok.example"))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get("access-control-allow-origin").unwrap(),
        "https://ok.example"
    );
    let exposed = resp.headers().get("access-control-expose-headers").unwrap();
    assert!(exposed.to_str().unwrap().contains("x-request-id"));
    assert_eq!(resp.headers().get("vary").unwrap(), VARY_CORS);
    assert!(resp.headers().contains_key("x-request-id"));
    let resp = test::call_service(
        &app,
        chat(None)
            .insert_header(("origin", "https://ok.example"))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers().get("access-control-allow-origin").unwrap(),
        "https://ok.example",
        "a browser can read the 401"
    );
    let body: serde_json::Value = test::read_body_json(resp).await;
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    // A public route without `Origin` gets the same `Vary`.
    let resp = test::call_service(&app, test::TestRequest::get().uri("/health").to_request()).await;
    assert_eq!(resp.headers().get("vary").unwrap(), VARY_CORS);
}

#[actix_rt::test]
async fn keys_with_their_own_buckets_are_limited_apart_cross_origin_or_not() {
    let mock = MockServer::start().unwrap();
    let app = app!(config(
        &mock,
        &[
            ("APIKEY", "sk-a,sk-b"),
            ("RATE_LIMIT_ENABLED", "true"),
            ("RATE_LIMIT_SCOPE", "key"),
            ("BURST", "1"),
            ("REQUESTS_PER_SECOND", "0.01"),
        ]
    ));
    let resp = test::call_service(&app, chat(Some("sk-a")).to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = test::call_service(
        &app,
        chat(Some("sk-a"))
            .insert_header(("origin", "https://any.example"))
            .to_request(),
    )
    .await;
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "sk-a's bucket is empty"
    );
    assert!(resp.headers().contains_key("access-control-allow-origin"));
    let resp = test::call_service(&app, chat(Some("sk-b")).to_request()).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "sk-b has a bucket of its own"
    );
    // A wrong key is refused by auth before it can take a token from anyone's bucket.
    let resp = test::call_service(&app, chat(Some("sk-x")).to_request()).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = test::call_service(&app, chat(Some("sk-b")).to_request()).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
}
