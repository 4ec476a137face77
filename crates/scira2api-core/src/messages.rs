//! Anthropic's Messages API (`/v1/messages`). When every instance the model routes to speaks
//! it (the `anthropic` provider kind) the request goes through as it is: only `model`
//! rewritten, the client's `anthropic-*` headers forwarded, the stream passed on event by
//! event. Otherwise it is translated onto chat completions (`scira2api-translate`), answered by
//! [`Gateway::chat`] (routing, retries, fallbacks, cache and usage as chat has them), and
//! translated back into a `message` or the Messages event stream.

use crate::gateway::Gateway;
use crate::native_usage::{self, NativeStreamTally};
use crate::outcome::{CacheStatus, ChatContext, StreamOutcome, UsageSource};
use crate::responses::{EndpointOutcome, EndpointReply};
use crate::translated_stream::TranslatedStream;
use bytes::Bytes;
use futures_util::Stream;
use scira2api_translate::messages::{self, EventWriter, MessagesPlan};
use scira2api_types::{ChatRequest, Error, RawObject};
use scira2api_upstream::{ChatReply, FrameStream, Upstream};
use serde_json::{Value, json};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

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
        if let Some(native) = self.messages_natively(body, &ctx).await {
            return native;
        }
        let (plan, chat) = plan_of(&parse(body)?)?;
        if let Some(o) = &ctx.observation {
            o.chat(&plan.model, plan.stream);
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
        let mut dropped = plan.dropped;
        dropped.extend(outcome.dropped);
        Ok(EndpointOutcome {
            reply,
            dropped,
            cache: outcome.cache,
            provider: outcome.provider,
            upstream_time: outcome.upstream_time,
            usage_source: outcome.usage.map(|(_, s)| s),
        })
    }

    /// The pass-through to Anthropic upstreams; `None` when the model's instances do not all
    /// speak Messages (the request is then translated).
    async fn messages_natively(
        &self,
        body: &[u8],
        ctx: &ChatContext<'_>,
    ) -> Option<Result<EndpointOutcome, Error>> {
        let raw = RawObject::parse(bytes::Bytes::copy_from_slice(body)).ok()?;
        let model: String = raw.get::<String>("model")?.ok()?;
        if !self.all_instances(&model, |s| s.provider.speaks_messages()) {
            return None;
        }
        if let Err(e) = crate::client::admit_model(&model) {
            return Some(Err(e));
        }
        // What Anthropic itself would refuse is refused here, without a call.
        if raw.get::<u64>("max_tokens").is_none_or(|m| m.is_err()) {
            return Some(Err(Error::invalid(
                "max_tokens: Field required (a whole number of at least 1)",
                Some("max_tokens"),
            )));
        }
        let stream = matches!(raw.get::<bool>("stream"), Some(Ok(true)));
        if let Some(o) = &ctx.observation {
            o.chat(&model, stream);
        }
        let state = self.state();
        let retries = Cell::new(0);
        let started = Instant::now();
        let headers = &ctx.anthropic;
        let (result, (served, _, deployment, _)) = match state.router.group(&model) {
            None => {
                let internal = state.catalog.map().to_internal(&model).to_owned();
                let up = &self.upstreams[state.default_instance];
                let r = up
                    .messages_native(&raw, &model, &internal, stream, headers, &retries, None)
                    .await;
                (r, (state.default_instance, internal, None, None))
            }
            Some(_) => {
                let send = async |up: &Upstream, internal: &str, attempts: u32| {
                    up.messages_native(
                        &raw,
                        &model,
                        internal,
                        stream,
                        headers,
                        &retries,
                        Some(attempts),
                    )
                    .await
                };
                self.route(&model, &retries, send).await
            }
        };
        let upstream_time = started.elapsed();
        if let Some(o) = &ctx.observation {
            o.called(retries.get() + 1, upstream_time);
        }
        let provider = state.instance_names[served].clone();
        let reply = match result {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let (reply, usage) = match reply {
            ChatReply::Json(b) => {
                let usage = serde_json::from_slice::<Value>(&b)
                    .ok()
                    .and_then(|m| native_usage::usage_of(&m["usage"]));
                if let Some(u) = &usage {
                    native_usage::record(state, &model, deployment.as_ref(), u);
                }
                (EndpointReply::Json(b), usage)
            }
            ChatReply::Stream(frames) => {
                let tally = NativeStreamTally::new(
                    state.clone(),
                    &model,
                    deployment,
                    ctx.observation.clone(),
                );
                let events = NativeMessages {
                    frames,
                    cut: Box::pin(state.streams_cut()),
                    tally,
                    ended: false,
                };
                (EndpointReply::Stream(Box::pin(events)), None)
            }
        };
        let usage = usage.map(|u| (u, UsageSource::Upstream));
        if let Some(o) = &ctx.observation {
            o.answered(CacheStatus::Bypass, &provider, usage);
        }
        Some(Ok(EndpointOutcome {
            reply,
            dropped: Vec::new(),
            cache: CacheStatus::Bypass,
            provider,
            upstream_time,
            usage_source: usage.map(|(_, s)| s),
        }))
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

/// A native Messages stream, passed on as it is (its usage tallied from `message_start` and
/// `message_delta`); when it breaks off (or the shutdown grace period ends) it ends as
/// Anthropic's own streams do on a failure: one `error` event, never a `message_stop`.
struct NativeMessages {
    frames: FrameStream,
    cut: Pin<Box<dyn Future<Output = ()>>>,
    tally: NativeStreamTally,
    ended: bool,
}

impl NativeMessages {
    fn observe(&mut self, frame: &[u8]) {
        if frame.starts_with(b"event: message_start\n") {
            if let Some(v) = native_usage::event_data(frame) {
                self.tally.saw(&v["message"]["usage"]);
            }
        } else if frame.starts_with(b"event: message_delta\n") {
            if let Some(v) = native_usage::event_data(frame) {
                self.tally.saw(&v["usage"]);
            }
        } else if frame.starts_with(b"event: message_stop\n") {
            self.tally.finish(StreamOutcome::Completed);
        } else if frame.starts_with(b"event: error\n") {
            // The upstream's own error event, passed on: the stream ends here.
            self.tally
                .finish(StreamOutcome::Failed("upstream_error".to_owned()));
        }
    }

    fn fail(&mut self, code: &str, status: u16, message: &str) -> Bytes {
        self.ended = true;
        self.tally.finish(StreamOutcome::Failed(code.to_owned()));
        messages::error_event(status, message)
    }
}

impl Stream for NativeMessages {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if this.cut.as_mut().poll(cx).is_ready() {
            let frame = this.fail(
                "server_shutting_down",
                503,
                "the gateway is shutting down and its grace period ran out before the answer was complete",
            );
            return Poll::Ready(Some(Ok(frame)));
        }
        match this.frames.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.observe(&frame);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let code = e.code().unwrap_or("upstream_error").to_owned();
                let frame = this.fail(&code, e.status(), &e.to_string());
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
