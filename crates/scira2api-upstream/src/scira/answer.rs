//! From Scira events to an OpenAI answer: streamed chunks or one completion.
//!
//! The rules (see `tests/fixtures/scira/*/README.md`): text and reasoning deltas are
//! concatenated in order across parts and steps; the final finish gives `finish_reason`
//! (`content-filter` → `content_filter`; `interrupted` (`ai` 7) → `length`, the answer was cut
//! short; `tool-calls`, `error`, `other` or none → `stop`; step finishes are never final) and
//! usage; an error anywhere makes the whole answer an error — the text received before it is
//! kept, but the answer never ends like a success; and a body that ends without its finish is an
//! error too. Web sources (`source-url` parts, search tools' results) become citations of the
//! finished answer (unless turned off); a `reset-step` drops the current step's text from a
//! non-stream answer (a stream has already sent it). Unknown event types are skipped and
//! counted at debug level.

use super::events::{SciraEvent, SciraParser};
use crate::stream::LineDecoder;
use bytes::Bytes;
use scira2api_types::{ChunkEncoder, Citation, Completion, Error, MAX_CITATIONS, Usage, cite};
use std::collections::VecDeque;

/// OpenAI's finish reason for Scira's.
pub(crate) fn finish_reason(scira: Option<&str>) -> &'static str {
    match scira {
        Some("length") => "length",
        Some("content-filter") => "content_filter",
        Some("interrupted") => "length",
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
    /// A new step begins.
    Boundary,
    /// The current step's text is void (`reset-step`).
    Voided,
}

/// Raw sources kept per answer before de-duplication (a bound on memory, several times
/// [`MAX_CITATIONS`] since search results repeat).
const SOURCES_KEPT: usize = 4 * MAX_CITATIONS;

/// The state of one Scira answer being read.
#[derive(Debug, Default)]
pub(crate) struct SciraAnswer {
    parser: SciraParser,
    /// The first in-stream error; the rest of the body is read only for its usage.
    error: Option<String>,
    /// At least one line has been read (the format is known).
    pub(crate) primed: bool,
    /// Whether sources become citations (`SCIRA_CITATIONS`).
    citing: bool,
    /// The sources seen, in order, at most [`SOURCES_KEPT`].
    sources: Vec<(String, Option<String>)>,
}

impl SciraAnswer {
    /// An answer whose sources become citations when `citing`.
    pub(crate) fn new(citing: bool) -> Self {
        SciraAnswer {
            citing,
            ..SciraAnswer::default()
        }
    }

    /// The citations of the finished answer `text` (none when citing is off).
    pub(crate) fn citations(&self, text: &str) -> Vec<Citation> {
        if !self.citing {
            return Vec::new();
        }
        if self.parser.unknown > 0 {
            log::debug!(
                "scira: {} event(s) of unknown types skipped",
                self.parser.unknown
            );
        }
        cite(text, &self.sources)
    }

