//! Embedding scira2api in your own actix-web service.
//!
//! Your routes and the gateway's OpenAI routes share one server; a handler of yours can also
//! call the [`Gateway`] directly. Run it against the built-in mock upstream:
//!
//! ```text
//! cargo run -p scira2api-http --example embed
//! curl localhost:8090/hello
//! curl localhost:8090/v1/chat/completions -H 'content-type: application/json' \
//!      -d '{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}'
//! ```

use actix_web::{App, HttpResponse, HttpServer, web};
use scira2api_core::{ChatContext, ChatReply, ChatRequest, Config, Gateway, GatewayState};
use std::collections::HashMap;

/// A route of your own that uses the gateway as a library: it asks one fixed question.
async fn ask(gw: web::Data<Gateway>) -> HttpResponse {
    let body = r#"{"model":"mock-gpt","messages":[{"role":"user","content":"What is 2+2?"}]}"#;
    let req = match ChatRequest::parse(body.into()) {
        Ok(r) => r,
        Err(e) => return scira2api_http::error_response(&e),
    };
    match gw.chat(&req, ChatContext::default()).await.map(|o| o.reply) {
        Ok(ChatReply::Json(answer)) => HttpResponse::Ok()
            .content_type("application/json")
            .body(answer),
        Ok(ChatReply::Stream(_)) => HttpResponse::InternalServerError().finish(),
        Err(e) => scira2api_http::error_response(&e),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    // The example brings its own upstream so it runs offline; point BASE_URL at a real one instead.
    let mock = scira2api_mock::MockServer::start()?;
    let vars = HashMap::from([("BASE_URL".to_owned(), mock.url())]);
    let config = Config::from_vars(vars).map_err(std::io::Error::other)?;
    let state = GatewayState::new(config);
    HttpServer::new(move || {
        let gateway = Gateway::new(state.clone());
        App::new()
            .route(
                "/hello",
                web::get().to(|| async { "hello from my service" }),
            )
            .service(
                web::resource("/ask")
                    .app_data(web::Data::new(Gateway::new(state.clone())))
                    .route(web::get().to(ask)),
            )
            .configure(scira2api_http::configure(gateway))
    })
    .on_connect(scira2api_http::on_connect)
    .bind(("127.0.0.1", 8090))?
    .run()
    .await
}
