//! The vocabulary of a chat call, shared by the gateway, the stream observer and the HTTP layer:
//! what the client asked of the cache, what the cache did, where usage came from, how a
//! stream ended, and what a call reports back.

use scira2api_types::Usage;
use scira2api_upstream::ChatReply;
use std::sync::Arc;
use std::time::Duration;

/// How the client asked the cache to behave (its `Cache-Control` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheControl {
    /// Use the cache.
    #[default]
    Default,
    /// `no-cache`: do not answer from the cache (the fresh answer may be stored).
    NoCache,
    /// `no-store`: neither read nor write the cache.
    NoStore,
}

/// What the cache did for a request (`x-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from the cache.
    Hit,
    /// Looked up, not found; answered by the upstream.
    Miss,
    /// The cache was not consulted (off, or the client said no).
    Bypass,
}

impl CacheStatus {
    /// `HIT`, `MISS` or `BYPASS`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// Where an answer's token usage came from (`x-usage-source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    /// Reported by the upstream.
    Upstream,
    /// Counted by the gateway (the upstream did not report it).
    Estimated,
}

impl UsageSource {
    /// `upstream` or `estimated`.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Upstream => "upstream",
            UsageSource::Estimated => "estimated",
        }
    }
}

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOutcome {
    /// The whole answer was written.
    Completed,
    /// It broke off with an error (its code).
    Failed(String),
    /// The client went away first.
    ClientGone,
}

/// What the HTTP layer knows about the request beyond its body.
#[derive(Default)]
pub struct ChatContext<'a> {
    /// The request's record, filled in by the call and its stream (success or failure).
    pub observation: Option<std::rc::Rc<crate::Observation>>,
    /// The client's API key, when it sent one (for `CACHE_SCOPE=per_key`).
    pub client_key: Option<&'a str>,
    /// The client's `Cache-Control`.
    pub cache_control: CacheControl,
    /// A Messages client's `anthropic-*` headers, forwarded to an Anthropic upstream.
    pub anthropic: scira2api_upstream::AnthropicHeaders,
}

/// A chat answer and how it was obtained.
pub struct ChatOutcome {
    /// The answer in OpenAI form.
    pub reply: ChatReply,
    /// What the cache did.
    pub cache: CacheStatus,
    /// Time spent waiting for the upstream (zero for a cache hit).
    pub upstream_time: Duration,
    /// Upstream attempts that were retries.
    pub retries: u32,
    /// A non-stream answer's usage and its source (streams report theirs when they end).
    pub usage: Option<(Usage, UsageSource)>,
    /// The provider instance that answered (`cache` for a cache hit).
    pub provider: Arc<str>,
    /// Request fields the answering provider accepted without effect (`x-dropped-params`).
    pub dropped: Vec<String>,
}
