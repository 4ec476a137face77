//! Reading Scira's answer stream, in whichever of its formats it arrives.
//!
//! The format is told from the body itself (Scira sends no telling headers): a first line that
//! starts with `data:` is the AI SDK 5/6 UI message stream over SSE; one that matches
//! `^[0-9a-k]:` is the AI SDK 4 data stream. Every payload is decoded with a JSON parser.

use crate::lines::SseEvents;
use bytes::Bytes;
use scira2api_types::{Error, Usage};
use serde::Deserialize;

/// One thing Scira said that matters for the OpenAI answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SciraEvent {
    /// Answer text.
    Text(String),
    /// Reasoning text.
    Reasoning(String),
    /// An error inside the stream (`error` event, `3:` line).
    Error(String),
    /// The final finish of the whole message, with Scira's reason and usage when given.
    Finish {
        reason: Option<String>,
        usage: Option<Usage>,
    },
    /// `data: [DONE]` (v5/v6).
    Done,
    /// Web sources: a `source-url` part, or the results of a search tool's output (URL and
    /// title each).
    Sources(Vec<(String, Option<String>)>),
    /// A new step begins (`start-step`).
    StepStart,
    /// `reset-step` (`ai` 7): the current step's parts are void.
    ResetStep,
    /// Anything that carries nothing for the answer (metadata, steps, tools, data parts).
    Skip,
}

/// Which protocol the body speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// AI SDK 4 data stream.
    DataStream,
    /// AI SDK 5/6 UI message stream over SSE.
    UiMessageSse,
}

/// Turns lines of a Scira body into [`SciraEvent`]s.
#[derive(Debug, Default)]
pub(crate) struct SciraParser {
    format: Option<Format>,
    sse: SseEvents,
    /// Events of a type this adapter does not know (a newer `ai` release), skipped.
    pub(crate) unknown: u32,
}

#[derive(Deserialize)]
struct UiChunk<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    delta: Option<String>,
    #[serde(default, rename = "errorText")]
    error_text: Option<String>,
    #[serde(default, rename = "finishReason")]
    finish_reason: Option<String>,
    #[serde(default, rename = "messageMetadata")]
    metadata: Option<UiMetadata>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    title: Option<String>,
    /// A tool's output, left unparsed unless it holds search results (it can be 150 KB).
    #[serde(default, borrow)]
    output: Option<&'a serde_json::value::RawValue>,
}

/// The part of a search tool's output that names its sources:
/// `{"searches":[{"results":[{"url","title"}]}]}` (Scira's `web_search`, and the others that
/// share its shape).
#[derive(Deserialize)]
struct SearchOutput {
    #[serde(default)]
    searches: Vec<Search>,
}

#[derive(Deserialize)]
struct Search {
    #[serde(default)]
    results: Vec<SearchResult>,
}

#[derive(Deserialize)]
struct SearchResult {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    title: Option<String>,
}

/// The sources in a tool output, when it is a search result list.
fn search_sources(output: &str) -> Option<Vec<(String, Option<String>)>> {
    if !output.contains("\"searches\"") {
        return None;
    }
    let out: SearchOutput = serde_json::from_str(output).ok()?;
    let sources: Vec<_> = out
        .searches
        .into_iter()
        .flat_map(|s| s.results)
        .filter_map(|r| Some((r.url?, r.title)))
        .take(scira2api_types::MAX_CITATIONS)
        .collect();
    (!sources.is_empty()).then_some(sources)
}

/// An AI SDK 4 `h:` source part.
#[derive(Deserialize)]
struct V4Source {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    title: Option<String>,
}

/// An AI SDK 4 `a:` tool result.
#[derive(Deserialize)]
struct V4ToolResult<'a> {
    #[serde(default, borrow)]
    result: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct UiMetadata {
    #[serde(default, rename = "inputTokens")]
    input: Option<u64>,
    #[serde(default, rename = "outputTokens")]
    output: Option<u64>,
    #[serde(default, rename = "totalTokens")]
    total: Option<u64>,
}

#[derive(Deserialize)]
struct V4Finish {
    #[serde(default, rename = "finishReason")]
    finish_reason: Option<String>,
    #[serde(default)]
    usage: Option<V4Usage>,
}

#[derive(Deserialize)]
struct V4Usage {
    #[serde(default, rename = "promptTokens")]
    prompt: Option<u64>,
    #[serde(default, rename = "completionTokens")]
    completion: Option<u64>,
}

fn bad_payload(what: &str, e: impl std::fmt::Display, payload: &[u8]) -> Error {
    let snippet: String = String::from_utf8_lossy(payload).chars().take(120).collect();
    Error::upstream(format!("Scira sent a malformed {what} ({e}): {snippet}"))
}

