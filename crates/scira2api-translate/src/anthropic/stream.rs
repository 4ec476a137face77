//! The Messages event stream as `chat.completion.chunk` frames.

use super::response::{chat_usage, finish_reason, usage_counts};
use bytes::Bytes;
use scira2api_types::{ChunkEncoder, Error};
use serde_json::Value;

/// Turns Messages events (parsed `data` objects, in order) into chat chunk frames: the role
/// at `message_start`, text and thinking deltas as `content` / `reasoning_content`, each
/// `tool_use` block as one tool call (numbered in order, its `input_json_delta`s as
/// `arguments`), the finish reason at `message_delta`, and the usage chunk at `message_stop`.
/// Every chunk carries `"usage":null` (OpenAI's `include_usage` framing; the gateway strips it
/// when the client did not ask).
pub struct ChunkWriter {
    enc: ChunkEncoder,
    /// The tool call index of each content block (by the block's `index`), for tool blocks.
    tool_of_block: Vec<Option<u32>>,
    tools: u32,
    /// Usage counts so far: input, cache reads, cache writes, output.
    usage: (u64, u64, u64, u64),
    finished: bool,
    done: bool,
}

impl ChunkWriter {
    /// A writer whose chunks name `model` (the client's).
    pub fn new(model: &str) -> Self {
        ChunkWriter {
            enc: ChunkEncoder::new(model, true),
            tool_of_block: Vec::new(),
            tools: 0,
            usage: (0, 0, 0, 0),
            finished: false,
            done: false,
        }
    }

    /// Whether `message_stop` has been seen: the answer is complete.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The frames of one event. An `error` event is an `Err` (the stream broke off upstream);
    /// unknown events (and `ping`) write nothing.
    pub fn event(&mut self, event: &Value) -> Result<Vec<Bytes>, Error> {
        let mut out = Vec::new();
        match event["type"].as_str().unwrap_or_default() {
            "message_start" => {
                let m = &event["message"];
                self.usage = usage_counts(&m["usage"]);
                out.push(self.enc.role());
            }
            "content_block_start" => {
                let block = &event["content_block"];
                let index = event["index"].as_u64().unwrap_or(0) as usize;
                match block["type"].as_str() {
                    Some("text") => {
                        if let Some(t) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(self.enc.content(t));
                        }
                    }
                    Some("thinking") => {
                        if let Some(t) = block["thinking"].as_str().filter(|t| !t.is_empty()) {
                            out.push(self.enc.reasoning(t));
                        }
                    }
                    Some("tool_use") => {
                        if self.tool_of_block.len() <= index {
                            self.tool_of_block.resize(index + 1, None);
                        }
                        let n = self.tools;
                        self.tools += 1;
                        self.tool_of_block[index] = Some(n);
                        let input = block
                            .get("input")
                            .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                            .map(Value::to_string)
                            .unwrap_or_default();
                        out.push(self.enc.tool_call(
                            n,
                            block["id"].as_str().unwrap_or_default(),
                            block["name"].as_str().unwrap_or_default(),
                            &input,
                        ));
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = &event["delta"];
                let index = event["index"].as_u64().unwrap_or(0) as usize;
                match d["type"].as_str() {
                    Some("text_delta") => {
                        if let Some(t) = d["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(self.enc.content(t));
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(t) = d["thinking"].as_str().filter(|t| !t.is_empty()) {
                            out.push(self.enc.reasoning(t));
                        }
                    }
                    Some("input_json_delta") => {
                        let tool = self.tool_of_block.get(index).copied().flatten();
                        if let (Some(n), Some(p)) = (tool, d["partial_json"].as_str()) {
                            if !p.is_empty() {
                                out.push(self.enc.tool_arguments(n, p));
                            }
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(o) = event
                    .pointer("/usage/output_tokens")
                    .and_then(Value::as_u64)
                {
                    self.usage.3 = o;
                }
                if let Some(i) = event.pointer("/usage/input_tokens").and_then(Value::as_u64) {
                    self.usage.0 = i;
                }
                if !self.finished {
                    self.finished = true;
                    let reason =
                        finish_reason(event.pointer("/delta/stop_reason").and_then(Value::as_str));
                    out.push(self.enc.finish(reason));
                }
            }
            "message_stop" => {
                if !self.finished {
                    self.finished = true;
                    out.push(self.enc.finish("stop"));
                }
                let (i, r, w, o) = self.usage;
                out.push(self.enc.usage_object(&chat_usage(i, r, w, o)));
                self.done = true;
            }
            "error" => {
                let e = &event["error"];
                let kind = e["type"].as_str().unwrap_or("api_error");
                let message = e["message"].as_str().unwrap_or("error");
                let status = if kind == "overloaded_error" { 529 } else { 502 };
                return Err(Error::upstream_status(
                    status,
                    "upstream_error",
                    format!("the Anthropic upstream's stream failed ({kind}): {message}; the answer is incomplete"),
                )
                .retryable(kind == "overloaded_error" || kind == "api_error"));
            }
            _ => {}
        }
        Ok(out)
    }
}
