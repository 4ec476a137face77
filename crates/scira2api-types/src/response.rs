//! Building OpenAI responses: `chat.completion` bodies and `chat.completion.chunk` SSE frames.
//!
//! Providers that translate a foreign protocol (Scira) and the response cache's replay both
//! produce OpenAI output through these builders, so the framing rules live in one place:
//! `data: <json>\n\n` frames, the role in the first delta, `finish_reason` null until the last
//! choice chunk, the usage chunk with `choices: []`, and `data: [DONE]\n\n`.

use crate::Citation;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The SSE frame that ends every OpenAI stream.
pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

/// One SSE frame, `data: <json>\n\n`: the one place the framing is written.
pub fn sse_frame(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// One SSE frame holding `value` serialised as JSON.
pub fn sse_json_frame(value: &impl Serialize) -> Bytes {
    let mut out = Vec::with_capacity(192);
    out.extend_from_slice(b"data: ");
    // The gateway's own frames are plain structs and JSON values: serialising cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Token usage of one completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens in the answer.
    pub completion_tokens: u64,
    /// Their sum (as reported, or computed).
    pub total_tokens: u64,
}

impl Usage {
    /// A `usage` object's counts, or `None` when it is not one. Every answer carries one, so the
    /// usual shape (plain integers, other fields such as `*_details` skipped) is read by a scan;
    /// anything else (a key written with escapes, a duplicate, a number with a fraction) is
    /// left to serde, so what is accepted is what serde accepts.
    pub fn from_json(json: &[u8]) -> Option<Usage> {
        Self::scan(json).or_else(|| serde_json::from_slice(json).ok())
    }

    fn scan(json: &[u8]) -> Option<Usage> {
        let mut counts = [None::<u64>; 3];
        let whole = crate::scan::each_field(json, |key, value| {
            let slot = match key {
                b"prompt_tokens" => 0,
                b"completion_tokens" => 1,
                b"total_tokens" => 2,
                _ => return !key.contains(&b'\\'),
            };
            counts[slot].is_none() && {
                counts[slot] = plain_u64(&json[value]);
                counts[slot].is_some()
            }
        });
        match (whole, counts) {
            (true, [Some(p), Some(c), Some(t)]) => Some(Usage {
                prompt_tokens: p,
                completion_tokens: c,
                total_tokens: t,
            }),
            _ => None,
        }
    }

    /// Usage from prompt and completion counts, with the total computed.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// A JSON integer that fits a `u64`, written plainly (digits, no leading zero).
fn plain_u64(n: &[u8]) -> Option<u64> {
    if n.is_empty() || (n.len() > 1 && n[0] == b'0') {
        return None;
    }
    n.iter().try_fold(0u64, |acc, &d| {
        d.is_ascii_digit()
            .then(|| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

/// A fresh completion id, `chatcmpl-<32 hex>`.
pub fn new_completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a [Citation]>,
}

/// One tool call's piece of a delta: the first names it (`id`, `type`, `function.name`), the
/// later ones carry `function.arguments` text.
#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
}

/// Writes the chunks of one streamed completion, all sharing `id`, `created` and `model`.
#[derive(Debug, Clone)]
pub struct ChunkEncoder {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl ChunkEncoder {
    /// An encoder with a fresh id and the current time. With `include_usage`, every chunk carries
    /// `"usage": null` and [`ChunkEncoder::usage`] writes the final usage chunk, as OpenAI does.
    pub fn new(model: impl Into<String>, include_usage: bool) -> Self {
        ChunkEncoder {
            id: new_completion_id(),
            created: unix_now(),
            model: model.into(),
            include_usage,
        }
    }

    /// The completion id the chunks carry.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn frame(&self, choices: &[ChunkChoice], usage: Option<&Usage>) -> Bytes {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage: if self.include_usage {
                Some(usage)
            } else {
                None
            },
        };
        sse_json_frame(&chunk)
    }

    fn delta(&self, delta: Delta, finish_reason: Option<&str>) -> Bytes {
        self.frame(
            &[ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            None,
        )
    }

    /// The first chunk: `delta: {"role":"assistant","content":""}`.
    pub fn role(&self) -> Bytes {
        self.delta(
            Delta {
                role: Some("assistant"),
                content: Some(""),
                reasoning_content: None,
                tool_calls: None,
                annotations: None,
            },
            None,
        )
    }

    /// A content delta.
    pub fn content(&self, text: &str) -> Bytes {
        self.delta(
            Delta {
                role: None,
                content: Some(text),
                reasoning_content: None,
                tool_calls: None,
                annotations: None,
            },
            None,
        )
    }

    /// A reasoning delta (`delta.reasoning_content`).
    pub fn reasoning(&self, text: &str) -> Bytes {
        self.delta(
            Delta {
                role: None,
                content: None,
                reasoning_content: Some(text),
                tool_calls: None,
                annotations: None,
            },
            None,
        )
    }

    /// The first delta of tool call `index`: its `id`, `type: function`, `function.name` and
    /// `arguments` (often empty, the rest following in [`ChunkEncoder::tool_arguments`]).
    pub fn tool_call(&self, index: u32, id: &str, name: &str, arguments: &str) -> Bytes {
        self.delta(
            Delta {
                role: None,
                content: None,
                reasoning_content: None,
                tool_calls: Some([ToolCallDelta {
                    index,
                    id: Some(id),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(name),
                        arguments,
                    },
                }]),
                annotations: None,
            },
            None,
        )
    }

    /// More `arguments` text of tool call `index`.
    pub fn tool_arguments(&self, index: u32, arguments: &str) -> Bytes {
        self.delta(
            Delta {
                role: None,
                content: None,
                reasoning_content: None,
                tool_calls: Some([ToolCallDelta {
                    index,
                    id: None,
                    kind: None,
                    function: FunctionDelta {
                        name: None,
                        arguments,
                    },
                }]),
                annotations: None,
            },
            None,
        )
    }

    /// The last choice chunk: empty delta and the finish reason.
    pub fn finish(&self, reason: &str) -> Bytes {
        self.finish_citing(reason, &[])
    }

    /// The last choice chunk, carrying the answer's citations (`delta.annotations`) when it
    /// has any: only a finished answer knows them all.
    pub fn finish_citing(&self, reason: &str, citations: &[Citation]) -> Bytes {
        self.delta(
            Delta {
                role: None,
                content: None,
                reasoning_content: None,
                tool_calls: None,
                annotations: (!citations.is_empty()).then_some(citations),
            },
            Some(reason),
        )
    }

    /// The usage chunk (`choices: []`, `usage`). The gateway always produces it, to know every
    /// answer's usage, and drops it again when the client did not ask for usage.
    pub fn usage(&self, usage: &Usage) -> Bytes {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &[],
            usage: Some(Some(usage)),
        };
        sse_json_frame(&chunk)
    }
}

impl ChunkEncoder {
    /// The usage chunk with a usage object of the caller's shape (for example with
    /// `prompt_tokens_details`), as a translating provider reports it.
    pub fn usage_object(&self, usage: &impl Serialize) -> Bytes {
        #[derive(Serialize)]
        struct UsageChunk<'a, U> {
            id: &'a str,
            object: &'static str,
            created: u64,
            model: &'a str,
            choices: [(); 0],
            usage: &'a U,
        }
        sse_json_frame(&UsageChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: [],
            usage,
        })
    }
}