impl SciraParser {
    /// The detected format, once the first non-empty line has been seen.
    pub(crate) fn format(&self) -> Option<Format> {
        self.format
    }

    /// Reads one line (without `\n`).
    pub(crate) fn line(&mut self, line: Bytes) -> Result<SciraEvent, Error> {
        let format = match self.format {
            Some(f) => f,
            None => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    return Ok(SciraEvent::Skip);
                }
                // An SSE comment line can open the UI message stream.
                let f = if line.starts_with(b":") {
                    Format::UiMessageSse
                } else {
                    detect(&line)?
                };
                self.format = Some(f);
                f
            }
        };
        match format {
            Format::UiMessageSse => match self.sse.line(line) {
                Some(data) => self.ui_event(&data),
                None => Ok(SciraEvent::Skip),
            },
            Format::DataStream => v4_line(&line),
        }
    }

    /// The body ended: an SSE event without its closing blank line still counts.
    pub(crate) fn end(&mut self) -> Result<SciraEvent, Error> {
        match (self.format, self.sse.take()) {
            (Some(Format::UiMessageSse), Some(data)) => self.ui_event(&data),
            _ => Ok(SciraEvent::Skip),
        }
    }

    fn ui_event(&mut self, data: &[u8]) -> Result<SciraEvent, Error> {
        let ev = ui_event(data)?;
        if let UiKind::Unknown = ev.1 {
            self.unknown += 1;
        }
        Ok(ev.0)
    }
}

/// Whether an event's type was one this adapter knows.
enum UiKind {
    Known,
    Unknown,
}

/// The UI message stream's chunk types that carry nothing for the answer but are known (AI SDK
/// 5, 6 and 7), so only truly new ones are counted as unknown.
const KNOWN_SILENT: &[&str] = &[
    "start",
    "finish-step",
    "text-start",
    "text-end",
    "reasoning-start",
    "reasoning-end",
    "tool-input-start",
    "tool-input-delta",
    "tool-input-available",
    "tool-input-error",
    "tool-output-error",
    "tool-output-denied",
    "tool-approval-request",
    "tool-approval-response",
    "source-document",
    "file",
    "reasoning-file",
    "message-metadata",
    "custom",
    "steering-message",
];

fn detect(line: &[u8]) -> Result<Format, Error> {
    if line.starts_with(b"data:") {
        return Ok(Format::UiMessageSse);
    }
    if line.len() >= 2 && line[1] == b':' && matches!(line[0], b'0'..=b'9' | b'a'..=b'k') {
        return Ok(Format::DataStream);
    }
    let text = String::from_utf8_lossy(line);
    let lower = text.trim_start().to_ascii_lowercase();
    let what = if lower.starts_with("<!doctype") || lower.starts_with("<html") {
        "an HTML page (blocked by bot protection or a firewall, or a wrong BASE_URL?)".to_owned()
    } else {
        format!("`{}`", text.chars().take(120).collect::<String>())
    };
    Err(Error::Upstream {
        status: 502,
        kind: "upstream_error",
        code: "upstream_blocked",
        message: format!("Scira answered 200 with something that is not a Scira stream: {what}"),
        retry_after: None,
        retryable: false,
    })
}

fn ui_event(data: &[u8]) -> Result<(SciraEvent, UiKind), Error> {
    let trimmed = data.trim_ascii();
    if trimmed == b"[DONE]" {
        return Ok((SciraEvent::Done, UiKind::Known));
    }
    if trimmed.is_empty() {
        return Ok((SciraEvent::Skip, UiKind::Known));
    }
    let chunk: UiChunk =
        serde_json::from_slice(trimmed).map_err(|e| bad_payload("stream event", e, trimmed))?;
    let ev = match chunk.kind.as_ref() {
        "text-delta" => SciraEvent::Text(chunk.delta.unwrap_or_default()),
        "reasoning-delta" => SciraEvent::Reasoning(chunk.delta.unwrap_or_default()),
        // The text is shown as it is; its meaning is never parsed out of it.
        "error" => SciraEvent::Error(
            chunk
                .error_text
                .unwrap_or_else(|| "unknown error".to_owned()),
        ),
        "abort" => SciraEvent::Error("Scira aborted the answer".to_owned()),
        "finish" => SciraEvent::Finish {
            reason: chunk.finish_reason,
            usage: chunk.metadata.and_then(|m| match (m.input, m.output) {
                (Some(p), Some(c)) => Some(Usage {
                    prompt_tokens: p,
                    completion_tokens: c,
                    total_tokens: m.total.unwrap_or(p + c),
                }),
                _ => None,
            }),
        },
        "source-url" => match chunk.url {
            Some(url) => SciraEvent::Sources(vec![(url, chunk.title)]),
            None => SciraEvent::Skip,
        },
        "tool-output-available" => chunk
            .output
            .and_then(|o| search_sources(o.get()))
            .map_or(SciraEvent::Skip, SciraEvent::Sources),
        "start-step" => SciraEvent::StepStart,
        "reset-step" => SciraEvent::ResetStep,
        k if k.starts_with("data-") || KNOWN_SILENT.contains(&k) => SciraEvent::Skip,
        _ => return Ok((SciraEvent::Skip, UiKind::Unknown)),
    };
    Ok((ev, UiKind::Known))
}

