//! From Scira events to an OpenAI answer: streamed chunks or one completion.
//!
//! The rules (see `shared/fixtures/scira/*/README.md`): text and reasoning deltas are
//! concatenated in order across parts and steps; the final finish gives `finish_reason`
//! (`content-filter` → `content_filter`; `tool-calls`, `error`, `other` or none → `stop`; step
//! finishes are never final) and usage; an error anywhere makes the whole answer an error — the
//! text received before it is kept, but the answer never ends like a success; and a body that
//! ends without its finish is an error too.

use super::events::{SciraEvent, SciraParser};
use crate::stream::LineDecoder;
use bytes::Bytes;
use scira2api_types::{ChunkEncoder, Completion, Error, Usage};
use std::collections::VecDeque;

/// OpenAI's finish reason for Scira's.
pub(crate) fn finish_reason(scira: Option<&str>) -> &'static str {
    match scira {
        Some("length") => "length",
        Some("content-filter") => "content_filter",
        _ => "stop",
    }
}

/// The error for a Scira stream that reported a failure after it started.
fn stream_error(text: &str) -> Error {
    Error::Upstream {
        status: 502,
        kind: "upstream_error",
        code: "upstream_error",
        message: format!("Scira reported an error while answering: {text}"),
        retry_after: None,
        retryable: true,
    }
}

fn incomplete() -> Error {
    Error::upstream("the Scira stream ended before its finish event; the answer is incomplete")
}

/// What one line changed about the answer.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing to emit.
    Nothing,
    /// Answer text.
    Content(String),
    /// Reasoning text.
    Reasoning(String),
    /// The answer is complete.
    Finished {
        reason: &'static str,
        usage: Option<Usage>,
    },
    /// The answer failed; usage is what Scira reported for it, if anything.
    Failed { error: Error, usage: Option<Usage> },
}

/// The state of one Scira answer being read.
#[derive(Debug, Default)]
pub(crate) struct SciraAnswer {
    parser: SciraParser,
    /// The first in-stream error; the rest of the body is read only for its usage.
    error: Option<String>,
    /// At least one line has been read (the format is known).
    pub(crate) primed: bool,
}

impl SciraAnswer {
    fn on_event(&mut self, ev: SciraEvent) -> Step {
        match ev {
            SciraEvent::Text(t) if self.error.is_none() && !t.is_empty() => Step::Content(t),
            SciraEvent::Reasoning(t) if self.error.is_none() && !t.is_empty() => Step::Reasoning(t),
            SciraEvent::Error(e) => {
                if self.error.is_none() {
                    self.error = Some(e);
                }
                Step::Nothing
            }
            SciraEvent::Finish { reason, usage } => match &self.error {
                Some(e) => Step::Failed {
                    error: stream_error(e),
                    usage,
                },
                None => Step::Finished {
                    reason: finish_reason(reason.as_deref()),
                    usage,
                },
            },
            SciraEvent::Done => self.ended_early(),
            _ => Step::Nothing,
        }
    }

    /// Reads one line.
    pub(crate) fn line(&mut self, line: Bytes) -> Step {
        match self.parser.line(line) {
            Ok(ev) => {
                self.primed |= self.parser.format().is_some();
                self.on_event(ev)
            }
            Err(error) => Step::Failed { error, usage: None },
        }
    }

    /// The body ended (after every line was read).
    pub(crate) fn end(&mut self) -> Step {
        match self.parser.end() {
            Ok(SciraEvent::Skip) => {}
            Ok(ev) => {
                let step = self.on_event(ev);
                if !matches!(step, Step::Nothing) {
                    return step;
                }
            }
            Err(error) => return Step::Failed { error, usage: None },
        }
        self.ended_early()
    }

    /// The body ended (or said `[DONE]`) without a finish: the error it reported, or "incomplete".
    fn ended_early(&self) -> Step {
        Step::Failed {
            error: self
                .error
                .as_deref()
                .map(stream_error)
                .unwrap_or_else(incomplete),
            usage: None,
        }
    }
}

/// Streams a Scira answer as OpenAI chunks.
pub(crate) struct SciraStreamDecoder {
    answer: SciraAnswer,
    enc: ChunkEncoder,
    role_sent: bool,
}

impl SciraStreamDecoder {
    pub(crate) fn new(enc: ChunkEncoder) -> Self {
        SciraStreamDecoder {
            answer: SciraAnswer::default(),
            enc,
            role_sent: false,
        }
    }

    fn role(&mut self, out: &mut VecDeque<Bytes>) {
        if !self.role_sent {
            self.role_sent = true;
            out.push_back(self.enc.role());
        }
    }

