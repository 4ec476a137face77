//! `scira2api-server`: the gateway as a process.
//!
//! Reads the settings (environment + `.env`), sets up logging, serves the OpenAI-compatible API
//! with actix-web and shuts down gracefully on SIGTERM/SIGINT (SIGHUP is logged and ignored). `--demo` starts the mock upstream
//! in-process and points the gateway at it, so everything works offline.

use actix_web::{App, HttpServer};
use log::{error, info, warn};
use scira2api_core::{Config, Gateway, GatewayState};
use std::io::Write;
use std::process::ExitCode;

/// mimalloc instead of the system allocator: an answer's path allocates and frees many small
/// buffers (headers, JSON spans, futures), and glibc's malloc was about a tenth of the user CPU
/// per proxied request (measured in docs/benchmarks.md, "Against a fast upstream").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    #[cfg(feature = "demo")]
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
    #[cfg(feature = "demo")]
    let config = match &mock {
        Some(m) => {
            let url = m.url();
            let overrides = [
                ("BASE_URL", url.as_str()),
                // Never a real key to the mock; a placeholder, as a keyed upstream needs one.
                ("UPSTREAM_API_KEY", "mock-upstream-key"),
            ];
            // The familiar names, mapped to models the chosen provider has.
            let demo = |provider| {
                let mappings = scira2api_core::demo_model_mappings(provider);
                Config::from_env_layered(
                    &[("MODEL_MAPPINGS", mappings), ("PORT", "8080")],
                    &overrides,
                )
            };
            demo(scira2api_core::ProviderKind::OpenAi).and_then(|c| match c.upstream.provider {
                scira2api_core::ProviderKind::OpenAi => Ok(c),
                other => demo(other),
            })
        }
        None => Config::from_env(),
    };
    #[cfg(not(feature = "demo"))]
    let config = if demo {
        eprintln!("scira2api: --demo needs a build with the `demo` feature (the default)");
        return ExitCode::from(2);
    } else {
        Config::from_env()
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scira2api: {e}");
            return ExitCode::from(2);
        }
    };
    // An unreadable RUST_LOG would silently turn every line off: say so, and use LOG_LEVEL.
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let bad_rust_log = rust_log.as_deref().filter(|v| !rust_log_is_valid(v));
    let mut env = env_logger::Env::default().default_filter_or(&config.server.log_level);
    if bad_rust_log.is_some() {
        env = env_logger::Env::new()
            .filter("SCIRA2API_UNUSED_LOG_FILTER")
            .default_filter_or(&config.server.log_level);
    }
    env_logger::Builder::from_env(env)
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
    if let Some(v) = bad_rust_log {
        warn!(
            "RUST_LOG=`{v}` cannot be read (expected e.g. `info` or `scira2api=debug,actix_web=warn`); using LOG_LEVEL={} instead",
            config.server.log_level
        );
    }
    if let (Some(path), Some(file)) = (&config.config_file, &config.file) {
        if !file.ignored.is_empty() {
            warn!(
                "CONFIG_FILE {}: these keys are not used by scira2api and have no effect: {}",
                path.display(),
                file.ignored.join(", ")
            );
        }
    }
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

/// Whether `RUST_LOG` is a filter env_logger understands: comma-separated `level`,
/// `target` or `target=level` directives, with an optional `/regex` at the end.
fn rust_log_is_valid(v: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let directives = v.split('/').next().unwrap_or("");
    directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .all(|d| {
            let is_level = |l: &str| LEVELS.iter().any(|x| x.eq_ignore_ascii_case(l.trim()));
            let is_target = |t: &str| {
                !t.is_empty() && t.chars().all(|c| c.is_alphanumeric() || "_:-.".contains(c))
            };
            match d.split_once('=') {
                Some((target, level)) => {
                    is_target(target.trim()) && (level.trim().is_empty() || is_level(level))
                }
                None => is_level(d) || is_target(d),
            }
        })
}

