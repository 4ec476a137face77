//! Anthropic's Messages API as an upstream (`PROVIDER=anthropic`): its errors, a Messages
//! stream passed through to a Messages client ([`MessagesStreamDecoder`]), and a Messages stream
//! decoded into chat chunks for a chat client ([`ChatFromMessagesDecoder`], the translation
//! itself in `scira2api-translate`'s `anthropic` module).
//!
//! A stream is complete at `message_stop`; a body that ends before it is a cut (an `Err` item,
//! never a silent end). An `error` event as the very first event is an upstream error before the
//! first byte (a plain HTTP error, retried when it says `overloaded_error` or `api_error`).

use crate::errors::describe_body;
use crate::lines::SseEvents;
use crate::stream::LineDecoder;
use bytes::Bytes;
use scira2api_translate::anthropic::ChunkWriter;
use scira2api_types::Error;
use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;

/// The `anthropic-version` sent when the client sent none (chat clients never do).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The `anthropic-*` headers of a Messages client, forwarded to an Anthropic upstream.
#[derive(Debug, Clone, Default)]
pub struct AnthropicHeaders {
    /// `anthropic-version` (else [`ANTHROPIC_VERSION`]).
    pub version: Option<String>,
    /// `anthropic-beta`: the beta features the client opted into.
    pub beta: Option<String>,
}

/// The gateway's error code for an Anthropic error `type`.
fn code_of(kind: &str) -> &'static str {
    match kind {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "request_too_large" => "request_too_large",
        "rate_limit_error" => "rate_limit_error",
        "overloaded_error" => "overloaded_error",
        "billing_error" => "billing_error",
        _ => "api_error",
    }
}

/// The OpenAI error `type` for an Anthropic error `type`.
fn openai_kind(kind: &str, status: u16) -> &'static str {
    match kind {
        "rate_limit_error" => "rate_limit_error",
        "invalid_request_error" | "not_found_error" | "request_too_large" => {
            "invalid_request_error"
        }
        _ if status < 500 => "invalid_request_error",
        _ => "upstream_error",
    }
}

/// `(type, message)` of an Anthropic error body `{"type":"error","error":{"type","message"}}`.
fn parse_error(body: &[u8]) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    Some((
        e.get("type")?.as_str()?.to_owned(),
        e.get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    ))
}

/// Maps a non-2xx Anthropic answer to the gateway's error (rendered in either API's shape by
/// the route): the status kept (529 `overloaded_error` too), except that a 401 — the
/// *operator's* key — becomes a 403 that says so; 429, 5xx and 529 are retryable.
pub(crate) fn map_error(status: u16, retry: Option<Duration>, body: &Bytes) -> Error {
    let Some((kind, message)) = parse_error(body) else {
        return Error::upstream(format!(
            "the Anthropic upstream answered HTTP {status} with {}",
            describe_body(body)
        ))
        .retryable(scira2api_types::retryable_status(status))
        .with_retry_after(retry);
    };
    if status == 401 {
        return Error::upstream_status(
            403,
            "upstream_unauthorized",
            format!(
                "the Anthropic upstream rejected the gateway's upstream key (HTTP 401 {kind}: {message}); the operator should check UPSTREAM_API_KEY"
            ),
        );
    }
    let retryable = scira2api_types::retryable_status(status) && kind != "billing_error";
    Error::upstream_status(
        status,
        code_of(&kind),
        format!("the Anthropic upstream answered {status} {kind}: {message}"),
    )
    .with_kind(openai_kind(&kind, status))
    .retryable(retryable)
    .with_retry_after(retry)
}

/// The error of an `error` event that arrived as a stream's first event.
fn first_event_error(v: &Value) -> Error {
    let kind = v
        .pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or("api_error");
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("");
    let status = if kind == "overloaded_error" { 529 } else { 502 };
    Error::upstream_status(
        status,
        code_of(kind),
        format!("the Anthropic upstream's stream began with an error ({kind}): {message}"),
    )
    .retryable(matches!(kind, "overloaded_error" | "api_error"))
}

fn parse_event(data: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(data).map_err(|_| {
        let snippet: String = String::from_utf8_lossy(data).chars().take(120).collect();
        Error::upstream(format!(
            "the Anthropic upstream sent an event that is not valid JSON: `{snippet}`; the answer is incomplete"
        ))
    })
}