    fn step(&mut self, step: Step, out: &mut VecDeque<Bytes>) -> Result<bool, Error> {
        match step {
            Step::Nothing => Ok(false),
            Step::Content(t) => {
                self.role(out);
                out.push_back(self.enc.content(&t));
                Ok(false)
            }
            Step::Reasoning(t) => {
                self.role(out);
                out.push_back(self.enc.reasoning(&t));
                Ok(false)
            }
            Step::Finished { reason, usage } => {
                self.role(out);
                out.push_back(self.enc.finish(reason));
                if let Some(frame) = usage.map(|u| self.enc.usage(&u)) {
                    out.push_back(frame);
                }
                Ok(true)
            }
            Step::Failed { error, usage } => {
                if let Some(frame) = usage.map(|u| self.enc.usage(&u)) {
                    out.push_back(frame);
                }
                Err(error)
            }
        }
    }
}

impl LineDecoder for SciraStreamDecoder {
    fn line(&mut self, line: Bytes, out: &mut VecDeque<Bytes>) -> Result<bool, Error> {
        let step = self.answer.line(line);
        self.step(step, out)
    }

    fn end(&mut self, out: &mut VecDeque<Bytes>) -> Result<(), Error> {
        let step = self.answer.end();
        self.step(step, out).map(|_| ())
    }

    fn primed(&self) -> bool {
        self.answer.primed
    }
}

/// Reads a whole Scira body into one completion.
pub(crate) fn collect(body: &[u8]) -> Result<Completion, Error> {
    let mut answer = SciraAnswer::default();
    let mut content = String::new();
    let mut reasoning: Option<String> = None;
    let mut lines = body.split(|&b| b == b'\n').peekable();
    let mut step = Step::Nothing;
    while let Some(line) = lines.next() {
        // The last piece after a final `\n` is empty; a last line without `\n` still counts.
        if lines.peek().is_none() && line.is_empty() {
            break;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        step = answer.line(Bytes::copy_from_slice(line));
        match step {
            Step::Content(ref t) => content.push_str(t),
            Step::Reasoning(ref t) => reasoning.get_or_insert_with(String::new).push_str(t),
            Step::Nothing => {}
            Step::Finished { .. } | Step::Failed { .. } => break,
        }
    }
    if matches!(step, Step::Nothing | Step::Content(_) | Step::Reasoning(_)) {
        step = answer.end();
    }
    match step {
        Step::Finished { reason, usage } => Ok(Completion {
            content,
            reasoning_content: reasoning,
            finish_reason: reason.to_owned(),
            usage,
        }),
        Step::Failed { error, .. } => Err(error),
        _ => Err(incomplete()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_200_kb_tool_result_line_streams_through() {
        let big = "x".repeat(200 * 1024);
        let body = format!(
            "data: {{\"type\":\"tool-output-available\",\"toolCallId\":\"c\",\"output\":{{\"text\":\"{big}\"}}}}\n\ndata: {{\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"ok\"}}\n\ndata: {{\"type\":\"finish\"}}\n\n"
        );
        let mut lines = crate::lines::LineBuffer::new(1 << 20);
        let mut dec = SciraStreamDecoder::new(ChunkEncoder::new("m", false));
        let mut out = VecDeque::new();
        let mut done = false;
        // Fed in 4 KB pieces, as a socket would deliver it.
        for piece in body.as_bytes().chunks(4096) {
            lines.push(piece);
            while let Some(line) = lines.next_line().unwrap() {
                done |= dec.line(line, &mut out).unwrap();
            }
        }
        assert!(done);
        let text: Vec<String> = out
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        assert_eq!(text.len(), 3, "role, content, finish");
        assert!(text[1].contains("\"content\":\"ok\""));
        assert!(text[2].contains("\"finish_reason\":\"stop\""));
    }

    #[test]
    fn finish_reason_mapping() {
        assert_eq!(finish_reason(Some("stop")), "stop");
        assert_eq!(finish_reason(Some("length")), "length");
        assert_eq!(finish_reason(Some("content-filter")), "content_filter");
        assert_eq!(finish_reason(Some("tool-calls")), "stop");
        assert_eq!(finish_reason(Some("other")), "stop");
        assert_eq!(finish_reason(None), "stop");
    }

    #[test]
    fn collects_and_fails_properly() {
        let c = collect(b"g:\"r\"\n0:\"a\"\n0:\"b\"\ne:{\"finishReason\":\"tool-calls\"}\nd:{\"finishReason\":\"length\",\"usage\":{\"promptTokens\":1,\"completionTokens\":2}}\n").unwrap();
        assert_eq!(c.content, "ab");
        assert_eq!(c.reasoning_content.as_deref(), Some("r"));
        assert_eq!(c.finish_reason, "length");
        assert_eq!(c.usage, Some(Usage::new(1, 2)));
        let e = collect(b"0:\"a\"\n").unwrap_err();
        assert!(e.to_string().contains("before its finish"), "{e}");
        let e = collect(b"0:\"a\"\n3:\"Oops\"\nd:{\"finishReason\":\"error\"}\n").unwrap_err();
        assert!(e.to_string().contains("Oops"), "{e}");
        // The finish line without a trailing newline still counts.
        assert!(collect(b"0:\"a\"\nd:{\"finishReason\":\"stop\"}").is_ok());
        let e = collect(b"").unwrap_err();
        assert!(e.to_string().contains("before its finish"), "{e}");
    }
}
