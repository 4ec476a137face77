//! `scira2api-loadgen`: opens many concurrent streaming chat requests and measures what a
//! streaming client feels — time to first event, and how long each event took from the moment
//! the mock upstream sent it (the mock stamps `x_mock_sent_us` on every event) until it arrived.
//! Run the same load against the mock directly and through a proxy: the difference is what the
//! proxy adds.
//!
//! ```text
//! scira2api-loadgen --url http://127.0.0.1:8080/v1/chat/completions --concurrency 64 \
//!     --requests 256 --chunks 64 --delay-ms 20 [--header "authorization: Bearer k"]
//! ```
//! Prints one JSON object with the results.

use futures_util::StreamExt;
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Default)]
struct Samples {
    ttft_us: Vec<f64>,
    delivery_us: Vec<f64>,
    gaps_us: Vec<f64>,
    events: u64,
    ok: u64,
    errors: u64,
    stalls: u64,
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// The `x_mock_sent_us` stamp of one event.
fn stamp_of(event: &[u8]) -> Option<u128> {
    const KEY: &[u8] = b"\"x_mock_sent_us\":";
    let pos = event.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    std::str::from_utf8(&event[pos..pos + 16])
        .ok()?
        .parse()
        .ok()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

struct Args {
    url: String,
    concurrency: usize,
    requests: usize,
    chunks: usize,
    delay_ms: u64,
    headers: Vec<(String, String)>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        concurrency: 16,
        requests: 64,
        chunks: 64,
        delay_ms: 20,
        headers: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--url" => a.url = val()?,
            "--concurrency" => a.concurrency = num(val()?)? as usize,
            "--requests" => a.requests = num(val()?)? as usize,
            "--chunks" => a.chunks = num(val()?)? as usize,
            "--delay-ms" => a.delay_ms = num(val()?)?,
            "--header" => {
                let h = val()?;
                let (k, v) = h.split_once(':').ok_or("--header takes `name: value`")?;
                a.headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.url.is_empty() {
        return Err("--url is required".into());
    }
    Ok(a)
}

async fn one(client: &awc::Client, a: &Args, body: &str, samples: &RefCell<Samples>) {
    let mut req = client
        .post(&a.url)
        .insert_header(("content-type", "application/json"));
    for (k, v) in &a.headers {
        req = req.insert_header((k.as_str(), v.as_str()));
    }
    let start = Instant::now();
    let mut resp = match req.send_body(body.to_owned()).await {
        Ok(r) if r.status().is_success() => r,
        _ => {
            samples.borrow_mut().errors += 1;
            return;
        }
    };
    let expected_gap = Duration::from_millis(a.delay_ms);
    let mut first = true;
    let mut last: Option<Instant> = None;
    let mut buf = Vec::new();
    let mut done = false;
    while let Some(chunk) = resp.next().await {
        let Ok(chunk) = chunk else { break };
        let arrived = Instant::now();
        let arrived_us = now_us();
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            if !event.starts_with(b"data: ") {
                continue;
            }
            if event.starts_with(b"data: [DONE]") {
                done = true;
                continue;
            }
            let mut s = samples.borrow_mut();
            s.events += 1;
            if first {
                s.ttft_us.push(start.elapsed().as_secs_f64() * 1e6);
                first = false;
            }
            if let Some(sent) = stamp_of(&event) {
                s.delivery_us.push(arrived_us.saturating_sub(sent) as f64);
            }
            if let Some(prev) = last {
                let gap = arrived.duration_since(prev);
                s.gaps_us.push(gap.as_secs_f64() * 1e6);
                if gap > expected_gap * 3 + Duration::from_millis(50) {
                    s.stalls += 1;
                }
            }
            last = Some(arrived);
        }
    }
    let mut s = samples.borrow_mut();
    if done {
        s.ok += 1;
    } else {
        s.errors += 1;
    }
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("scira2api-loadgen: {e}");
            std::process::exit(2);
        }
    };
    let body = json!({
        "model": "gpt-4o", "stream": true,
        "messages": [{"role": "user", "content": "benchmark"}],
        "mock": {"chunks": a.chunks, "delay_ms": a.delay_ms, "timestamps": true}
    })
    .to_string();
    let samples = Rc::new(RefCell::new(Samples::default()));
    let wall = Instant::now();
    actix_rt::System::new().block_on(async {
        let connector = awc::Connector::new().limit(a.concurrency.max(1) + 8);
        let client = Rc::new(
            awc::Client::builder()
                .connector(connector)
                .timeout(Duration::from_secs(120))
                .finish(),
        );
        let next = Rc::new(RefCell::new(0usize));
        let a = Rc::new(a);
        let workers: Vec<_> = (0..a.concurrency)
            .map(|_| {
                let (client, a, body, samples, next) = (
                    client.clone(),
                    a.clone(),
                    body.clone(),
                    samples.clone(),
                    next.clone(),
                );
                actix_rt::spawn(async move {
                    loop {
                        let i = {
                            let mut n = next.borrow_mut();
                            *n += 1;
                            *n
                        };
                        if i > a.requests {
                            break;
                        }
                        one(&client, &a, &body, &samples).await;
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.await;
        }
    });
    let mut s = samples.borrow_mut();
    let out = json!({
        "requests_ok": s.ok,
        "errors": s.errors,
        "events": s.events,
        "stalls": s.stalls,
        "wall_s": wall.elapsed().as_secs_f64(),
        "ttft_us": {"p50": pct(&mut s.ttft_us, 0.5), "p99": pct(&mut s.ttft_us, 0.99)},
        "delivery_us": {"p50": pct(&mut s.delivery_us, 0.5), "p99": pct(&mut s.delivery_us, 0.99), "max": pct(&mut s.delivery_us, 1.0)},
        "gap_us": {"p50": pct(&mut s.gaps_us, 0.5), "p99": pct(&mut s.gaps_us, 0.99), "max": pct(&mut s.gaps_us, 1.0)},
    });
    println!("{out}");
}
