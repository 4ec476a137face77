//! A Responses API stream from an upstream that speaks it natively, passed through event by
//! event with only `model` rewritten (in the events' `response` objects).
//!
//! The stream is complete at `response.completed`, `response.incomplete` or `response.failed`;
//! a body that ends before one of them is a cut (an `Err` item, never a silent end). An `error`
//! event as the very first event is an upstream error before the first byte (a plain HTTP error,
//! retryable like any other); later it is passed on, and the upstream's `response.failed` ends
//! the stream.

use crate::lines::SseEvents;
use crate::stream::LineDecoder;
use bytes::Bytes;
use scira2api_types::Error;
use serde_json::Value;
use std::collections::VecDeque;

/// The final events of a Responses stream.
const FINAL: &[&str] = &[
    "response.completed",
    "response.incomplete",
    "response.failed",
];

/// Passes a native Responses stream through (see the module docs).
pub(crate) struct ResponsesStreamDecoder {
    events: SseEvents,
    /// The client's model name, when the upstream's differs.
    model: Option<String>,
    saw_event: bool,
    done: bool,
}

impl ResponsesStreamDecoder {
    /// A decoder that writes `external` as the model when it differs from `internal`.
    pub(crate) fn new(external: &str, internal: &str) -> Self {
        ResponsesStreamDecoder {
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
        if trimmed == b"[DONE]" {
            return Ok(self.done);
        }
        let mut v: Value = serde_json::from_slice(trimmed).map_err(|_| {
            let snippet: String = String::from_utf8_lossy(trimmed).chars().take(120).collect();
            Error::upstream(format!(
                "the upstream Responses stream sent an event that is not valid JSON: `{snippet}`; the answer is incomplete"
            ))
        })?;
        let kind = v["type"].as_str().unwrap_or_default().to_owned();
        if kind == "error" && !self.saw_event {
            let message = v["message"].as_str().unwrap_or("error").to_owned();
            return Err(Error::upstream_api(502, data, message, None));
        }
        self.saw_event = true;
        let rewritten = match (&self.model, v.get_mut("response")) {
            (Some(m), Some(r)) if r.get("model").is_some() => {
                r["model"] = Value::String(m.clone());
                Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
            }
            _ => Bytes::copy_from_slice(trimmed),
        };
        let mut frame = Vec::with_capacity(rewritten.len() + kind.len() + 16);
        frame.extend_from_slice(b"event: ");
        frame.extend_from_slice(kind.as_bytes());
        frame.extend_from_slice(b"\ndata: ");
        frame.extend_from_slice(&rewritten);
        frame.extend_from_slice(b"\n\n");
        out.push_back(Bytes::from(frame));
        if FINAL.contains(&kind.as_str()) {
            self.done = true;
            return Ok(true);
        }
        Ok(false)
    }
}

impl LineDecoder for ResponsesStreamDecoder {
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
        if self.done {
            Ok(())
        } else {
            Err(Error::upstream(
                "the upstream Responses stream ended before its final event (response.completed, .incomplete or .failed); the answer is incomplete",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &str) -> (Vec<String>, Result<(), Error>) {
        let mut d = ResponsesStreamDecoder::new("client", "internal");
        let mut out = VecDeque::new();
        for line in body.split('\n') {
            match d.line(Bytes::copy_from_slice(line.as_bytes()), &mut out) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return (Vec::new(), Err(e)),
            }
        }
        let end = if d.done { Ok(()) } else { d.end(&mut out) };
        let frames = out
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        (frames, end)
    }

    #[test]
    fn passes_events_through_with_the_model_rewritten() {
        let body = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"model\":\"internal\"}}\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"hi\"}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"model\":\"internal\"}}\n\n";
        let (frames, end) = run(body);
        assert!(end.is_ok());
        assert_eq!(frames.len(), 3);
        assert!(frames[0].starts_with("event: response.created\ndata: {"));
        assert!(frames[0].contains("\"model\":\"client\"") && !frames[0].contains("internal"));
        assert!(frames[1].contains("\"delta\":\"hi\""));
        assert!(frames[2].starts_with("event: response.completed\n"));
    }

    #[test]
    fn a_cut_or_a_first_error_is_an_error() {
        let (_, end) = run("data: {\"type\":\"response.created\",\"response\":{}}\n\n");
        assert!(
            end.unwrap_err()
                .to_string()
                .contains("before its final event")
        );
        let (_, end) = run("data: {\"type\":\"error\",\"message\":\"nope\"}\n\n");
        assert_eq!(end.unwrap_err().status(), 502);
        let (_, end) = run("data: {not json\n\n");
        assert!(end.is_err());
    }
}
