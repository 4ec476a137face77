//! Golden files: every `tests/golden/<kind>_<name>.in.json` is translated and compared with
//! `<kind>_<name>.out.json` (`request_`: a Responses request onto chat; `completion_`: a chat
//! completion as a response object; `chunks_`: chat chunks as Responses events). Random ids are
//! replaced by stable placeholders. `UPDATE_GOLDEN=1 cargo test -p scira2api-translate` rewrites
//! the outputs (review the diff before committing it).

use scira2api_translate::responses::{EventWriter, from_completion, to_chat};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;

/// Replaces each generated id (`msg_…`, `fc_…`, `rs_…`, `resp_…` with 48 hex digits) by
/// `<prefix>N`, numbered in order of appearance.
fn stable_ids(v: &mut Value, seen: &mut HashMap<String, String>) {
    match v {
        Value::String(s) => {
            for prefix in ["msg_", "fc_", "rs_", "resp_"] {
                if let Some(hex) = s.strip_prefix(prefix) {
                    if hex.len() == 48 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        let n = seen.len();
                        *s = seen
                            .entry(s.clone())
                            .or_insert_with(|| format!("{prefix}{n}"))
                            .clone();
                    }
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| stable_ids(x, seen)),
        Value::Object(o) => o.values_mut().for_each(|x| stable_ids(x, seen)),
        _ => {}
    }
}

fn translate(name: &str, input: &Value) -> Value {
    if let Some(name) = name.strip_prefix("messages-") {
        return translate_messages(name, input);
    }
    if let Some(name) = name.strip_prefix("anthropic-") {
        return translate_anthropic(name, input);
    }
    let echo = to_chat(&json!({"model": "gpt-4o", "input": "x"}), &[])
        .unwrap()
        .echo;
    if name.starts_with("request_") {
        let plan = to_chat(input, &[]).unwrap();
        json!({"chat": plan.body, "dropped": plan.dropped, "echo": plan.echo, "input": plan.input, "stream": plan.stream, "store": plan.store})
    } else if name.starts_with("completion_") {
        from_completion(input, "resp_golden", 1_700_000_000, &echo)
    } else if name.starts_with("chunks_") {
        let mut w = EventWriter::new("resp_golden".into(), 1_700_000_000, echo);
        let mut frames = w.start();
        for c in input.as_array().unwrap() {
            frames.extend(w.chunk(c));
        }
        frames.extend(w.finish());
        frames_json(&frames)
    } else {
        panic!("unknown golden file kind: {name}")
    }
}

/// The SSE frames as (event, data) pairs, each frame checked for its shape.
fn frames_json(frames: &[bytes::Bytes]) -> Value {
    Value::Array(
        frames
            .iter()
            .map(|f| {
                let text = std::str::from_utf8(f).unwrap();
                let (head, data) = text.split_once("\ndata: ").unwrap();
                let data: Value = serde_json::from_str(data.trim_end()).unwrap();
                assert_eq!(
                    head.strip_prefix("event: "),
                    data["type"].as_str(),
                    "{text}"
                );
                assert!(text.ends_with("\n\n"));
                data
            })
            .collect(),
    )
}

fn translate_messages(name: &str, input: &Value) -> Value {
    use scira2api_translate::messages;
    if name.starts_with("request_") {
        let plan = messages::to_chat(input).unwrap();
        json!({"chat": plan.body, "dropped": plan.dropped, "model": plan.model, "stream": plan.stream})
    } else if name.starts_with("completion_") {
        messages::from_completion(input, "msg_golden", "claude-golden")
    } else if name.starts_with("chunks_") {
        let mut w = messages::EventWriter::new("msg_golden".into(), "claude-golden".into());
        let mut frames = w.start();
        for c in input.as_array().unwrap() {
            frames.extend(w.chunk(c));
        }
        frames.extend(w.finish());
        frames_json(&frames)
    } else {
        panic!("unknown golden file kind: {name}")
    }
}

/// Chat onto an Anthropic upstream: `request_` a chat request as a Messages request,
/// `message_` a `message` as a chat completion, `events_` Messages events as chat chunks (the
/// chunks' random id and time replaced).
fn translate_anthropic(name: &str, input: &Value) -> Value {
    use scira2api_translate::anthropic;
    if name.starts_with("request_") {
        let plan = anthropic::to_messages(input, "claude-internal").unwrap();
        json!({"messages": plan.body, "dropped": plan.dropped})
    } else if name.starts_with("message_") {
        anthropic::to_completion(input, "chatcmpl-golden", 1_700_000_000, "claude-client")
    } else if name.starts_with("events_") {
        let mut w = anthropic::ChunkWriter::new("claude-client");
        let mut chunks = Vec::new();
        for e in input.as_array().unwrap() {
            for f in w.event(e).unwrap() {
                let text = std::str::from_utf8(&f).unwrap();
                let data = text
                    .strip_prefix("data: ")
                    .unwrap()
                    .strip_suffix("\n\n")
                    .unwrap();
                let mut v: Value = serde_json::from_str(data).unwrap();
                assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
                v["id"] = json!("chatcmpl-golden");
                v["created"] = json!(0);
                chunks.push(v);
            }
        }
        assert!(w.done(), "the events end with message_stop");
        Value::Array(chunks)
    } else {
        panic!("unknown golden file kind: {name}")
    }
}

#[test]
fn golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".in.json") else {
            continue;
        };
        let input: Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        let mut got = translate(name, &input);
        stable_ids(&mut got, &mut HashMap::new());
        let out = dir.join(format!("{name}.out.json"));
        if update {
            std::fs::write(&out, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        }
        let want: Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap_or_else(|_| {
                panic!("{} missing (UPDATE_GOLDEN=1 writes it)", out.display())
            }))
            .unwrap();
        assert_eq!(
            got,
            want,
            "{name}: got\n{}",
            serde_json::to_string_pretty(&got).unwrap()
        );
        n += 1;
    }
    assert!(n >= 5, "only {n} golden files");
}

