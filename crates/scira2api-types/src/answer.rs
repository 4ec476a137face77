//! A complete answer in a form that can be rendered either way: as a `chat.completion` body or
//! as a `chat.completion.chunk` stream.
//!
//! The response cache stores answers in this form, so a streamed answer can serve a non-stream
//! request and the other way round; token accounting reads the answer's text from it.

use crate::response::{DONE_FRAME, new_completion_id, unix_now};
use crate::{Citation, Usage};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One tool call of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCall {
    /// The call id (`call_...`).
    pub id: String,
    /// The function name.
    pub name: String,
    /// The JSON arguments, as text.
    pub arguments: String,
}

/// One choice of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnswerChoice {
    /// The choice index.
    pub index: u32,
    /// The answer text.
    pub content: Option<String>,
    /// The reasoning text.
    pub reasoning_content: Option<String>,
    /// Tool calls, in index order.
    pub tool_calls: Vec<ToolCall>,
    /// The finish reason; `None` when the answer never finished.
    pub finish_reason: Option<String>,
    /// The web sources the text cites (`url_citation` annotations), kept so that a replay
    /// cites them too.
    pub annotations: Vec<Citation>,
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    /// Choices in index order.
    pub choices: Vec<AnswerChoice>,
    /// Usage: the upstream's, or the gateway's estimate (then `usage_estimated`).
    pub usage: Option<Usage>,
    /// Whether `usage` was counted by the gateway rather than reported by the upstream.
    pub usage_estimated: bool,
    /// The upstream's `system_fingerprint`, kept so a replay looks like the original.
    pub system_fingerprint: Option<String>,
    /// The whole JSON body of an endpoint other than chat (embeddings, legacy completions),
    /// replayed byte for byte; `choices` is then empty.
    pub body: Option<bytes::Bytes>,
}

#[derive(Deserialize)]
struct FnIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ToolCallIn {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FnIn>,
}

#[derive(Deserialize, Default)]
struct MessageIn {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallIn>>,
    #[serde(default)]
    annotations: Option<Vec<AnnotationIn>>,
}

/// An annotation as read back: only `url_citation`s are kept.
#[derive(Deserialize)]
struct AnnotationIn {
    #[serde(default)]
    url_citation: Option<UrlCitationIn>,
}

#[derive(Deserialize)]
struct UrlCitationIn {
    url: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    start_index: usize,
    #[serde(default)]
    end_index: usize,
}

fn citations_in(a: Option<Vec<AnnotationIn>>) -> impl Iterator<Item = Citation> {
    a.unwrap_or_default()
        .into_iter()
        .filter_map(|a| a.url_citation)
        .map(|u| Citation {
            title: u.title.filter(|t| *t != u.url),
            url: u.url,
            start_index: u.start_index,
            end_index: u.end_index,
        })
}

#[derive(Deserialize)]
struct ChoiceIn {
    #[serde(default)]
    index: u32,
    #[serde(default, alias = "delta")]
    message: Option<MessageIn>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct BodyIn {
    #[serde(default)]
    choices: Option<Vec<ChoiceIn>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    system_fingerprint: Option<String>,
}

// The output shapes, with fields in the order OpenAI writes them (serde_json's `Value` would
// sort keys alphabetically), so that a replayed answer looks like the one first served.

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
    #[serde(skip_serializing_if = "<[Citation]>::is_empty")]
    annotations: &'a [Citation],
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: MessageOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct UsageOut<'a> {
    #[serde(flatten)]
    usage: &'a Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_source: Option<&'static str>,
}

#[derive(Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChoiceOut<'a>>,
    usage: Option<UsageOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
    #[serde(skip_serializing_if = "<[Citation]>::is_empty")]
    annotations: &'a [Citation],
}

#[derive(Serialize)]
struct ChunkChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
    choices: Vec<ChunkChoiceOut<'a>>,
    /// `None` leaves the field out; `Some(None)` writes `"usage": null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<UsageOut<'a>>>,
}

fn tool_calls_out(calls: &[ToolCall], with_index: bool) -> Vec<ToolCallOut<'_>> {
    calls
        .iter()
        .enumerate()
        .map(|(i, t)| ToolCallOut {
            index: with_index.then_some(i),
            id: &t.id,
            kind: "function",
            function: FunctionOut {
                name: &t.name,
                arguments: &t.arguments,
            },
        })
        .collect()
}

