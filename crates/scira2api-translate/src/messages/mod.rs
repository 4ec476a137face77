//! Anthropic's Messages API on a chat completions upstream.
//!
//! * [`to_chat`] — a Messages request as a chat request ([`MessagesPlan`]), strict about what
//!   a client requires and chat cannot do, lenient about hints (named in
//!   [`MessagesPlan::dropped`]).
//! * [`from_completion`] — a whole `chat.completion` as a `message`.
//! * [`EventWriter`] — `chat.completion.chunk`s as the Messages event stream.

mod request;
mod response;
mod stream;

pub use request::{MessagesPlan, to_chat};
pub use response::{from_completion, new_id, usage};
pub use stream::{EventWriter, PING, error_event, frame};
