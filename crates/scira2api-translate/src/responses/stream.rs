//! Chat completion chunks as the Responses event stream.
//!
//! [`EventWriter`] is a state machine fed one chunk at a time; each call returns the SSE frames
//! (`event: <type>\ndata: <json>\n\n`) to write at once, so events leave as the upstream's
//! chunks arrive. Items are opened and closed in order, as OpenAI sends them: a reasoning item
//! (when the upstream streams `reasoning_content`), a message item with one `output_text`
//! part, then one `function_call` item per tool call in the upstream's index order. Every event
//! has a `sequence_number`. The stream ends with `response.completed` or `response.incomplete`
//! (from the finish reason), or, after an upstream failure, with an `error` event and
//! `response.failed` — never with an event that looks like success.

use super::response::{
    Parts, function_call_item, message_item, new_id, reasoning_item, response_object, status_of,
    text_part, usage,
};
use bytes::Bytes;
use serde_json::{Map, Value, json};

/// An output item being streamed.
enum Open {
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
        annotations: Vec<Value>,
    },
    Call {
        chat_index: u64,
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Writes the Responses events of one streamed answer (see the module docs).
pub struct EventWriter {
    id: String,
    created_at: u64,
    echo: Map<String, Value>,
    seq: u64,
    /// Output items already closed (for the final response object).
    done: Vec<Value>,
    open: Option<Open>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    /// The usage was counted by the gateway (the upstream reported none).
    estimated: bool,
    finished: bool,
}

impl EventWriter {
    /// A writer for the response `id`, created at `created_at` (Unix seconds), echoing `echo`.
    pub fn new(id: String, created_at: u64, echo: Map<String, Value>) -> Self {
        EventWriter {
            id,
            created_at,
            echo,
            seq: 0,
            done: Vec::new(),
            open: None,
            finish_reason: None,
            usage: None,
            estimated: false,
            finished: false,
        }
    }

    /// The response id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the final event has been written.
    pub fn finished(&self) -> bool {
        self.finished
    }

    fn event(&mut self, out: &mut Vec<Bytes>, kind: &str, mut body: Value) {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.seq);
        self.seq += 1;
        let mut frame = Vec::with_capacity(64);
        frame.extend_from_slice(b"event: ");
        frame.extend_from_slice(kind.as_bytes());
        frame.extend_from_slice(b"\ndata: ");
        // A Value always serialises.
        let _ = serde_json::to_writer(&mut frame, &body);
        frame.extend_from_slice(b"\n\n");
        out.push(Bytes::from(frame));
    }

    fn object(&self, status: &str, incomplete: Option<&str>, error: Option<Value>) -> Value {
        let final_ = status != "in_progress";
        let mut r = response_object(
            &self.echo,
            Parts {
                id: &self.id,
                created_at: self.created_at,
                status,
                incomplete,
                error,
                output: if final_ {
                    self.done.clone()
                } else {
                    Vec::new()
                },
                usage: final_.then(|| self.usage.clone().unwrap_or_else(|| usage(None))),
            },
        );
        if final_ && self.estimated {
            // As a chat stream's usage chunk says it: counted by the gateway.
            r["usage_source"] = json!("estimated");
        }
        r
    }

    /// `response.created` and `response.in_progress`: the first events.
    pub fn start(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        let r = self.object("in_progress", None, None);
        self.event(&mut out, "response.created", json!({"response": r}));
        let r = self.object("in_progress", None, None);
        self.event(&mut out, "response.in_progress", json!({"response": r}));
        out
    }

    /// The events of one chat chunk (a parsed `chat.completion.chunk`).
    pub fn chunk(&mut self, chunk: &Value) -> Vec<Bytes> {
        let mut out = Vec::new();
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage(Some(u)));
            self.estimated = chunk["usage_source"] == "estimated";
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            return out;
        };
        let delta = &choice["delta"];
        let reasoning = crate::reasoning_text(delta);
        if let Some(r) = reasoning {
            self.reasoning_delta(&mut out, r);
        }
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            self.text_delta(&mut out, text);
        }
        if let Some(anns) = delta.get("annotations").and_then(Value::as_array) {
            if let Some(Open::Message { annotations, .. }) = &mut self.open {
                annotations.extend(anns.iter().filter_map(super::response::annotation));
            }
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.call_delta(&mut out, call);
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(f.to_owned());
        }
        out
    }

    fn output_index(&self) -> usize {
        self.done.len()
    }

    fn reasoning_delta(&mut self, out: &mut Vec<Bytes>, delta: &str) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close(out);
            let id = new_id("rs_");
            let idx = self.output_index();
            let item = reasoning_item(&id, None);
            self.event(
                out,
                "response.output_item.added",
                json!({"output_index": idx, "item": item}),
            );
            self.event(
                out,
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": idx, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
            );
            self.open = Some(Open::Reasoning {
                id,
                text: String::new(),
            });
        }
        let idx = self.output_index();
        let id = match &mut self.open {
            Some(Open::Reasoning { id, text }) => {
                text.push_str(delta);
                id.clone()
            }
            _ => return,
        };
        self.event(
            out,
            "response.reasoning_summary_text.delta",
            json!({"item_id": id, "output_index": idx, "summary_index": 0, "delta": delta}),
        );
    }

    fn text_delta(&mut self, out: &mut Vec<Bytes>, delta: &str) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close(out);
            let id = new_id("msg_");
            let idx = self.output_index();
            let item = message_item(&id, "in_progress", Vec::new());
            self.event(
                out,
                "response.output_item.added",
                json!({"output_index": idx, "item": item}),
            );
            self.event(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": idx, "content_index": 0, "part": text_part("", Vec::new())}),
            );
            self.open = Some(Open::Message {
                id,
                text: String::new(),
                annotations: Vec::new(),
            });
        }
        let idx = self.output_index();
        let id = match &mut self.open {
            Some(Open::Message { id, text, .. }) => {
                text.push_str(delta);
                id.clone()
            }
            _ => return,
        };
        self.event(
            out,
            "response.output_text.delta",
            json!({"item_id": id, "output_index": idx, "content_index": 0, "delta": delta, "logprobs": []}),
        );
    }

    fn call_delta(&mut self, out: &mut Vec<Bytes>, call: &Value) {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let same =
            matches!(&self.open, Some(Open::Call { chat_index, .. }) if *chat_index == index);
        if !same {
            self.close(out);
            let id = new_id("fc_");
            let call_id = call
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| new_id("call_"), str::to_owned);
            let name = call["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let idx = self.output_index();
            let item = function_call_item(&id, "in_progress", &call_id, &name, "");
            self.event(
                out,
                "response.output_item.added",
                json!({"output_index": idx, "item": item}),
            );
            self.open = Some(Open::Call {
                chat_index: index,
                id,
                call_id,
                name,
                arguments: String::new(),
            });
        }
        let Some(delta) = call["function"]["arguments"]
            .as_str()
            .filter(|s| !s.is_empty())
        else {
            return;
        };
        let idx = self.output_index();
        let id = match &mut self.open {
            Some(Open::Call { id, arguments, .. }) => {
                arguments.push_str(delta);
                id.clone()
            }
            _ => return,
        };
        self.event(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": idx, "delta": delta}),
        );
    }

    /// Closes the open item, if any, with its `.done` events.
    fn close(&mut self, out: &mut Vec<Bytes>) {
        let Some(open) = self.open.take() else { return };
        let idx = self.output_index();
        let item = match open {
            Open::Reasoning { id, text } => {
                self.event(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": idx, "summary_index": 0, "text": text}),
                );
                self.event(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": idx, "summary_index": 0, "part": {"type": "summary_text", "text": text}}),
                );
                reasoning_item(&id, Some(&text))
            }
            Open::Message {
                id,
                text,
                annotations,
            } => {
                self.event(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": idx, "content_index": 0, "text": text, "logprobs": []}),
                );
                let part = text_part(&text, annotations);
                self.event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": idx, "content_index": 0, "part": part}),
                );
                message_item(&id, "completed", vec![part])
            }
            Open::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => {
                self.event(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": idx, "name": name, "arguments": arguments}),
                );
                function_call_item(&id, "completed", &call_id, &name, &arguments)
            }
        };
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": idx, "item": item}),
        );
        self.done.push(item);
    }

    /// The end of a complete upstream stream: open items closed, then `response.completed`
    /// (or `response.incomplete`, from the finish reason), with the whole response.
    pub fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.close(&mut out);
        if self.done.is_empty() {
            // An answer with no text and no call is still one (empty) message, as chat says.
            let id = new_id("msg_");
            let item = message_item(&id, "completed", vec![text_part("", Vec::new())]);
            self.event(
                &mut out,
                "response.output_item.added",
                json!({"output_index": 0, "item": message_item(&id, "in_progress", Vec::new())}),
            );
            self.event(
                &mut out,
                "response.output_item.done",
                json!({"output_index": 0, "item": item}),
            );
            self.done.push(item);
        }
        let (status, incomplete) = status_of(self.finish_reason.as_deref());
        if incomplete.is_some() {
            // Cut by the token limit or a filter: the last item did not finish.
            if let Some(last) = self.done.last_mut() {
                last["status"] = json!("incomplete");
            }
        }
        let r = self.object(status, incomplete, None);
        let kind = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.event(&mut out, kind, json!({"response": r}));
        self.finished = true;
        out
    }

    /// The end after an upstream failure: an `error` event, then `response.failed` with what
    /// was produced so far (its open item left `incomplete`).
    pub fn fail(&mut self, code: &str, message: &str) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        if let Some(open) = self.open.take() {
            self.done.push(match open {
                Open::Reasoning { id, text } => reasoning_item(&id, Some(&text)),
                Open::Message {
                    id,
                    text,
                    annotations,
                } => message_item(&id, "incomplete", vec![text_part(&text, annotations)]),
                Open::Call {
                    id,
                    call_id,
                    name,
                    arguments,
                    ..
                } => function_call_item(&id, "incomplete", &call_id, &name, &arguments),
            });
        }
        self.event(
            &mut out,
            "error",
            json!({"code": code, "message": message, "param": null}),
        );
        // The response object's `code` is one of OpenAI's few; the event keeps the gateway's.
        let object_code = if code == "rate_limit_exceeded" {
            code
        } else {
            "server_error"
        };
        let error = json!({"code": object_code, "message": format!("{message} ({code})")});
        let r = self.object("failed", None, Some(error));
        self.event(&mut out, "response.failed", json!({"response": r}));
        self.finished = true;
        out
    }

    /// The response object as it stands once finished (for storing).
    pub fn response(&self) -> Value {
        let (status, incomplete) = status_of(self.finish_reason.as_deref());
        self.object(status, incomplete, None)
    }

    /// The output items produced so far.
    pub fn output(&self) -> &[Value] {
        &self.done
    }
}
