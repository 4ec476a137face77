//! Micro-benchmarks of the gateway's hot pure functions: request rewrite (model mapping), SSE
//! chunk rewrite, Scira stream decoding (the shared fixtures) and token counting.
//!
//! `cargo bench -p scira2api-upstream`

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use scira2api_types::{ChatRequest, rewrite_model};
use std::hint::black_box;

/// A chat body of about `size` bytes: a system prompt, a history, tools.
fn body(size: usize) -> Bytes {
    let filler = "The quick brown fox jumps over the lazy dog. ".repeat(size / 45 + 1);
    let mut turns = Vec::new();
    let mut used = 0;
    while used < size {
        let text = &filler[..filler.len().min(2000).min(size - used + 100)];
        turns.push(serde_json::json!({"role": if turns.len() % 2 == 0 { "user" } else { "assistant" }, "content": text}));
        used += text.len() + 40;
    }
    let v = serde_json::json!({
        "model": "gpt-4o", "temperature": 0.2, "stream": false,
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "messages": turns,
    });
    Bytes::from(v.to_string())
}

fn request_rewrite(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_rewrite");
    for (name, size) in [("4KB", 4 * 1024), ("200KB", 200 * 1024)] {
        let b = body(size);
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_function(name, |bench| {
            bench.iter(|| {
                let req = ChatRequest::parse(black_box(b.clone())).unwrap();
                black_box(req.upstream_body("mock-gpt"))
            })
        });
    }
    g.finish();
}

fn chunk_rewrite(c: &mut Criterion) {
    let chunk = Bytes::from_static(br#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1700000000,"model":"mock-gpt","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":" quick brown"},"logprobs":null,"finish_reason":null}]}"#);
    c.bench_function("sse_chunk_rewrite", |b| {
        b.iter(|| black_box(rewrite_model(black_box(chunk.clone()), "gpt-4o")))
    });
}

fn scira_decode(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/scira");
    let mut g = c.benchmark_group("scira_decode");
    for v in ["v4", "v5", "v6"] {
        let Ok(body) = std::fs::read(format!("{dir}/{v}/tool_step.stream")) else {
            eprintln!("fixtures not found at {dir}: skipping Scira decoding");
            return;
        };
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("{v}/tool_step"), |b| {
            b.iter(|| black_box(scira2api_upstream::decode_scira_body(black_box(&body)).unwrap()))
        });
    }
    g.finish();
}

fn token_count(c: &mut Criterion) {
    scira2api_tokens::preload();
    let text =
        "Streaming answers from the gateway arrive token by token; 你好，世界 😀. ".repeat(40);
    let mut g = c.benchmark_group("token_count");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("o200k_3KB", |b| {
        b.iter(|| {
            black_box(scira2api_tokens::count_completion(
                "gpt-4o",
                black_box(&text),
            ))
        })
    });
    g.bench_function("cl100k_3KB", |b| {
        b.iter(|| {
            black_box(scira2api_tokens::count_completion(
                "gpt-4",
                black_box(&text),
            ))
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    request_rewrite,
    chunk_rewrite,
    scira_decode,
    token_count
);
criterion_main!(benches);
