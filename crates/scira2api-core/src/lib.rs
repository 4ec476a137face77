//! The embeddable core of scira2api: configuration and the [`Gateway`] that composes model
//! mapping and the upstream providers into one request path.
//!
//! ```no_run
//! use scira2api_core::{Config, Gateway, GatewayState};
//! let config = Config::from_env().expect("valid settings");
//! let state = GatewayState::new(config);
//! // inside each actix worker:
//! let gateway = Gateway::new(state.clone());
//! # drop(gateway);
//! ```

#![deny(missing_docs)]

mod activity;
pub mod client;
mod config;
pub mod config_file;
mod deployment_limits;
mod endpoints;
mod gateway;
pub mod history;
mod instances;
mod messages;
pub mod metrics;
mod multipart;
mod native_usage;
mod observation;
mod observed_stream;
mod outcome;
pub mod per_thread;
pub mod request_id;
mod responses;
mod sections;
mod settings;
mod shared;
mod tpm;
mod translated_stream;
mod uploads;

pub use activity::{Activity, ActivityGuard, Working};
pub use config::{Config, ConfigError, demo_model_mappings};
pub use endpoints::{ForwardOutcome, Forwarded, JsonEndpoint};
pub use gateway::{Gateway, GatewayState, MODELS_CREATED};
pub use messages::message_failed_before_first_event;
pub use observation::{Observation, access_log_enabled};
pub use observed_stream::StreamMemory;
pub use outcome::{
    CacheControl, CacheStatus, ChatContext, ChatOutcome, StreamOutcome, UsageSource,
};
pub use responses::{EndpointOutcome, EndpointReply, failed_before_first_event};
pub use scira2api_cache::{CacheKey, CacheStats, MemoryStore, ResponseStore};
pub use scira2api_cache::{CacheScope, CacheSettings};
pub use scira2api_limiter::{
    BucketConfig, Decision, LimiterStats, MemoryLimiter, RateLimiter, format_reset,
};
pub use scira2api_limiter::{LimiterSettings, RateLimitScope};
pub use scira2api_models::ModelEntry;
pub use scira2api_translate::messages::PING as MESSAGES_PING;
pub use scira2api_types::{ChatRequest, Error};
pub use scira2api_upstream::UpstreamSettings;
pub use scira2api_upstream::{
    AnthropicHeaders, Bounded, Bounds, ChatReply, FrameStream, ProviderKind, SciraBody, SciraConfig,
};
pub use sections::{AuthSettings, ServerSettings};
pub use settings::{mask_url, parse_duration};
pub use shared::SharedStore;
pub use uploads::{StreamedOutcome, UploadEndpoint};

/// Loads the token vocabularies on a background thread (a few hundred ms of CPU and ~20 MB), so
/// that the first estimate does not wait for them. Optional: the server binary does not call
/// it (most upstreams report usage, and the vocabularies are loaded on first use); embedders
/// that estimate often may. Returns at once.
pub fn preload_tokens() {
    scira2api_tokens::preload_in_background();
}
