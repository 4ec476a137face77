//! `scira2api-mock`: the mock upstream as a standalone process (benchmarks, manual testing).
//!
//! ```text
//! scira2api-mock [--addr 127.0.0.1:9000] [--workers 1] [--chunks 4] [--chunk-delay-ms 0]
//!                [--latency-ms 0] [--scira-format v6] [--scira-body FILE]
//! ```
//! Prints `listening on http://ADDR` once ready, then serves until killed.

use scira2api_mock::{MockOptions, MockServer};
use std::time::Duration;

fn main() {
    if let Err(e) = run() {
        eprintln!("scira2api-mock: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut addr = "127.0.0.1:9000".to_owned();
    let mut workers = 1usize;
    let mut opts = MockOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: `{v}` is not a whole number"))
        };
        match flag.as_str() {
            "--addr" => addr = value()?,
            "--workers" => workers = num(value()?)? as usize,
            "--chunks" => opts.chunks = num(value()?)? as usize,
            "--chunk-delay-ms" => opts.chunk_delay = Duration::from_millis(num(value()?)?),
            "--latency-ms" => opts.latency = Duration::from_millis(num(value()?)?),
            "--scira-format" => opts.scira_format = value()?.parse()?,
            "--scira-body" => {
                let path = value()?;
                let body = std::fs::read(&path).map_err(|e| format!("--scira-body {path}: {e}"))?;
                opts.scira_body = Some(body.into());
            }
            "-h" | "--help" => {
                println!(
                    "usage: scira2api-mock [--addr A] [--workers N] [--chunks N] [--chunk-delay-ms N] [--latency-ms N] [--scira-format v4|v5|v6] [--scira-body FILE]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    let server = MockServer::start_on(&addr, opts, workers)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("listening on {}", server.url());
    loop {
        std::thread::park();
    }
}
