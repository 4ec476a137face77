//! `scira2api-bare --addr HOST:PORT --upstream http://HOST:PORT`: the floor of the gateway's
//! HTTP stack for the benchmark — actix-web in, awc out, one worker, pooled upstream
//! connections, Nagle off, nothing else: every request's body is sent to the same path of the
//! upstream and its answer (status, content type, body) is passed back. What the gateway costs
//! beyond this is its own code.

use actix_rt::net::TcpStream;
use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use awc::http::Uri;
use futures_util::future::LocalBoxFuture;
use std::time::Duration;

/// The same allocator as the gateway's binary, so the floor is built the same way.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Plain TCP to the upstream with Nagle off, as the gateway's own connector does.
#[derive(Clone)]
struct NoDelay;

impl Service<ConnectInfo<Uri>> for NoDelay {
    type Response = Connection<Uri, TcpStream>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_service::always_ready!();

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let (host, port, uri) = (req.hostname().to_owned(), req.port(), req.request().clone());
        Box::pin(async move {
            let stream = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(ConnectError::Io)?;
            let _ = stream.set_nodelay(true);
            Ok(Connection::new(uri, stream))
        })
    }
}

struct Upstream {
    client: awc::Client,
    base: String,
}

async fn forward(req: HttpRequest, body: web::Bytes, up: web::Data<Upstream>) -> HttpResponse {
    let url = format!("{}{}", up.base, req.path());
    let sent = up
        .client
        .request(req.method().clone(), url)
        .insert_header(("content-type", "application/json"))
        .send_body(body)
        .await;
    match sent {
        Ok(mut resp) => {
            let status = resp.status();
            let ct = resp.headers().get("content-type").cloned();
            match resp.body().limit(16 << 20).await {
                Ok(bytes) => {
                    let mut out = HttpResponse::build(status);
                    if let Some(ct) = ct {
                        out.insert_header(("content-type", ct));
                    }
                    out.body(bytes)
                }
                Err(e) => HttpResponse::BadGateway().body(e.to_string()),
            }
        }
        Err(e) => HttpResponse::BadGateway().body(e.to_string()),
    }
}

fn main() -> std::io::Result<()> {
    let mut addr = "127.0.0.1:19110".to_owned();
    let mut upstream = "http://127.0.0.1:19107".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => addr = args.next().unwrap_or(addr),
            "--upstream" => upstream = args.next().unwrap_or(upstream),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    actix_rt::System::new().block_on(async move {
        HttpServer::new(move || {
            // As the gateway builds its client: pooled, kept alive, one per worker.
            let connector = awc::Connector::new()
                .connector(NoDelay)
                .timeout(Duration::from_secs(10))
                .limit(2048)
                .conn_keep_alive(Duration::from_secs(90))
                .conn_lifetime(Duration::from_secs(300));
            let client = awc::Client::builder()
                .connector(connector)
                .timeout(Duration::from_secs(600))
                .finish();
            App::new()
                .app_data(web::Data::new(Upstream {
                    client,
                    base: upstream.clone(),
                }))
                .default_service(web::to(forward))
        })
        .on_connect(|conn, _| {
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        .workers(1)
        .bind(&addr)?
        .run()
        .await
    })
}
