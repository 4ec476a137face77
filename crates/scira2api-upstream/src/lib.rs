//! Talking to the upstream: an awc client per actix worker, and the providers that translate an
//! OpenAI chat request into the upstream's protocol and its answer back into OpenAI output.
//!
//! * `openai` — any OpenAI-compatible backend: the body is forwarded with only `model` changed.
//! * `scira` — the Scira AI service: the request is translated and its streams decoded.
//!
//! awc is `!Send`, so an [`Upstream`] is built inside each actix worker from a shared
//! [`UpstreamConfig`]; everything that must be shared across workers lives behind an `Arc`.

mod client;
mod keys;
mod lines;
mod openai;
mod scira;
mod stream;

pub use client::{PoolConfig, ProviderKind, Upstream, UpstreamConfig, UpstreamSettings};
pub use keys::{KeyOutcome, KeyPick, KeyRing};
pub use lines::{LineBuffer, LineTooLong, SseEvents};
pub use scira::{DEFAULT_SCIRA_USER_AGENT, SciraBody, SciraConfig};
pub use stream::FrameStream;

use bytes::Bytes;

/// What the upstream answered, already in OpenAI form.
pub enum ChatReply {
    /// A complete `chat.completion` JSON body.
    Json(Bytes),
    /// A stream of `chat.completion.chunk` frames.
    Stream(FrameStream),
}
