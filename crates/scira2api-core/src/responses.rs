//! The Responses API (`/v1/responses`) on the chat path: a request is translated onto chat
//! completions (`scira2api-translate`), answered by [`Gateway::chat`] (routing, retries,
//! fallbacks, cache, usage — everything chat has), and its answer translated back, as one
//! response object or as the Responses event stream. Stored responses (`store`, the default)
//! are kept in the gateway's [`ResponseObjects`] store for `GET`/`DELETE` and
//! `previous_response_id`.

use crate::gateway::Gateway;
use crate::outcome::{CacheStatus, ChatContext, UsageSource};
use bytes::Bytes;
use futures_util::Stream;
use scira2api_cache::{ResponseObjects, StoredResponse};
use scira2api_translate::responses::{self, ChatPlan, EventWriter};
use scira2api_types::{ChatRequest, Error};
use scira2api_upstream::{ChatReply, FrameStream};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A Responses answer: one `response` object, or its event stream.
pub enum ResponsesReply {
    /// The response object, as JSON.
    Json(Bytes),
    /// Complete SSE events (`event: …\ndata: …\n\n`), ending with `response.completed`,
    /// `response.incomplete` or `response.failed`; never an `Err` item.
    Stream(FrameStream),
}

/// A Responses answer and how it was obtained.
pub struct ResponsesOutcome {
    /// The answer.
    pub reply: ResponsesReply,
    /// Request fields accepted without effect (`x-dropped-params`).
    pub dropped: Vec<String>,
    /// What the cache did.
    pub cache: CacheStatus,
    /// The provider instance that answered.
    pub provider: Arc<str>,
    /// Time spent waiting for the upstream.
    pub upstream_time: Duration,
    /// Where a non-stream answer's usage came from.
    pub usage_source: Option<UsageSource>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn parse_json(body: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(body).map_err(|e| {
        Error::invalid(
            format!("The request body is not a valid JSON object: {e}"),
            None,
        )
    })
}

fn not_found(id: &str, param: Option<&str>) -> Error {
    Error::ResourceNotFound {
        message: format!("Response with id '{id}' not found."),
        param: param.map(str::to_owned),
    }
}

impl Gateway {
    /// Translates a Responses request body into the chat request it becomes, with the plan
    /// (echo fields, dropped params, conversation items). The history of
    /// `previous_response_id` is read from the store (unknown or expired: 404 naming it).
    pub async fn responses_plan(&self, body: &[u8]) -> Result<(ChatPlan, ChatRequest), Error> {
        let req = parse_json(body)?;
        let mut history = Vec::new();
        if let Some(prev) = responses::previous_response_id(&req) {
            let stored = self
                .state()
                .responses
                .get(prev)
                .await
                .ok_or_else(|| not_found(prev, Some("previous_response_id")))?;
            if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&stored.input) {
                history = items;
            }
            if let Ok(r) = serde_json::from_slice::<Value>(&stored.response) {
                if let Some(out) = r.get("output").and_then(Value::as_array) {
                    history.extend(out.iter().cloned());
                }
            }
        }
        let plan = responses::to_chat(&req, &history)?;
        let chat_body = serde_json::to_vec(&plan.body)
            .map_err(|e| Error::Internal(format!("could not write the chat request: {e}")))?;
        let chat = ChatRequest::parse(Bytes::from(chat_body))?;
        Ok((plan, chat))
    }