#[test]
fn a_failed_stream_ends_with_error_then_failed() {
    let echo = to_chat(&json!({"model": "m", "input": "x"}), &[])
        .unwrap()
        .echo;
    let mut w = EventWriter::new("resp_x".into(), 1, echo);
    w.start();
    w.chunk(&json!({"choices": [{"index": 0, "delta": {"content": "par"}}]}));
    let end = w.fail("upstream_error", "the upstream broke off");
    let kinds: Vec<String> = end
        .iter()
        .map(|f| {
            String::from_utf8_lossy(f)
                .lines()
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["event: error", "event: response.failed"]);
    assert!(w.finish().is_empty(), "nothing after the end");
    let failed: Value = serde_json::from_str(
        String::from_utf8_lossy(&end[1])
            .split_once("data: ")
            .unwrap()
            .1
            .trim(),
    )
    .unwrap();
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(failed["response"]["output"][0]["content"][0]["text"], "par");
}

#[test]
fn a_web_search_tool_is_honoured_only_where_the_upstream_searches() {
    use scira2api_translate::responses::{Capabilities, to_chat_for};
    let req = json!({"model": "m", "input": "news?",
        "tools": [{"type": "web_search", "search_context_size": "low"}],
        "tool_choice": {"type": "web_search"}});
    let e = to_chat(&req, &[]).unwrap_err();
    assert_eq!(e.param(), Some("tool_choice"));
    let plan = to_chat_for(&req, &[], Capabilities { web_search: true }).unwrap();
    assert_eq!(
        plan.body["web_search_options"],
        json!({"search_context_size": "low"})
    );
    assert!(plan.body.get("tools").is_none() && plan.body.get("tool_choice").is_none());
    assert!(plan.dropped.is_empty(), "{:?}", plan.dropped);
    assert_eq!(plan.echo["tools"][0]["type"], "web_search");
}

#[test]
fn an_estimated_usage_is_marked_on_the_final_response() {
    let echo = to_chat(&json!({"model": "m", "input": "x"}), &[])
        .unwrap()
        .echo;
    let mut w = EventWriter::new("resp_x".into(), 1, echo);
    w.start();
    w.chunk(
        &json!({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}),
    );
    w.chunk(&json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}, "usage_source": "estimated"}));
    w.finish();
    let r = w.response();
    assert_eq!(r["usage"]["input_tokens"], 3);
    assert_eq!(r["usage_source"], "estimated");
}