/// SIGTERM and SIGINT start a graceful shutdown (new connections refused, requests and
/// streams in flight finish within `SHUTDOWN_TIMEOUT`; streams still open just before it ends
/// get an error event and `[DONE]`); SIGHUP is logged and ignored. A second SIGTERM/SIGINT
/// stops at once.
type Signals = (
    actix_rt::signal::unix::Signal,
    actix_rt::signal::unix::Signal,
    actix_rt::signal::unix::Signal,
);

/// Installs the handlers (before the server says it is listening, so that no signal sent
/// after that line can find the default action, which would kill the process).
fn install_signals() -> std::io::Result<Signals> {
    use actix_rt::signal::unix::{SignalKind, signal};
    Ok((
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
        signal(SignalKind::hangup())?,
    ))
}

async fn handle_signals(
    (mut term, mut int, mut hup): Signals,
    server: actix_web::dev::ServerHandle,
    state: std::sync::Arc<GatewayState>,
    grace: std::time::Duration,
) {
    let mut stopping = false;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => {
                info!("SIGHUP received: ignored (settings are read at startup; restart to change them)");
                continue;
            }
        };
        if stopping {
            warn!("{name} received again: stopping now");
            server.stop(false).await;
            return;
        }
        stopping = true;
        info!(
            "{name} received: graceful shutdown, finishing requests in flight (at most {})",
            humantime_secs(grace)
        );
        // actix-server's own graceful stop trusts a per-worker connection count that was seen to
        // let a busy worker exit (about one stop in six under load dropped a request in flight):
        // the gateway drains by its own count of work in progress instead.
        let (handle, st) = (server.clone(), state.clone());
        actix_rt::spawn(async move { drain(handle, st, grace).await });
    }
}

/// Stops accepting, lets the work in progress finish (streams still open just before the
/// deadline are ended with an error event and `[DONE]`), then closes what is left: idle
/// keep-alive connections.
async fn drain(
    server: actix_web::dev::ServerHandle,
    state: std::sync::Arc<GatewayState>,
    grace: std::time::Duration,
) {
    use std::time::{Duration, Instant};
    server.pause().await;
    state.activity().start_draining();
    let started = Instant::now();
    let cut_at = grace.saturating_sub(Duration::from_millis(500));
    let mut cut = false;
    loop {
        let active = state.activity().active();
        if active == 0 {
            info!("drained in {}ms; stopping", started.elapsed().as_millis());
            break;
        }
        let spent = started.elapsed();
        if !cut && spent >= cut_at {
            cut = true;
            warn!("grace period nearly over: ending {active} request(s) and stream(s) still open");
            state.cut_streams();
        }
        if spent >= grace {
            warn!("grace period over with {active} request(s) still in progress");
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    // The last responses are being flushed by now; give their bytes a moment on the wire.
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    server.stop(false).await;
}

fn humantime_secs(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

#[actix_web::main]
async fn serve(config: Config, demo: bool) -> std::io::Result<()> {
    let addr = (config.server.host.clone(), config.server.port);
    let grace = config
        .server
        .shutdown_timeout
        .max(std::time::Duration::from_secs(1));
    let shutdown = grace.as_secs().max(1);
    let workers = config.server.workers;
    let per_worker = config.server.max_connections.div_ceil(workers).max(1);
    let summary = config.to_string();
    let signals = install_signals().map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot install signal handlers: {e}"))
    })?;
    let state = GatewayState::new(config);
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new().configure(scira2api_http::configure(Gateway::new(app_state.clone())))
    })
    .on_connect(scira2api_http::on_connect)
    .workers(workers)
    .max_connections(per_worker)
    .disable_signals()
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
    let server = server.run();
    actix_rt::spawn(handle_signals(signals, server.handle(), state, grace));
    server.await?;
    info!("scira2api stopped");
    Ok(())
}
