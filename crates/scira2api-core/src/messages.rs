//! Anthropic's Messages API (`/v1/messages`) on the chat path: a request is translated onto
//! chat completions (`scira2api-translate`), answered by [`Gateway::chat`] (routing, retries,
//! fallbacks, cache and usage as chat has them), and translated back into a `message` or the
//! Messages event stream.

use crate::gateway::Gateway;
use crate::outcome::ChatContext;
use crate::responses::{EndpointOutcome, EndpointReply};
use crate::translated_stream::TranslatedStream;
use bytes::Bytes;
use log::debug;
use scira2api_translate::messages::{self, EventWriter, MessagesPlan};
use scira2api_types::{ChatRequest, Error};
use scira2api_upstream::ChatReply;
use serde_json::{Value, json};

fn parse(body: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(body).map_err(|e| {
        Error::invalid(
            format!("The request body is not a valid JSON object: {e}"),
            None,
        )
    })
}

fn plan_of(req: &Value) -> Result<(MessagesPlan, ChatRequest), Error> {
    let plan = messages::to_chat(req)?;
    let body = serde_json::to_vec(&plan.body)
        .map_err(|e| Error::Internal(format!("could not write the chat request: {e}")))?;
    let chat = ChatRequest::parse(Bytes::from(body))?;
    Ok((plan, chat))
}

impl Gateway {
    /// Answers a Messages request body through the chat path.
    pub async fn messages(
        &self,
        body: &[u8],
        ctx: ChatContext<'_>,
    ) -> Result<EndpointOutcome, Error> {
        let (plan, chat) = plan_of(&parse(body)?)?;
        if let Some(o) = &ctx.observation {
            o.chat(&plan.model, plan.stream);
        }
        if !plan.dropped.is_empty() {
            debug!(
                "messages: accepted without effect: {}",
                plan.dropped.join(", ")
            );
        }
        let outcome = self.chat(&chat, ctx).await?;
        let id = messages::new_id("msg_");
        let reply = match outcome.reply {
            ChatReply::Json(body) => {
                let completion: Value = serde_json::from_slice(&body)
                    .map_err(|e| Error::Internal(format!("the chat answer was not JSON: {e}")))?;
                let m = messages::from_completion(&completion, &id, &plan.model);
                EndpointReply::Json(Bytes::from(serde_json::to_vec(&m).unwrap_or_default()))
            }
            ChatReply::Stream(frames) => {
                let writer = EventWriter::new(id, plan.model.clone());
                let cut = self.state().streams_cut();
                EndpointReply::Stream(TranslatedStream::new(frames, writer, cut, None).boxed())
            }
        };
        Ok(EndpointOutcome {
            reply,
            dropped: plan.dropped,
            cache: outcome.cache,
            provider: outcome.provider,
            upstream_time: outcome.upstream_time,
            usage_source: outcome.usage.map(|(_, s)| s),
        })
    }

    /// `POST /v1/messages/count_tokens`: the input tokens of a Messages request (system,
    /// messages, tools), counted with the upstream model's vocabulary and chat framing, without
    /// calling the upstream.
    pub fn count_message_tokens(&self, body: &[u8]) -> Result<Value, Error> {
        let mut req = parse(body)?;
        // count_tokens takes no max_tokens; the translation requires one.
        if let Some(o) = req.as_object_mut() {
            o.entry("max_tokens").or_insert(json!(1));
        }
        let (plan, chat) = plan_of(&req)?;
        let model = self.state().catalog.map().to_internal(&chat.model);
        let tokens =
            scira2api_tokens::count_prompt(model, &chat.messages()?, plan.body.get("tools"));
        Ok(json!({"input_tokens": tokens}))
    }
}

/// The events of a Messages stream that failed before its first event, after the HTTP head was
/// committed (`ping`s went out while the upstream was silent): one `error` event.
pub fn message_failed_before_first_event(e: &Error) -> scira2api_upstream::FrameStream {
    let frame = messages::error_event(e.status(), &e.to_string());
    Box::pin(futures_util::stream::iter([Ok(frame)]))
}