    /// Answers a Responses request translated by [`Gateway::responses_plan`]: through the
    /// chat path, back as a response object or its event stream, stored when `store` is on.
    pub async fn responses(
        &self,
        plan: ChatPlan,
        chat: &ChatRequest,
        ctx: ChatContext<'_>,
    ) -> Result<ResponsesOutcome, Error> {
        let outcome = self.chat(chat, ctx).await?;
        let id = responses::new_id("resp_");
        let created_at = now_unix();
        let store = plan.store.then(|| self.state().responses.clone());
        let input = Bytes::from(serde_json::to_vec(&plan.input).unwrap_or_default());
        let reply = match outcome.reply {
            ChatReply::Json(body) => {
                let completion: Value = serde_json::from_slice(&body)
                    .map_err(|e| Error::Internal(format!("the chat answer was not JSON: {e}")))?;
                let r = responses::from_completion(&completion, &id, created_at, &plan.echo);
                let json = Bytes::from(serde_json::to_vec(&r).unwrap_or_default());
                if let Some(store) = store {
                    store
                        .put(
                            id,
                            StoredResponse {
                                response: json.clone(),
                                input,
                            },
                        )
                        .await;
                }
                ResponsesReply::Json(json)
            }
            ChatReply::Stream(frames) => {
                let writer = EventWriter::new(id, created_at, plan.echo);
                let events = EventStream {
                    frames,
                    writer,
                    queue: VecDeque::new(),
                    started: false,
                    ended: false,
                    cut: Box::pin(self.state().streams_cut()),
                    store: store.map(|s| (s, input)),
                };
                ResponsesReply::Stream(Box::pin(events))
            }
        };
        Ok(ResponsesOutcome {
            reply,
            dropped: plan.dropped,
            cache: outcome.cache,
            provider: outcome.provider,
            upstream_time: outcome.upstream_time,
            usage_source: outcome.usage.map(|(_, s)| s),
        })
    }

    /// `GET /v1/responses/{id}`: the stored response object.
    pub async fn stored_response(&self, id: &str) -> Result<Bytes, Error> {
        self.state()
            .responses
            .get(id)
            .await
            .map(|s| s.response.clone())
            .ok_or_else(|| not_found(id, None))
    }

    /// `DELETE /v1/responses/{id}`: removes a stored response.
    pub async fn delete_response(&self, id: &str) -> Result<Value, Error> {
        if self.state().responses.delete(id).await {
            Ok(json!({"id": id, "object": "response", "deleted": true}))
        } else {
            Err(not_found(id, None))
        }
    }

    /// `POST /v1/responses/input_tokens`: the prompt tokens the request would use, counted
    /// with the upstream model's vocabulary and chat framing.
    pub async fn responses_input_tokens(&self, body: &[u8]) -> Result<Value, Error> {
        let (plan, chat) = self.responses_plan(body).await?;
        let messages = chat.messages()?;
        let model = self.state().catalog.map().to_internal(&chat.model);
        let tokens = scira2api_tokens::count_prompt(model, &messages, plan.body.get("tools"));
        Ok(json!({"object": "response.input_tokens", "input_tokens": tokens}))
    }
}

/// Chat chunk frames as Responses events (see [`EventWriter`]); the shutdown grace period's
/// end and upstream errors become `error` + `response.failed`.
struct EventStream {
    frames: FrameStream,
    writer: EventWriter,
    queue: VecDeque<Bytes>,
    started: bool,
    ended: bool,
    cut: Pin<Box<dyn Future<Output = ()>>>,
    store: Option<(Arc<dyn ResponseObjects>, Bytes)>,
}

impl EventStream {
    fn push(&mut self, frames: Vec<Bytes>) {
        self.queue.extend(frames);
    }

    /// Keeps the finished response (in the background: the store may be remote).
    fn keep(&mut self) {
        let Some((store, input)) = self.store.take() else {
            return;
        };
        let response = Bytes::from(serde_json::to_vec(&self.writer.response()).unwrap_or_default());
        let id = self.writer.id().to_owned();
        actix_rt::spawn(async move {
            store.put(id, StoredResponse { response, input }).await;
        });
    }
}

/// The JSON of a `data: {...}` frame.
fn frame_json(frame: &[u8]) -> Option<Value> {
    let data = frame.strip_prefix(b"data: ")?;
    serde_json::from_slice(data.trim_ascii_end()).ok()
}

impl Stream for EventStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.started {
            this.started = true;
            let start = this.writer.start();
            this.push(start);
        }
        loop {
            if let Some(f) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(f)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            if this.cut.as_mut().poll(cx).is_ready() {
                this.ended = true;
                let events = this.writer.fail(
                    "server_shutting_down",
                    "the gateway is shutting down and its grace period ran out before the answer was complete",
                );
                this.push(events);
                continue;
            }
            match this.frames.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(chunk) = frame_json(&frame) {
                        let events = this.writer.chunk(&chunk);
                        this.push(events);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    let code = e.code().unwrap_or("upstream_error").to_owned();
                    let events = this.writer.fail(&code, &e.to_string());
                    this.push(events);
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    let events = this.writer.finish();
                    this.push(events);
                    this.keep();
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
