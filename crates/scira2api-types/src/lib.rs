//! Wire types shared by every scira2api crate: the OpenAI request view, OpenAI response
//! builders, chat messages, and the unified [`Error`] with its OpenAI JSON form.

#![deny(missing_docs)]

mod answer;
mod citation;
mod error;
mod logsafe;
mod message;
#[cfg(test)]
mod proptests;
mod redact;
mod request;
mod response;
mod scan;

pub use answer::{Answer, AnswerBuilder, AnswerChoice, ToolCall};
pub use citation::{Citation, MAX_CITATIONS, cite};
pub use error::{Error, ErrorObject, openai_error_message, retryable_status};
pub use logsafe::{LOG_VALUE_MAX, log_safe};
pub use message::{Content, ContentPart, ImageUrl, Message};
pub use redact::{REDACTED, Secrets};
pub use request::{
    ChatRequest, RawObject, field_starts_with, json_string, replace_model_literal, rewrite_model,
};
pub use response::{
    ChunkEncoder, Completion, DONE_FRAME, Usage, new_completion_id, sse_frame, sse_json_frame,
    unix_now,
};
pub use scan::{
    is_json_object, last_field_value, object_field, object_fields, objects_with_string_field,
    top_level_value,
};
