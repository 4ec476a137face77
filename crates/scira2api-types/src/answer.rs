//! A complete answer in a form that can be rendered either way: as a `chat.completion` body or
//! as a `chat.completion.chunk` stream.
//!
//! The response cache stores answers in this form, so a streamed answer can serve a non-stream
//! request and the other way round; token accounting reads the answer's text from it.

use crate::Usage;
use crate::response::{DONE_FRAME, new_completion_id, unix_now};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
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
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    /// Choices in index order.
    pub choices: Vec<AnswerChoice>,
    /// Usage, when the upstream reported it.
    pub usage: Option<Usage>,
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
}

impl Answer {
    /// Reads a `chat.completion` body; `None` when it is not one.
    pub fn from_completion(json: &[u8]) -> Option<Answer> {
        let body: BodyIn = serde_json::from_slice(json).ok()?;
        let mut answer = Answer {
            choices: Vec::new(),
            usage: body.usage,
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
        64 + self
            .choices
            .iter()
            .map(|c| {
                96 + c.content.as_ref().map_or(0, String::len)
                    + c.reasoning_content.as_ref().map_or(0, String::len)
                    + c.tool_calls
                        .iter()
                        .map(|t| 48 + t.id.len() + t.name.len() + t.arguments.len())
                        .sum::<usize>()
            })
            .sum::<usize>()
    }

    fn tool_calls_json(calls: &[ToolCall], with_index: bool) -> Value {
        Value::Array(
            calls
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let mut v = json!({"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}});
                    if with_index {
                        v["index"] = json!(i);
                    }
                    v
                })
                .collect(),
        )
    }

    /// Renders a `chat.completion` body with a fresh id and time, for `model`.
    pub fn to_completion_json(&self, model: &str) -> Bytes {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .map(|c| {
                let mut message = json!({"role": "assistant", "content": c.content, "refusal": null});
                if let Some(r) = &c.reasoning_content {
                    message["reasoning_content"] = json!(r);
                }
                if !c.tool_calls.is_empty() {
                    message["tool_calls"] = Answer::tool_calls_json(&c.tool_calls, false);
                }
                json!({"index": c.index, "message": message, "logprobs": null, "finish_reason": c.finish_reason})
            })
            .collect();
        let body = json!({
            "id": new_completion_id(),
            "object": "chat.completion",
            "created": unix_now(),
            "model": model,
            "choices": choices,
            "usage": self.usage,
        });
        Bytes::from(body.to_string())
    }

    /// Renders the answer as a well-formed stream: per choice a role chunk, the reasoning, the
    /// content, the tool calls and the finish chunk; the usage chunk when asked (and known); and
    /// `data: [DONE]`. Fresh id and time.
    pub fn to_sse(&self, model: &str, include_usage: bool) -> Vec<Bytes> {
        let id = new_completion_id();
        let created = unix_now();
        let frame = |choices: Value, usage: Option<Value>| {
            let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices});
            if include_usage {
                c["usage"] = usage.unwrap_or(Value::Null);
            }
            Bytes::from(format!("data: {c}\n\n"))
        };
        let delta = |index: u32, d: Value, finish: Option<&str>| {
            frame(
                json!([{"index": index, "delta": d, "logprobs": null, "finish_reason": finish}]),
                None,
            )
        };
        let mut out = Vec::new();
        for c in &self.choices {
            out.push(delta(
                c.index,
                json!({"role": "assistant", "content": ""}),
                None,
            ));
            if let Some(r) = &c.reasoning_content {
                out.push(delta(c.index, json!({"reasoning_content": r}), None));
            }
            if let Some(t) = c.content.as_deref().filter(|t| !t.is_empty()) {
                out.push(delta(c.index, json!({"content": t}), None));
            }
            if !c.tool_calls.is_empty() {
                out.push(delta(
                    c.index,
                    json!({"tool_calls": Answer::tool_calls_json(&c.tool_calls, true)}),
                    None,
                ));
            }
            out.push(delta(
                c.index,
                json!({}),
                Some(c.finish_reason.as_deref().unwrap_or("stop")),
            ));
        }
        if include_usage {
            if let Some(u) = &self.usage {
                out.push(frame(json!([]), Some(json!(u))));
            }
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
}

/// Rebuilds an [`Answer`] from the chunks of a stream, frame by frame.
#[derive(Debug, Default)]
pub struct AnswerBuilder {
    choices: BTreeMap<u32, ChoiceAcc>,
    usage: Option<Usage>,
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
                })
                .collect(),
            usage: self.usage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPLETION: &str = r#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":0}}}"#;

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
        let v: Value = serde_json::from_slice(&a.to_completion_json("ext")).unwrap();
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