    fn on_event(&mut self, ev: SciraEvent) -> Step {
        match ev {
            SciraEvent::Sources(s) => {
                if self.citing {
                    let room = SOURCES_KEPT.saturating_sub(self.sources.len());
                    self.sources.extend(s.into_iter().take(room));
                }
                Step::Nothing
            }
            SciraEvent::StepStart if self.error.is_none() => Step::Boundary,
            SciraEvent::ResetStep if self.error.is_none() => Step::Voided,
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

/// Answer text a stream keeps to place its citations (beyond it they cover the text).
const TEXT_KEPT: usize = 1 << 20;

/// Streams a Scira answer as OpenAI chunks.
pub(crate) struct SciraStreamDecoder {
    answer: SciraAnswer,
    enc: ChunkEncoder,
    role_sent: bool,
    /// The text so far (while it is within [`TEXT_KEPT`] bytes), and its length in characters.
    text: String,
    chars: usize,
    overflow: bool,
}

impl SciraStreamDecoder {
    pub(crate) fn new(enc: ChunkEncoder, citing: bool) -> Self {
        SciraStreamDecoder {
            answer: SciraAnswer::new(citing),
            enc,
            role_sent: false,
            text: String::new(),
            chars: 0,
            overflow: false,
        }
    }

    fn citations(&self) -> Vec<Citation> {
        if !self.overflow {
            return self.answer.citations(&self.text);
        }
        let mut c = self.answer.citations("");
        for x in &mut c {
            x.end_index = self.chars;
        }
        c
    }

    fn role(&mut self, out: &mut VecDeque<Bytes>) {
        if !self.role_sent {
            self.role_sent = true;
            out.push_back(self.enc.role());
        }
    }

    fn step(&mut self, step: Step, out: &mut VecDeque<Bytes>) -> Result<bool, Error> {
        match step {
            Step::Nothing | Step::Boundary => Ok(false),
            Step::Voided => {
                log::debug!("scira: reset-step in a stream: its text was already sent");
                Ok(false)
            }
            Step::Content(t) => {
                self.role(out);
                if self.answer.citing {
                    self.chars += t.chars().count();
                    if self.overflow || self.text.len() + t.len() > TEXT_KEPT {
                        self.overflow = true;
                        self.text = String::new();
                    } else {
                        self.text.push_str(&t);
                    }
                }
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
                let citations = self.citations();
                out.push_back(self.enc.finish_citing(reason, &citations));
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

/// Reads a whole Scira body into one completion (with citations when `citing`).
pub(crate) fn collect(body: &[u8], citing: bool) -> Result<Completion, Error> {
    let mut answer = SciraAnswer::new(citing);
    let mut content = String::new();
    // Where the current step's text began, for `reset-step`.
    let mut step_start = (0usize, 0usize);
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
            Step::Boundary => {
                step_start = (content.len(), reasoning.as_ref().map_or(0, String::len));
            }
            Step::Voided => {
                content.truncate(step_start.0);
                if let Some(r) = &mut reasoning {
                    r.truncate(step_start.1);
                }
            }
            Step::Nothing => {}
            Step::Finished { .. } | Step::Failed { .. } => break,
        }
    }
    if !matches!(step, Step::Finished { .. } | Step::Failed { .. }) {
        step = answer.end();
    }
    match step {
        Step::Finished { reason, usage } => Ok(Completion {
            annotations: answer.citations(&content),
            content,
            reasoning_content: reasoning.filter(|r| !r.is_empty()),
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
        let mut dec = SciraStreamDecoder::new(ChunkEncoder::new("m", false), true);
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
        let c = collect(b"g:\"r\"\n0:\"a\"\n0:\"b\"\ne:{\"finishReason\":\"tool-calls\"}\nd:{\"finishReason\":\"length\",\"usage\":{\"promptTokens\":1,\"completionTokens\":2}}\n", true).unwrap();
        assert_eq!(c.content, "ab");
        assert_eq!(c.reasoning_content.as_deref(), Some("r"));
        assert_eq!(c.finish_reason, "length");
        assert_eq!(c.usage, Some(Usage::new(1, 2)));
        let e = collect(b"0:\"a\"\n", true).unwrap_err();
        assert!(e.to_string().contains("before its finish"), "{e}");
        let e = collect(
            b"0:\"a\"\n3:\"Oops\"\nd:{\"finishReason\":\"error\"}\n",
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("Oops"), "{e}");
        // The finish line without a trailing newline still counts.
        assert!(collect(b"0:\"a\"\nd:{\"finishReason\":\"stop\"}", true).is_ok());
        let e = collect(b"", true).unwrap_err();
        assert!(e.to_string().contains("before its finish"), "{e}");
    }

    fn fixture(v: &str, name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../tests/fixtures/scira/{v}/{name}.stream",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn sources_become_citations_in_every_format() {
        for v in ["v4", "v5", "v6"] {
            let c = collect(&fixture(v, "tool_step"), true).unwrap();
            let urls: Vec<&str> = c.annotations.iter().map(|a| a.url.as_str()).collect();
            assert_eq!(
                urls,
                [
                    "https://scira.ai/",
                    "https://github.com/zaidmukaddam/scira",
                    "https://scira.ai/about"
                ],
                "{v}: the web_search results (and the source-url part), once each"
            );
            let first = &c.annotations[0];
            assert_eq!(first.title.as_deref(), Some("Scira AI"), "{v}");
            let chars: Vec<char> = c.content.chars().collect();
            let span: String = chars[first.start_index..first.end_index].iter().collect();
            assert_eq!(
                span, "[scira.ai](https://scira.ai/)",
                "{v}: the link that marks it"
            );
            assert_eq!(
                c.annotations[1].end_index,
                chars.len(),
                "{v}: unmarked: the whole text"
            );
            assert!(
                collect(&fixture(v, "tool_step"), false)
                    .unwrap()
                    .annotations
                    .is_empty()
            );
            assert!(
                collect(&fixture(v, "basic"), true)
                    .unwrap()
                    .annotations
                    .is_empty()
            );

            // Streamed: the same citations on the finish chunk.
            let mut dec = SciraStreamDecoder::new(ChunkEncoder::new("m", false), true);
            let mut out = VecDeque::new();
            let body = fixture(v, "tool_step");
            for line in body.split(|&b| b == b'\n') {
                if dec.line(Bytes::copy_from_slice(line), &mut out).unwrap() {
                    break;
                }
            }
            let finish = out
                .iter()
                .find(|f| {
                    let p = b"\"finish_reason\":\"";
                    f.windows(p.len()).any(|w| w == p)
                })
                .expect("a finish chunk");
            let chunk: serde_json::Value =
                serde_json::from_slice(&finish[6..finish.len() - 2]).unwrap();
            let anns = chunk["choices"][0]["delta"]["annotations"]
                .as_array()
                .unwrap();
            assert_eq!(anns.len(), 3, "{v}");
            assert_eq!(anns[0]["type"], "url_citation");
            assert_eq!(anns[0]["url_citation"]["start_index"], first.start_index);
        }
    }

    #[test]
    fn newer_ai_releases_are_read_forward_compatibly() {
        // A comment line first, unknown chunk types, `interrupted`, and a reset step.
        let body = b": hello\n\ndata: {\"type\":\"start\"}\n\ndata: {\"type\":\"start-step\"}\n\ndata: {\"type\":\"text-delta\",\"id\":\"a\",\"delta\":\"draft\"}\n\ndata: {\"type\":\"reset-step\"}\n\ndata: {\"type\":\"start-step\"}\n\ndata: {\"type\":\"brand-new-chunk\",\"x\":1}\n\ndata: {\"type\":\"text-delta\",\"id\":\"b\",\"delta\":\"final\"}\n\ndata: {\"type\":\"finish\",\"finishReason\":\"interrupted\"}\n\ndata: [DONE]\n\n";
        let c = collect(body, true).unwrap();
        assert_eq!(c.content, "final", "the reset step's text is dropped");
        assert_eq!(c.finish_reason, "length");
    }
}