impl Answer {
    /// Reads a `chat.completion` body; `None` when it is not one.
    pub fn from_completion(json: &[u8]) -> Option<Answer> {
        let body: BodyIn = serde_json::from_slice(json).ok()?;
        let mut answer = Answer {
            choices: Vec::new(),
            usage: body.usage,
            usage_estimated: false,
            system_fingerprint: body.system_fingerprint,
            body: None,
        };
        for c in body.choices? {
            let m = c.message.unwrap_or_default();
            let tool_calls = m
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    let f = t.function.unwrap_or(FnIn {
                        name: None,
                        arguments: None,
                    });
                    ToolCall {
                        id: t.id.unwrap_or_default(),
                        name: f.name.unwrap_or_default(),
                        arguments: f.arguments.unwrap_or_default(),
                    }
                })
                .collect();
            answer.choices.push(AnswerChoice {
                index: c.index,
                content: m.content,
                reasoning_content: m.reasoning_content,
                tool_calls,
                finish_reason: c.finish_reason,
                annotations: citations_in(m.annotations).collect(),
            });
        }
        answer.choices.sort_by_key(|c| c.index);
        Some(answer)
    }

    /// Whether the answer is whole and worth keeping: at least one choice, every choice finished
    /// with text or tool calls.
    pub fn is_complete(&self) -> bool {
        !self.choices.is_empty()
            && self.choices.iter().all(|c| {
                c.finish_reason.is_some()
                    && (c.content.as_deref().is_some_and(|t| !t.is_empty())
                        || !c.tool_calls.is_empty())
            })
    }

    /// All answer text (content, reasoning, tool call names and arguments), for token counting.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.choices {
            for part in [&c.reasoning_content, &c.content].into_iter().flatten() {
                out.push_str(part);
            }
            for t in &c.tool_calls {
                out.push_str(&t.name);
                out.push_str(&t.arguments);
            }
        }
        out
    }

    /// Approximate memory held, in bytes.
    pub fn weight(&self) -> usize {
        64 + self.body.as_ref().map_or(0, bytes::Bytes::len)
            + self
                .choices
                .iter()
                .map(|c| {
                    96 + c.content.as_ref().map_or(0, String::len)
                        + c.reasoning_content.as_ref().map_or(0, String::len)
                        + c.tool_calls
                            .iter()
                            .map(|t| 48 + t.id.len() + t.name.len() + t.arguments.len())
                            .sum::<usize>()
                        + c.annotations
                            .iter()
                            .map(|a| 64 + a.url.len() + a.title.as_ref().map_or(0, String::len))
                            .sum::<usize>()
                })
                .sum::<usize>()
    }

    fn usage_out(&self) -> Option<UsageOut<'_>> {
        self.usage.as_ref().map(|usage| UsageOut {
            usage,
            usage_source: self.usage_estimated.then_some("estimated"),
        })
    }

    /// Renders a `chat.completion` body with a fresh id and time, for `model`, with fields in
    /// OpenAI's order.
    pub fn to_completion_json(&self, model: &str) -> Bytes {
        let id = new_completion_id();
        let body = CompletionOut {
            id: &id,
            object: "chat.completion",
            created: unix_now(),
            model,
            choices: self
                .choices
                .iter()
                .map(|c| ChoiceOut {
                    index: c.index,
                    message: MessageOut {
                        role: "assistant",
                        content: c.content.as_deref(),
                        refusal: None,
                        reasoning_content: c.reasoning_content.as_deref(),
                        tool_calls: tool_calls_out(&c.tool_calls, false),
                        annotations: &c.annotations,
                    },
                    logprobs: None,
                    finish_reason: c.finish_reason.as_deref(),
                })
                .collect(),
            usage: self.usage_out(),
            system_fingerprint: self.system_fingerprint.as_deref(),
        };
        // Plain strings and numbers: serialising cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// Renders the answer as a well-formed stream: per choice a role chunk, the reasoning, the
    /// content, the tool calls and the finish chunk; the usage chunk when asked (and known); and
    /// `data: [DONE]`. Fresh id and time.
    pub fn to_sse(&self, model: &str, include_usage: bool) -> Vec<Bytes> {
        let id = new_completion_id();
        let created = unix_now();
        let frame = |choices: Vec<ChunkChoiceOut<'_>>, usage: Option<UsageOut<'_>>| {
            let c = ChunkOut {
                id: &id,
                object: "chat.completion.chunk",
                created,
                model,
                system_fingerprint: self.system_fingerprint.as_deref(),
                choices,
                usage: include_usage.then_some(usage),
            };
            crate::response::sse_json_frame(&c)
        };
        let delta = |index: u32, delta: DeltaOut<'_>, finish: Option<&str>| {
            frame(
                vec![ChunkChoiceOut {
                    index,
                    delta,
                    logprobs: None,
                    finish_reason: finish,
                }],
                None,
            )
        };
        let mut out = Vec::new();
        for c in &self.choices {
            out.push(delta(
                c.index,
                DeltaOut {
                    role: Some("assistant"),
                    content: Some(""),
                    ..DeltaOut::default()
                },
                None,
            ));
            if let Some(r) = &c.reasoning_content {
                out.push(delta(
                    c.index,
                    DeltaOut {
                        reasoning_content: Some(r),
                        ..DeltaOut::default()
                    },
                    None,
                ));
            }
            if let Some(t) = c.content.as_deref().filter(|t| !t.is_empty()) {
                out.push(delta(
                    c.index,
                    DeltaOut {
                        content: Some(t),
                        ..DeltaOut::default()
                    },
                    None,
                ));
            }
            if !c.tool_calls.is_empty() {
                out.push(delta(
                    c.index,
                    DeltaOut {
                        tool_calls: tool_calls_out(&c.tool_calls, true),
                        ..DeltaOut::default()
                    },
                    None,
                ));
            }
            out.push(delta(
                c.index,
                DeltaOut {
                    annotations: &c.annotations,
                    ..DeltaOut::default()
                },
                Some(c.finish_reason.as_deref().unwrap_or("stop")),
            ));
        }
        if include_usage && self.usage.is_some() {
            out.push(frame(Vec::new(), self.usage_out()));
        }
        out.push(Bytes::from_static(DONE_FRAME));
        out
    }
}

