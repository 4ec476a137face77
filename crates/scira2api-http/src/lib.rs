//! The actix-web surface of scira2api: OpenAI routes, API-key auth, CORS, OpenAI error bodies
//! and the SSE writer.
//!
//! Mount everything into an actix `App` with [`configure`], giving it a [`Gateway`] built inside
//! the worker factory (the gateway's HTTP client is per worker):
//!
//! ```no_run
//! use actix_web::{App, HttpServer};
//! use scira2api_core::{Config, Gateway, GatewayState};
//! # async fn run() -> std::io::Result<()> {
//! let state = GatewayState::new(Config::from_env().expect("settings"));
//! HttpServer::new(move || App::new().configure(scira2api_http::configure(Gateway::new(state.clone()))))
//!     .on_connect(scira2api_http::on_connect)
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await
//! # }
//! ```

#![deny(missing_docs)]

mod auth;
mod conn;
mod cors;
mod endpoint;
mod error;
mod forward;
mod gate;
mod limit;
mod messages;
mod observe;
mod responses;
pub mod route_table;
mod routes;
mod sse;
mod status;

pub use auth::key_matches;
pub use conn::{ConnWatch, on_connect};
pub use cors::{EXPOSED_HEADERS, cors};
pub use error::{AnthropicError, ApiError, anthropic_error_response, error_response};
pub use sse::{KEEPALIVE, SseBody};

use actix_web::web;
use scira2api_core::Gateway;

/// An `HttpServer::on_connect` callback that turns Nagle's algorithm off on every accepted
/// connection. actix-web leaves it on, which holds small writes — a streamed event — back until
/// the client's delayed ACK, up to 40 ms. Install it on any server that serves the gateway:
/// `HttpServer::new(...).on_connect(scira2api_http::tcp_nodelay)` (or use [`on_connect`], which
/// also watches for clients that leave).
pub fn tcp_nodelay(conn: &dyn std::any::Any, _ext: &mut actix_web::dev::Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let _ = tcp.set_nodelay(true);
    }
}

/// `path` served by `route`; any other method gets a 405 in OpenAI form with `Allow: allow`.
fn resource(r: &route_table::RouteSpec) -> actix_web::Resource {
    (r.route)(web::resource(r.path)).default_service(web::to(routes::method_not_allowed(r.allow)))
}

/// Registers the gateway's routes behind its one middleware: observation, then CORS, auth and
/// rate limiting, in that order (CORS first, so preflights never need a key; the limiter last,
/// so it can tell clients apart by key).
pub fn configure(gateway: Gateway) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let gateway = web::Data::new(gateway);
        let cors = cors(gateway.state().config());
        let mut scope = web::scope("").wrap(gate::Gate::new(gateway.clone(), cors));
        for r in route_table::ROUTES {
            scope = scope.service(resource(r));
        }
        cfg.app_data(gateway)
            .service(scope.default_service(web::to(routes::not_found)));
    }
}

#[cfg(test)]
mod tests {
    #[actix_rt::test]
    async fn nodelay_is_set_on_accepted_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let stream = actix_web::rt::net::TcpStream::from_std(server).unwrap();
        assert!(!stream.nodelay().unwrap(), "the OS default keeps Nagle on");
        super::tcp_nodelay(&stream, &mut actix_web::dev::Extensions::new());
        assert!(stream.nodelay().unwrap());
    }
}
