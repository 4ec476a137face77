//! OpenAI's Responses API on a chat completions upstream.
//!
//! * [`to_chat`] — a Responses request as a chat request ([`ChatPlan`]), strict about what a
//!   client requires and chat cannot do (400 naming the `param`), lenient about hints (named
//!   in [`ChatPlan::dropped`]).
//! * [`from_completion`] — a whole `chat.completion` as a `response` object.
//! * [`EventWriter`] — `chat.completion.chunk`s as Responses stream events.

mod request;
mod response;
mod stream;

pub use request::{
    Capabilities, ChatPlan, default_echo, previous_response_id, to_chat, to_chat_for,
};
pub use response::{Parts, from_completion, new_id, response_object, usage};
pub use stream::EventWriter;