#[derive(Debug, Default)]
struct ChoiceAcc {
    content: Option<String>,
    reasoning: Option<String>,
    tools: BTreeMap<u32, ToolCall>,
    finish_reason: Option<String>,
    annotations: Vec<Citation>,
}

/// Rebuilds an [`Answer`] from the chunks of a stream, frame by frame.
#[derive(Debug, Default)]
pub struct AnswerBuilder {
    choices: BTreeMap<u32, ChoiceAcc>,
    usage: Option<Usage>,
    system_fingerprint: Option<String>,
}

impl AnswerBuilder {
    /// Reads one SSE frame (`data: {...}\n\n`); anything else is ignored.
    pub fn push_frame(&mut self, frame: &[u8]) {
        let Some(json) = frame.strip_prefix(b"data: ") else {
            return;
        };
        self.push_chunk(json.trim_ascii_end());
    }

    /// Reads one `chat.completion.chunk` JSON object.
    pub fn push_chunk(&mut self, json: &[u8]) {
        let Ok(chunk) = serde_json::from_slice::<BodyIn>(json) else {
            return;
        };
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        if self.system_fingerprint.is_none() {
            self.system_fingerprint = chunk.system_fingerprint;
        }
        for c in chunk.choices.unwrap_or_default() {
            let acc = self.choices.entry(c.index).or_default();
            if let Some(d) = c.message {
                // The role chunk's `"content": ""` is not text.
                if let Some(t) = d.content.filter(|t| !t.is_empty()) {
                    acc.content.get_or_insert_with(String::new).push_str(&t);
                }
                if let Some(t) = d.reasoning_content.filter(|t| !t.is_empty()) {
                    acc.reasoning.get_or_insert_with(String::new).push_str(&t);
                }
                let room = crate::MAX_CITATIONS.saturating_sub(acc.annotations.len());
                acc.annotations
                    .extend(citations_in(d.annotations).take(room));
                for (pos, t) in d.tool_calls.unwrap_or_default().into_iter().enumerate() {
                    let call = acc.tools.entry(t.index.unwrap_or(pos as u32)).or_default();
                    if let Some(id) = t.id {
                        call.id = id;
                    }
                    if let Some(f) = t.function {
                        if let Some(n) = f.name {
                            call.name.push_str(&n);
                        }
                        if let Some(a) = f.arguments {
                            call.arguments.push_str(&a);
                        }
                    }
                }
            }
            if c.finish_reason.is_some() {
                acc.finish_reason = c.finish_reason;
            }
        }
    }