#[derive(Serialize)]
struct CompletionMessage<'a> {
    role: &'static str,
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "<[Citation]>::is_empty")]
    annotations: &'a [Citation],
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: CompletionMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct CompletionBody<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: Option<&'a Usage>,
}

/// A complete non-streamed answer, ready to be rendered as a `chat.completion` body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// The answer text.
    pub content: String,
    /// The reasoning text, when the model reasoned.
    pub reasoning_content: Option<String>,
    /// OpenAI finish reason (`stop`, `length`, `content_filter`, ...).
    pub finish_reason: String,
    /// Token usage, when the upstream reported it.
    pub usage: Option<Usage>,
    /// The web sources the answer cites (`message.annotations`).
    pub annotations: Vec<Citation>,
}

impl Completion {
    /// Renders the `chat.completion` JSON with a fresh id, the current time and `model`.
    pub fn to_json(&self, model: &str) -> Bytes {
        let id = new_completion_id();
        let body = CompletionBody {
            id: &id,
            object: "chat.completion",
            created: unix_now(),
            model,
            choices: [CompletionChoice {
                index: 0,
                message: CompletionMessage {
                    role: "assistant",
                    content: &self.content,
                    reasoning_content: self.reasoning_content.as_deref(),
                    refusal: None,
                    annotations: &self.annotations,
                },
                logprobs: None,
                finish_reason: &self.finish_reason,
            }],
            usage: self.usage.as_ref(),
        };
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(frame: &Bytes) -> Value {
        let s = std::str::from_utf8(frame).unwrap();
        let json = s
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn usage_scan_agrees_with_serde() {
        let cases = [
            r#"{"prompt_tokens":14,"completion_tokens":6,"total_tokens":20}"#,
            r#"{ "total_tokens" : 20 , "prompt_tokens":14, "completion_tokens":6 }"#,
            r#"{"prompt_tokens":14,"completion_tokens":6,"total_tokens":20,"prompt_tokens_details":{"cached_tokens":0},"x":[1,"}"]}"#,
            r#"{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}"#,
            r#"{"prompt_tokens":18446744073709551615,"completion_tokens":0,"total_tokens":1}"#,
            r#"{"prompt_tokens":18446744073709551616,"completion_tokens":0,"total_tokens":1}"#,
            r#"{"prompt_tokens":14,"completion_tokens":6}"#,
            r#"{"prompt_tokens":14,"prompt_tokens":15,"completion_tokens":6,"total_tokens":20}"#,
            r#"{"prompt\u005ftokens":14,"completion_tokens":6,"total_tokens":20}"#,
            r#"{"prompt_tokens":14.0,"completion_tokens":6,"total_tokens":20}"#,
            r#"{"prompt_tokens":1e2,"completion_tokens":6,"total_tokens":20}"#,
            r#"{"prompt_tokens":-1,"completion_tokens":6,"total_tokens":20}"#,
            r#"{"prompt_tokens":014,"completion_tokens":6,"total_tokens":20}"#,
            r#"{"prompt_tokens":"14","completion_tokens":6,"total_tokens":20}"#,
            r#"{"prompt_tokens":null,"completion_tokens":6,"total_tokens":20}"#,
            r#"{"prompt_tokens":14,"completion_tokens":6,"total_tokens":20"#,
            r#"{"prompt_tokens":14,"completion_tokens":6,"total_tokens":20} x"#,
            r#"[14,6,20]"#,
            r#"{}"#,
            "",
        ];
        for case in cases {
            let serde = serde_json::from_str::<Usage>(case).ok();
            assert_eq!(Usage::from_json(case.as_bytes()), serde, "{case}");
        }
        // The common shape is the scan's, not serde's.
        assert!(Usage::scan(cases[0].as_bytes()).is_some());
        assert!(Usage::scan(cases[2].as_bytes()).is_some());
    }

    #[test]
    fn chunks_follow_openai_framing() {
        let enc = ChunkEncoder::new("gpt-4o", true);
        let role = parse(&enc.role());
        assert_eq!(role["object"], "chat.completion.chunk");
        assert_eq!(
            role["choices"][0]["delta"],
            json!({"role":"assistant","content":""})
        );
        assert_eq!(role["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(role["usage"], Value::Null);
        assert!(role.as_object().unwrap().contains_key("usage"));
        let c = parse(&enc.content("hé\"llo\n"));
        assert_eq!(c["choices"][0]["delta"], json!({"content":"hé\"llo\n"}));
        assert_eq!(c["id"], role["id"]);
        let r = parse(&enc.reasoning("think"));
        assert_eq!(
            r["choices"][0]["delta"],
            json!({"reasoning_content":"think"})
        );
        let f = parse(&enc.finish("stop"));
        assert_eq!(f["choices"][0]["finish_reason"], "stop");
        assert_eq!(f["choices"][0]["delta"], json!({}));
        let u = parse(&enc.usage(&Usage::new(3, 4)));
        assert_eq!(u["choices"], json!([]));
        assert_eq!(
            u["usage"],
            json!({"prompt_tokens":3,"completion_tokens":4,"total_tokens":7})
        );
    }

    #[test]
    fn without_include_usage_no_usage_field() {
        let enc = ChunkEncoder::new("m", false);
        assert!(
            !parse(&enc.content("x"))
                .as_object()
                .unwrap()
                .contains_key("usage")
        );
        assert_eq!(
            parse(&enc.usage(&Usage::new(1, 1)))["usage"]["total_tokens"],
            2
        );
    }

    #[test]
    fn completion_body() {
        let c = Completion {
            content: "hi".into(),
            reasoning_content: Some("r".into()),
            finish_reason: "stop".into(),
            usage: Some(Usage::new(1, 2)),
            annotations: Vec::new(),
        };
        let v: Value = serde_json::from_slice(&c.to_json("m")).unwrap();
        assert!(v["choices"][0]["message"].get("annotations").is_none());
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "m");
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
        assert_eq!(v["choices"][0]["message"]["reasoning_content"], "r");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 3);
    }
}
