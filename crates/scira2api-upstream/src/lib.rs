//! Talking to the upstream: an awc client per actix worker, and the providers that translate an
//! OpenAI chat request into the upstream's protocol and its answer back into OpenAI output.
//!
//! * `openai` — any OpenAI-compatible backend: the body is forwarded with only `model` changed.
//! * `scira` — the Scira AI service: the request is translated and its streams decoded.
//! * `scira_api` — Scira's official API: one JSON answer per request, folded history.
//! * `anthropic` — Anthropic's Messages API: Messages requests pass through, chat requests are
//!   translated onto it.
//!
//! awc is `!Send`, so an [`Upstream`] is built inside each actix worker from a shared
//! [`UpstreamConfig`]; everything that must be shared across workers lives behind an `Arc`.

#![deny(missing_docs)]

mod anthropic;
mod bounded;
mod client;
mod config;
mod connect;
mod errors;
mod forward;
mod h1;
mod keys;
mod lines;
mod openai;
mod outgoing;
#[cfg(test)]
mod proptests;
mod received;
mod responses;
mod retry;
mod scira;
mod scira_api;
mod stream;

pub use anthropic::{ANTHROPIC_VERSION, AnthropicHeaders};
pub use bounded::{Bounded, Bounds};
pub use client::Upstream;
pub use config::{
    PoolConfig, ProviderKind, UpstreamConfig, UpstreamSettings, UpstreamStats, load_ca_file,
};
pub use connect::{ConnStats, ProxyConfig, ProxyKind};
pub use forward::{Answer as ForwardAnswer, ByteStream, ForwardReply, RawReply};
pub use retry::RetryPolicy;
pub use rustls::pki_types::CertificateDer;
pub use scira::{
    DEFAULT_SCIRA_USER_AGENT, SCIRA_ANONYMOUS_MODELS, SCIRA_GROUPS, SciraBody, SciraConfig,
};
pub use scira_api::SCIRA_API_MAPPINGS;
pub use stream::FrameStream;

use bytes::Bytes;

/// What the upstream answered, already in OpenAI form.
pub enum ChatReply {
    /// A complete `chat.completion` JSON body.
    Json(Bytes),
    /// A stream of `chat.completion.chunk` frames.
    Stream(FrameStream),
}

/// What [`Upstream::chat`] gives back: the answer, and the `usage` a JSON answer reported,
/// read in the one pass that checked the answer (and found its `model`), so that the caller
/// need not walk the body again to find it. `None` when the answer is a stream, has no
/// `usage` of the usual shape, or was built by the gateway (a translated provider's answer).
pub struct Reply {
    /// The answer.
    pub reply: ChatReply,
    /// The upstream's `usage`, when read on the way.
    pub usage: Option<scira2api_types::Usage>,
}

impl From<ChatReply> for Reply {
    fn from(reply: ChatReply) -> Self {
        Reply { reply, usage: None }
    }
}

/// Decodes a whole Scira answer body (any of its three formats) into one completion, as the
/// Scira provider does for a non-stream request (its sources as citations). Errors inside the
/// body become an [`Error`].
pub fn decode_scira_body(
    body: &[u8],
) -> Result<scira2api_types::Completion, scira2api_types::Error> {
    scira::collect(body, true)
}