    /// The answer so far.
    pub fn finish(self) -> Answer {
        Answer {
            choices: self
                .choices
                .into_iter()
                .map(|(index, a)| AnswerChoice {
                    index,
                    content: a.content,
                    reasoning_content: a.reasoning,
                    tool_calls: a.tools.into_values().collect(),
                    finish_reason: a.finish_reason,
                    annotations: a.annotations,
                })
                .collect(),
            usage: self.usage,
            usage_estimated: false,
            system_fingerprint: self.system_fingerprint,
            body: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPLETION: &str = r#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":0}}}"#;

    #[test]
    fn citations_survive_a_replay_either_way() {
        let c = crate::Completion {
            content: "see [a](https://a/)".into(),
            finish_reason: "stop".into(),
            annotations: crate::cite(
                "see [a](https://a/)",
                &[
                    ("https://a/".into(), Some("A".into())),
                    ("https://b/".into(), None),
                ],
            ),
            ..crate::Completion::default()
        };
        let a = Answer::from_completion(&c.to_json("m")).unwrap();
        assert_eq!(a.choices[0].annotations, c.annotations);
        let mut b = AnswerBuilder::default();
        for f in a.to_sse("m", false) {
            b.push_frame(&f);
        }
        assert_eq!(b.finish().choices[0].annotations, c.annotations);
        let v: serde_json::Value = serde_json::from_slice(&a.to_completion_json("m")).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["annotations"][0]["url_citation"]["title"],
            "A"
        );
    }

    #[test]
    fn completion_round_trips_through_a_stream() {
        let a = Answer::from_completion(COMPLETION.as_bytes()).unwrap();
        assert!(a.is_complete());
        assert_eq!(a.usage, Some(Usage::new(3, 4)));
        let frames = a.to_sse("ext", true);
        assert_eq!(frames.last().unwrap(), &Bytes::from_static(DONE_FRAME));
        let mut b = AnswerBuilder::default();
        for f in &frames {
            b.push_frame(f);
        }
        assert_eq!(b.finish(), a);
        let v: serde_json::Value = serde_json::from_slice(&a.to_completion_json("ext")).unwrap();
        assert_eq!(v["model"], "ext");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "f"
        );
        assert_eq!(v["usage"]["total_tokens"], 7);
    }

    #[test]
    fn builder_joins_deltas_and_tool_fragments() {
        let mut b = AnswerBuilder::default();
        for f in [
            r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"data: {"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
            r#"data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
            r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
            r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#,
            r#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
        ] {
            b.push_frame(format!("{f}\n\n").as_bytes());
        }
        let a = b.finish();
        assert_eq!(a.choices[0].content.as_deref(), Some("Hello"));
        assert_eq!(
            a.choices[0].tool_calls[0],
            ToolCall {
                id: "c".into(),
                name: "f".into(),
                arguments: "{}".into()
            }
        );
        assert_eq!(a.usage, Some(Usage::new(1, 2)));
        assert!(a.is_complete());
        assert_eq!(a.text(), "Hellof{}");
    }

    #[test]
    fn replays_keep_openai_field_order_and_the_fingerprint() {
        let mut a = Answer::from_completion(
            COMPLETION
                .replace("\"usage\"", "\"system_fingerprint\":\"fp_x\",\"usage\"")
                .as_bytes(),
        )
        .unwrap();
        let body = String::from_utf8(a.to_completion_json("ext").to_vec()).unwrap();
        let pos = |k: &str| body.find(&format!("\"{k}\"")).unwrap();
        assert!(
            pos("id") < pos("object") && pos("object") < pos("created"),
            "{body}"
        );
        assert!(
            pos("model") < pos("choices") && pos("choices") < pos("usage"),
            "{body}"
        );
        assert!(
            pos("role") < pos("content") && pos("content") < pos("refusal"),
            "{body}"
        );
        assert!(body.contains("\"system_fingerprint\":\"fp_x\""), "{body}");
        a.usage_estimated = true;
        let body = String::from_utf8(a.to_completion_json("ext").to_vec()).unwrap();
        assert!(body.contains("\"usage_source\":\"estimated\""), "{body}");
        let frames = a.to_sse("ext", false);
        let first = String::from_utf8(frames[0].to_vec()).unwrap();
        assert!(!first.contains("usage"), "{first}");
        assert!(first.contains("fp_x"), "{first}");
    }

    #[test]
    fn incomplete_answers_are_not_complete() {
        let mut b = AnswerBuilder::default();
        b.push_frame(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}\n\n");
        assert!(!b.finish().is_complete(), "no finish");
        let empty = Answer::from_completion(
            br#"{"choices":[{"index":0,"message":{"content":""},"finish_reason":"stop"}]}"#,
        )
        .unwrap();
        assert!(!empty.is_complete(), "empty");
        assert!(Answer::from_completion(b"{}").is_none());
    }
}