fn cut() -> Error {
    Error::upstream(
        "the Anthropic upstream's stream ended before message_stop; the answer is incomplete",
    )
}

/// Passes a Messages stream through event by event, with `message.model` of `message_start`
/// set to the client's name. A later `error` event is passed on and ends the stream.
pub(crate) struct MessagesStreamDecoder {
    events: SseEvents,
    /// The client's model name, when the upstream's differs.
    model: Option<String>,
    saw_event: bool,
    done: bool,
}

impl MessagesStreamDecoder {
    /// A decoder that writes `external` as the model when it differs from `internal`.
    pub(crate) fn new(external: &str, internal: &str) -> Self {
        MessagesStreamDecoder {
            events: SseEvents::default(),
            model: (external != internal).then(|| external.to_owned()),
            saw_event: false,
            done: false,
        }
    }

    fn event(&mut self, data: Bytes, out: &mut VecDeque<Bytes>) -> Result<bool, Error> {
        let trimmed = data.trim_ascii();
        if trimmed.is_empty() {
            return Ok(false);
        }
        let mut v = parse_event(trimmed)?;
        let kind = v["type"].as_str().unwrap_or_default().to_owned();
        if kind == "error" && !self.saw_event {
            return Err(first_event_error(&v));
        }
        self.saw_event = true;
        let data = match (&self.model, kind.as_str()) {
            (Some(m), "message_start") if v.pointer("/message/model").is_some() => {
                v["message"]["model"] = Value::String(m.clone());
                Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
            }
            _ => data.slice_ref(trimmed),
        };
        let mut frame = Vec::with_capacity(data.len() + kind.len() + 16);
        frame.extend_from_slice(b"event: ");
        frame.extend_from_slice(kind.as_bytes());
        frame.extend_from_slice(b"\ndata: ");
        frame.extend_from_slice(&data);
        frame.extend_from_slice(b"\n\n");
        out.push_back(Bytes::from(frame));
        if kind == "message_stop" || kind == "error" {
            self.done = true;
            return Ok(true);
        }
        Ok(false)
    }
}

impl LineDecoder for MessagesStreamDecoder {
    fn primed(&self) -> bool {
        self.saw_event
    }

    fn line(&mut self, line: Bytes, out: &mut VecDeque<Bytes>) -> Result<bool, Error> {
        match self.events.line(line) {
            Some(data) => self.event(data, out),
            None => Ok(false),
        }
    }

    fn end(&mut self, out: &mut VecDeque<Bytes>) -> Result<(), Error> {
        if let Some(data) = self.events.take() {
            if self.event(data, out)? {
                return Ok(());
            }
        }
        if self.done { Ok(()) } else { Err(cut()) }
    }
}

/// Decodes a Messages stream into chat chunks for a chat client.
pub(crate) struct ChatFromMessagesDecoder {
    events: SseEvents,
    writer: ChunkWriter,
    saw_event: bool,
}

impl ChatFromMessagesDecoder {
    /// A decoder whose chunks name `model` (the client's).
    pub(crate) fn new(model: &str) -> Self {
        ChatFromMessagesDecoder {
            events: SseEvents::default(),
            writer: ChunkWriter::new(model),
            saw_event: false,
        }
    }

    fn event(&mut self, data: Bytes, out: &mut VecDeque<Bytes>) -> Result<bool, Error> {
        let trimmed = data.trim_ascii();
        if trimmed.is_empty() {
            return Ok(false);
        }
        let v = parse_event(trimmed)?;
        if v["type"] == "error" && !self.saw_event {
            return Err(first_event_error(&v));
        }
        self.saw_event = true;
        out.extend(self.writer.event(&v)?);
        Ok(self.writer.done())
    }
}

impl LineDecoder for ChatFromMessagesDecoder {
    fn primed(&self) -> bool {
        self.saw_event
    }

    fn line(&mut self, line: Bytes, out: &mut VecDeque<Bytes>) -> Result<bool, Error> {
        match self.events.line(line) {
            Some(data) => self.event(data, out),
            None => Ok(false),
        }
    }