fn v4_line(line: &[u8]) -> Result<SciraEvent, Error> {
    if line.is_empty() {
        return Ok(SciraEvent::Skip);
    }
    let Some((code, payload)) = line
        .split_first()
        .filter(|(_, rest)| rest.first() == Some(&b':'))
    else {
        return Err(bad_payload("data stream line", "no `<code>:` prefix", line));
    };
    let payload = &payload[1..];
    let text =
        |what| serde_json::from_slice::<String>(payload).map_err(|e| bad_payload(what, e, payload));
    Ok(match code {
        b'0' => SciraEvent::Text(text("text line")?),
        b'g' => SciraEvent::Reasoning(text("reasoning line")?),
        b'3' => SciraEvent::Error(text("error line")?),
        b'h' => match serde_json::from_slice::<V4Source>(payload) {
            Ok(V4Source {
                url: Some(url),
                title,
            }) => SciraEvent::Sources(vec![(url, title)]),
            _ => SciraEvent::Skip,
        },
        b'a' => serde_json::from_slice::<V4ToolResult>(payload)
            .ok()
            .and_then(|r| r.result)
            .and_then(|r| search_sources(r.get()))
            .map_or(SciraEvent::Skip, SciraEvent::Sources),
        b'f' => SciraEvent::StepStart,
        b'd' => {
            let f: V4Finish = serde_json::from_slice(payload)
                .map_err(|e| bad_payload("finish line", e, payload))?;
            SciraEvent::Finish {
                reason: f.finish_reason,
                usage: f.usage.and_then(|u| match (u.prompt, u.completion) {
                    (Some(p), Some(c)) => Some(Usage::new(p, c)),
                    _ => None,
                }),
            }
        }
        _ => SciraEvent::Skip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Vec<SciraEvent> {
        let mut p = SciraParser::default();
        let mut out: Vec<SciraEvent> = body
            .split('\n')
            .map(|l| p.line(Bytes::copy_from_slice(l.as_bytes())).unwrap())
            .filter(|e| *e != SciraEvent::Skip)
            .collect();
        out.push(p.end().unwrap());
        out.retain(|e| *e != SciraEvent::Skip);
        out
    }

    #[test]
    fn v4_lines_are_json_decoded() {
        let ev = parse(
            "f:{\"messageId\":\"m\"}\ng:\"think \\\"x\\\"\"\n0:\"a\\nb\\u0001\"\n3:\"bad\"\nd:{\"finishReason\":\"stop\",\"usage\":{\"promptTokens\":3,\"completionTokens\":4}}",
        );
        assert_eq!(
            ev,
            [
                SciraEvent::StepStart,
                SciraEvent::Reasoning("think \"x\"".into()),
                SciraEvent::Text("a\nb\u{1}".into()),
                SciraEvent::Error("bad".into()),
                SciraEvent::Finish {
                    reason: Some("stop".into()),
                    usage: Some(Usage::new(3, 4))
                },
            ]
        );
    }

    #[test]
    fn ui_stream_events() {
        let ev = parse(
            "data: {\"type\":\"data-x\",\"data\":{}}\n\ndata: {\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"hi\"}\n\ndata: {\"type\":\"finish\",\"finishReason\":\"length\",\"messageMetadata\":{\"inputTokens\":1,\"outputTokens\":2,\"totalTokens\":3}}\n\ndata: [DONE]\n\n",
        );
        assert_eq!(
            ev,
            [
                SciraEvent::Text("hi".into()),
                SciraEvent::Finish {
                    reason: Some("length".into()),
                    usage: Some(Usage::new(1, 2))
                },
                SciraEvent::Done,
            ]
        );
    }

    #[test]
    fn html_and_garbage_are_errors() {
        let mut p = SciraParser::default();
        let e = p.line(Bytes::from_static(b"<!DOCTYPE html>")).unwrap_err();
        assert_eq!(e.code(), Some("upstream_blocked"));
        let mut p = SciraParser::default();
        assert!(p.line(Bytes::from_static(b"hello")).is_err());
        let mut p = SciraParser::default();
        p.line(Bytes::from_static(b"0:\"x\"")).unwrap();
        assert!(p.line(Bytes::from_static(b"0:not json")).is_err());
    }
}
