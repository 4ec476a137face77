//! Chat completions on an Anthropic Messages upstream (the `anthropic` provider kind), the
//! reverse of [`crate::messages`].
//!
//! * [`to_messages`] — a chat request as a Messages request, strict about what the client
//!   requires and Messages cannot do (a 400 naming the `param`), the hints it cannot honour
//!   named in [`AnthropicPlan::dropped`].
//! * [`to_completion`] — a `message` as a `chat.completion`.
//! * [`ChunkWriter`] — the Messages event stream as `chat.completion.chunk` frames.

mod request;
mod response;
mod stream;

pub use request::{AnthropicPlan, DEFAULT_MAX_TOKENS, dropped_params, to_messages};
pub use response::{finish_reason, to_completion};
pub use stream::ChunkWriter;