    fn end(&mut self, out: &mut VecDeque<Bytes>) -> Result<(), Error> {
        if let Some(data) = self.events.take() {
            if self.event(data, out)? {
                return Ok(());
            }
        }
        if self.writer.done() {
            Ok(())
        } else {
            Err(cut())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<D: LineDecoder>(d: &mut D, body: &str) -> (Vec<String>, Result<(), Error>) {
        let mut out = VecDeque::new();
        for line in body.split('\n') {
            match d.line(Bytes::copy_from_slice(line.as_bytes()), &mut out) {
                Ok(true) => {
                    let frames = out.iter().map(|b| String::from_utf8_lossy(b).into_owned());
                    return (frames.collect(), Ok(()));
                }
                Ok(false) => {}
                Err(e) => return (Vec::new(), Err(e)),
            }
        }
        let end = d.end(&mut out);
        let frames = out.iter().map(|b| String::from_utf8_lossy(b).into_owned());
        (frames.collect(), end)
    }

    const STREAM: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"internal\",\"content\":[],\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn passes_messages_events_through_with_the_model_rewritten() {
        let (frames, end) = run(
            &mut MessagesStreamDecoder::new("client", "internal"),
            STREAM,
        );
        assert!(end.is_ok());
        assert_eq!(frames.len(), 7);
        assert!(frames[0].starts_with("event: message_start\ndata: {"));
        assert!(frames[0].contains("\"model\":\"client\"") && !frames[0].contains("internal"));
        assert_eq!(
            frames[3],
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n"
        );
        assert!(frames[6].starts_with("event: message_stop\n"));
    }

    #[test]
    fn decodes_messages_events_into_chat_chunks() {
        let (frames, end) = run(&mut ChatFromMessagesDecoder::new("client"), STREAM);
        assert!(end.is_ok());
        let chunks: Vec<Value> = frames
            .iter()
            .map(|f| serde_json::from_str(f.strip_prefix("data: ").unwrap().trim_end()).unwrap())
            .collect();
        assert_eq!(chunks.len(), 4, "{frames:?}");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "hi");
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[3]["usage"]["prompt_tokens"], 5);
        assert_eq!(chunks[3]["usage"]["completion_tokens"], 2);
        assert_eq!(chunks[3]["model"], "client");
    }

    #[test]
    fn a_cut_a_first_error_or_a_later_error_is_never_success() {
        let cut_at = STREAM.find("event: message_delta").unwrap();
        let (_, end) = run(&mut ChatFromMessagesDecoder::new("c"), &STREAM[..cut_at]);
        assert!(end.unwrap_err().to_string().contains("before message_stop"));
        let (_, end) = run(&mut MessagesStreamDecoder::new("c", "i"), &STREAM[..cut_at]);
        assert!(end.is_err());
        let overloaded = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let (_, end) = run(&mut MessagesStreamDecoder::new("c", "i"), overloaded);
        let e = end.unwrap_err();
        assert_eq!(e.status(), 529);
        assert!(e.should_retry());
        let later = format!("{}{overloaded}", &STREAM[..cut_at]);
        let (_, end) = run(&mut ChatFromMessagesDecoder::new("c"), &later);
        assert!(end.is_err());
        let (frames, end) = run(&mut MessagesStreamDecoder::new("c", "i"), &later);
        assert!(
            end.is_ok(),
            "a native client gets Anthropic's own error event"
        );
        assert!(frames.last().unwrap().starts_with("event: error\n"));
    }

    #[test]
    fn maps_anthropic_errors() {
        let body = |t: &str| {
            Bytes::from(format!(
                "{{\"type\":\"error\",\"error\":{{\"type\":\"{t}\",\"message\":\"m\"}}}}"
            ))
        };
        let e = map_error(529, None, &body("overloaded_error"));
        assert_eq!(
            (e.status(), e.should_retry(), e.anthropic_kind()),
            (529, true, "overloaded_error")
        );
        let e = map_error(400, None, &body("invalid_request_error"));
        assert_eq!(
            (e.status(), e.should_retry(), e.kind()),
            (400, false, "invalid_request_error")
        );
        let e = map_error(401, None, &body("authentication_error"));
        assert_eq!(e.status(), 403);
        assert!(e.to_string().contains("UPSTREAM_API_KEY"));
        let e = map_error(429, Some(Duration::from_secs(3)), &body("rate_limit_error"));
        assert_eq!(
            (e.status(), e.should_retry(), e.retry_after()),
            (429, true, Some(Duration::from_secs(3)))
        );
        let e = map_error(502, None, &Bytes::from_static(b"<html>bad gateway</html>"));
        assert_eq!((e.status(), e.should_retry()), (502, true));
    }
}
