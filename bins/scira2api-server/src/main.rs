//! `scira2api-server`: the gateway as a process.
//!
//! Reads the settings (environment + `.env`), sets up logging, serves the OpenAI-compatible API
//! with actix-web and shuts down gracefully on SIGTERM/SIGINT. `--demo` starts the mock upstream
//! in-process and points the gateway at it, so everything works offline.

use actix_web::{App, HttpServer};
use log::{error, info, warn};
use scira2api_core::{Config, Gateway, GatewayState};
use std::io::Write;
use std::process::ExitCode;

const USAGE: &str = "usage: scira2api-server [--demo] [--help] [--version]

Settings come from the environment and from .env in the working directory (see .env.example).
  --demo     start a mock upstream in-process and use it (works offline)";

fn main() -> ExitCode {
    let mut demo = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--demo" => demo = true,
            "--version" | "-V" => {
                println!("scira2api-server {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("scira2api: unknown argument `{other}`\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    // The demo's mock lives as long as the server.
    let mock = if demo {
        match scira2api_mock::MockServer::start() {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("scira2api: cannot start the demo mock upstream: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    let config = match &mock {
        Some(m) => {
            let url = m.url();
            Config::from_env_layered(
                &[
                    (
                        "MODEL_MAPPINGS",
                        "gpt-4o:mock-gpt,gpt-4o-mini:mock-gpt-mini",
                    ),
                    ("PORT", "8080"),
                ],
                &[("BASE_URL", url.as_str()), ("UPSTREAM_API_KEY", "")],
            )
        }
        None => Config::from_env(),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scira2api: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&config.log_level))
        .format(|buf, record| {
            // Every line written while a request is handled carries its id.
            let id = scira2api_core::request_id::current();
            let id = id.as_deref().map(|i| format!(" {i}")).unwrap_or_default();
            let ts = buf.timestamp();
            writeln!(
                buf,
                "[{ts} {} {}{id}] {}",
                record.level(),
                record.target(),
                record.args()
            )
        })
        .init();
    for pair in &config.bad_mapping_pairs {
        warn!(
            "MODEL_MAPPINGS: cannot read pair `{pair}` (expected external:internal); using the built-in default table"
        );
    }
    match serve(config, demo) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

#[actix_web::main]
async fn serve(config: Config, demo: bool) -> std::io::Result<()> {
    let addr = (config.host.clone(), config.port);
    let shutdown = config.shutdown_timeout.as_secs().max(1);
    let workers = config.workers;
    let summary = config.to_string();
    let state = GatewayState::new(config);
    let server = HttpServer::new(move || {
        App::new().configure(scira2api_http::configure(Gateway::new(state.clone())))
    })
    .on_connect(scira2api_http::tcp_nodelay)
    .workers(workers)
    .shutdown_timeout(shutdown)
    .bind(&addr)
    .map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {}:{}: {e}", addr.0, addr.1),
        )
    })?;
    let addrs: Vec<String> = server.addrs().iter().map(|a| a.to_string()).collect();
    info!(
        "scira2api {} listening on {}{} — {summary}",
        env!("CARGO_PKG_VERSION"),
        addrs.join(","),
        if demo {
            " (demo: mock upstream in-process)"
        } else {
            ""
        }
    );
    server.run().await?;
    info!("scira2api stopped");
    Ok(())
}
