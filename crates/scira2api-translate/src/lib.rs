//! Protocol translation for scira2api: pure functions and state machines over JSON values, no
//! I/O, so that every rule is tested on its own with golden files.
//!
//! * [`responses`] — OpenAI's Responses API onto chat completions and back: the request
//!   ([`responses::to_chat`]), the response object ([`responses::from_completion`]) and the
//!   stream events ([`responses::EventWriter`]).
//! * [`messages`] — Anthropic's Messages API onto chat completions and back, the same three
//!   pieces.
//! * [`anthropic`] — the reverse: chat completions on an Anthropic Messages upstream.
//!
//! Both stream writers implement [`StreamTranslator`], so one adapter drives either.

#![deny(missing_docs)]

pub mod anthropic;
pub mod messages;
pub mod responses;

use bytes::Bytes;
use scira2api_types::Error;
use serde_json::Value;

/// The reasoning text of a chat message or delta (`reasoning_content`, or `reasoning` as some
/// backends name it), when there is some.
pub(crate) fn reasoning_text(v: &Value) -> Option<&str> {
    v.get("reasoning_content")
        .or_else(|| v.get("reasoning"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Chat completion chunks in, another API's stream events out (complete SSE frames).
pub trait StreamTranslator {
    /// The first events, before any chunk.
    fn start(&mut self) -> Vec<Bytes>;
    /// The events of one parsed `chat.completion.chunk`.
    fn chunk(&mut self, chunk: &Value) -> Vec<Bytes>;
    /// The closing events of a complete answer.
    fn finish(&mut self) -> Vec<Bytes>;
    /// The closing events after a failure: never ones that look like success.
    fn fail(&mut self, e: &Error) -> Vec<Bytes>;
}

impl StreamTranslator for responses::EventWriter {
    fn start(&mut self) -> Vec<Bytes> {
        responses::EventWriter::start(self)
    }
    fn chunk(&mut self, chunk: &Value) -> Vec<Bytes> {
        responses::EventWriter::chunk(self, chunk)
    }
    fn finish(&mut self) -> Vec<Bytes> {
        responses::EventWriter::finish(self)
    }
    fn fail(&mut self, e: &Error) -> Vec<Bytes> {
        responses::EventWriter::fail(self, e.code().unwrap_or("upstream_error"), &e.to_string())
    }
}

impl StreamTranslator for messages::EventWriter {
    fn start(&mut self) -> Vec<Bytes> {
        messages::EventWriter::start(self)
    }
    fn chunk(&mut self, chunk: &Value) -> Vec<Bytes> {
        messages::EventWriter::chunk(self, chunk)
    }
    fn finish(&mut self) -> Vec<Bytes> {
        messages::EventWriter::finish(self)
    }
    fn fail(&mut self, e: &Error) -> Vec<Bytes> {
        messages::EventWriter::fail(self, e.status(), &e.to_string())
    }
}
