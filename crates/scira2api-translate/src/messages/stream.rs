//! Chat completion chunks as Anthropic's Messages stream.
//!
//! `message_start`, then a `ping`, then one content block per run of thinking, per run of text
//! and per tool call, in order (`content_block_start`, `content_block_delta` with
//! `thinking_delta` / `text_delta` / `input_json_delta` as the upstream's chunks arrive,
//! `content_block_stop`), then `message_delta` (`stop_reason`, usage) and `message_stop`. After
//! an upstream failure the stream ends with an `error` event instead — never a `message_stop`
//! that looks like success.

use super::response::{new_id, stop_reason};
use bytes::Bytes;
use serde_json::{Value, json};

/// The block being streamed.
enum Open {
    Thinking,
    Text,
    Tool { chat_index: u64 },
}

/// Writes the Messages events of one streamed answer (see the module docs).
pub struct EventWriter {
    id: String,
    model: String,
    index: u64,
    open: Option<Open>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    finished: bool,
}

/// `event: <kind>\ndata: <json>\n\n`.
pub fn frame(kind: &str, body: &Value) -> Bytes {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(b"event: ");
    f.extend_from_slice(kind.as_bytes());
    f.extend_from_slice(b"\ndata: ");
    // A Value always serialises.
    let _ = serde_json::to_writer(&mut f, body);
    f.extend_from_slice(b"\n\n");
    Bytes::from(f)
}

/// The `ping` event Anthropic sends at the start and during silences.
pub const PING: &[u8] = b"event: ping\ndata: {\"type\": \"ping\"}\n\n";

/// An `error` event (`api_error`, or `overloaded_error` for a 429/503/529 kind of failure).
pub fn error_event(status: u16, message: &str) -> Bytes {
    let kind = match status {
        429 | 503 | 529 => "overloaded_error",
        _ => "api_error",
    };
    frame(
        "error",
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

impl EventWriter {
    /// A writer for the message `id`, named `model` (the client's).
    pub fn new(id: String, model: String) -> Self {
        EventWriter {
            id,
            model,
            index: 0,
            open: None,
            finish_reason: None,
            usage: None,
            finished: false,
        }
    }

    /// `message_start` and a first `ping`.
    pub fn start(&mut self) -> Vec<Bytes> {
        let message = json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        });
        vec![
            frame(
                "message_start",
                &json!({"type": "message_start", "message": message}),
            ),
            Bytes::from_static(PING),
        ]
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if self.open.take().is_some() {
            out.push(frame(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.index}),
            ));
            self.index += 1;
        }
    }

    fn open(&mut self, out: &mut Vec<Bytes>, open: Open, block: Value) {
        self.close(out);
        out.push(frame(
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.index, "content_block": block}),
        ));
        self.open = Some(open);
    }

    fn delta(&self, out: &mut Vec<Bytes>, delta: Value) {
        out.push(frame(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.index, "delta": delta}),
        ));
    }

    /// The events of one chat chunk (a parsed `chat.completion.chunk`).
    pub fn chunk(&mut self, chunk: &Value) -> Vec<Bytes> {
        let mut out = Vec::new();
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            return out;
        };
        let d = &choice["delta"];
        let thinking = crate::reasoning_text(d);
        if let Some(t) = thinking {
            if !matches!(self.open, Some(Open::Thinking)) {
                self.open(
                    &mut out,
                    Open::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                );
            }
            self.delta(&mut out, json!({"type": "thinking_delta", "thinking": t}));
        }
        if let Some(t) = d
            .get("content")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            if !matches!(self.open, Some(Open::Text)) {
                self.open(&mut out, Open::Text, json!({"type": "text", "text": ""}));
            }
            self.delta(&mut out, json!({"type": "text_delta", "text": t}));
        }
        for call in d
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            if !matches!(self.open, Some(Open::Tool { chat_index }) if chat_index == index) {
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| new_id("toolu_"), str::to_owned);
                let name = call["function"]["name"].as_str().unwrap_or_default();
                self.open(
                    &mut out,
                    Open::Tool { chat_index: index },
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                );
            }
            if let Some(args) = call["function"]["arguments"]
                .as_str()
                .filter(|s| !s.is_empty())
            {
                self.delta(
                    &mut out,
                    json!({"type": "input_json_delta", "partial_json": args}),
                );
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(f.to_owned());
        }
        out
    }

    /// The end of a complete upstream stream: the open block closed, `message_delta` with the
    /// stop reason and usage, `message_stop`.
    pub fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.close(&mut out);
        let u = super::response::usage(self.usage.as_ref());
        out.push(frame(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(self.finish_reason.as_deref()), "stop_sequence": null},
                "usage": u,
            }),
        ));
        out.push(frame("message_stop", &json!({"type": "message_stop"})));
        self.finished = true;
        out
    }

    /// The end after an upstream failure (`status` is the gateway error's): an `error` event.
    pub fn fail(&mut self, status: u16, message: &str) -> Vec<Bytes> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        vec![error_event(status, message)]
    }
}
