//! Protocol translation for scira2api: pure functions and state machines over JSON values, no
//! I/O, so that every rule is tested on its own with golden files.
//!
//! * [`responses`] — OpenAI's Responses API onto chat completions and back: the request
//!   ([`responses::to_chat`]), the response object ([`responses::from_completion`]) and the
//!   stream events ([`responses::EventWriter`]).

#![deny(missing_docs)]

pub mod responses;
