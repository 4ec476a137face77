//! Property tests for the stream decoders: arbitrary bytes never panic, and a body cut into
//! arbitrary pieces decodes exactly as the whole body does (lines, SSE events, OpenAI frames,
//! Scira's three formats from the byte-exact fixtures).

use crate::lines::{LineBuffer, SseEvents};
use crate::openai::{ModelRewrite, OpenAiStreamDecoder};
use crate::scira::SciraStreamDecoder;
use crate::stream::LineDecoder;
use bytes::Bytes;
use proptest::prelude::*;
use scira2api_types::ChunkEncoder;
use serde_json::Value;
use std::collections::VecDeque;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `body` cut at the given points (taken modulo its length).
fn pieces(body: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| if body.is_empty() { 0 } else { c % body.len() })
        .collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut last = 0;
    for a in at {
        out.push(Bytes::copy_from_slice(&body[last..a]));
        last = a;
    }
    out.push(Bytes::copy_from_slice(&body[last..]));
    out
}

/// Runs a decoder over pieces as `DecodedStream` does: frames out, and how it ended.
fn drive<D: LineDecoder>(mut d: D, pieces: &[Bytes]) -> (Vec<Bytes>, Result<(), String>) {
    let mut lines = LineBuffer::new(1 << 20);
    let mut out = VecDeque::new();
    let fed = |d: &mut D, line: Bytes, out: &mut VecDeque<Bytes>| d.line(line, out);
    for p in pieces {
        lines.push(p);
        loop {
            match lines.next_line() {
                Ok(Some(line)) => match fed(&mut d, line, &mut out) {
                    Ok(false) => {}
                    Ok(true) => return (out.into(), Ok(())),
                    Err(e) => return (out.into(), Err(e.to_string())),
                },
                Ok(None) => break,
                Err(_) => return (out.into(), Err("line too long".into())),
            }
        }
    }
    if let Some(last) = lines.finish() {
        match fed(&mut d, last, &mut out) {
            Ok(true) => return (out.into(), Ok(())),
            Ok(false) => {}
            Err(e) => return (out.into(), Err(e.to_string())),
        }
    }
    let end = d.end(&mut out).map_err(|e| e.to_string());
    (out.into(), end)
}

/// Frames without their per-stream random parts (`id`, `created`), for comparing two runs.
fn normalised(frames: &[Bytes]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| {
            let json = f.strip_prefix(b"data: ").unwrap_or(f).trim_ascii_end();
            let mut v: Value = serde_json::from_slice(json).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.remove("id");
                o.remove("created");
            }
            v
        })
        .collect()
}

fn scira_decoder() -> SciraStreamDecoder {
    SciraStreamDecoder::new(ChunkEncoder::new("m".to_owned(), true), true)
}

fn fixtures() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/scira");
    let mut out = Vec::new();
    for v in ["v4", "v5", "v6"] {
        for name in [
            "basic",
            "escapes",
            "prestart_data",
            "stream_error",
            "tool_step",
        ] {
            let path = format!("{dir}/{v}/{name}.stream");
            out.push(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")));
        }
    }
    out
}

/// An OpenAI-style body of a few events, with comments and CRLF line ends mixed in.
fn openai_body() -> impl Strategy<Value = Vec<u8>> {
    let event = prop_oneof![
        "[a-z \"é]{0,10}".prop_map(|t| {
            format!(
                "data: {{\"model\":\"int\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\n",
                Value::String(t)
            )
        }),
        Just(": keep-alive\n\n".to_owned()),
        Just("data: {\"model\":\"int\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\r\n\r\n".to_owned()),
    ];
    (prop::collection::vec(event, 0..8), any::<bool>()).prop_map(|(events, done)| {
        let mut body = events.concat();
        if done {
            body.push_str("data: [DONE]\n\n");
        }
        body.into_bytes()
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn lines_and_events_do_not_depend_on_the_cuts(
        body in prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'd'), Just(b':'), any::<u8>()], 0..300),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let split = |ps: &[Bytes]| {
            let mut lb = LineBuffer::new(1 << 20);
            let mut ev = SseEvents::default();
            let (mut lines, mut events) = (Vec::new(), Vec::new());
            for p in ps {
                lb.push(p);
                while let Ok(Some(l)) = lb.next_line() {
                    lines.push(l.clone());
                    if let Some(e) = ev.line(l) {
                        events.push(e);
                    }
                }
            }
            if let Some(l) = lb.finish() {
                lines.push(l);
            }
            (lines, events)
        };
        let whole = split(&[Bytes::from(body.clone())]);
        prop_assert_eq!(split(&pieces(&body, &cuts)), whole);
    }

    #[test]
    fn openai_streams_do_not_depend_on_the_cuts(
        body in openai_body(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let run = |ps: &[Bytes]| drive(OpenAiStreamDecoder::new(ModelRewrite::new("ext", "int")), ps);
        let whole = run(&[Bytes::from(body.clone())]);
        let cut = run(&pieces(&body, &cuts));
        prop_assert_eq!(&cut, &whole);
        for f in &whole.0 {
            let framed = f.starts_with(b"data: {") && f.ends_with(b"}\n\n");
            prop_assert!(framed, "frame shape: {:?}", f);
            prop_assert!(!f.windows(5).any(|w| w == b"\"int\""), "model rewritten");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(
        body in prop::collection::vec(any::<u8>(), 0..400),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let ps = pieces(&body, &cuts);
        let _ = drive(OpenAiStreamDecoder::new(ModelRewrite::new("a", "b")), &ps);
        let _ = drive(scira_decoder(), &ps);
    }

    #[test]
    fn scira_fixtures_do_not_depend_on_the_cuts(
        which in 0usize..15,
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let body = &fixtures()[which];
        let (whole, whole_end) = drive(scira_decoder(), &[Bytes::from(body.clone())]);
        let (cut, cut_end) = drive(scira_decoder(), &pieces(body, &cuts));
        prop_assert_eq!(normalised(&cut), normalised(&whole));
        prop_assert_eq!(cut_end, whole_end);
    }
}
