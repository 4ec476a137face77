//! The Responses API (`/v1/responses`) on the chat path: a request is translated onto chat
//! completions (`scira2api-translate`), answered by [`Gateway::chat`] (routing, retries,
//! fallbacks, cache, usage — everything chat has), and its answer translated back, as one
//! response object or as the Responses event stream. Stored responses (`store`, the default)
//! are kept in the gateway's [`ResponseObjects`] store for `GET`/`DELETE` and
//! `previous_response_id`.

use crate::gateway::Gateway;
use crate::native_usage::{self, NativeStreamTally};
use crate::outcome::{CacheStatus, ChatContext, StreamOutcome, UsageSource};
use crate::translated_stream::{OnFinish, TranslatedStream};
use bytes::Bytes;
use futures_util::Stream;
use scira2api_cache::StoredResponse;
use scira2api_translate::responses::{self, ChatPlan, EventWriter};
use scira2api_types::{ChatRequest, Error, RawObject};
use scira2api_upstream::{ChatReply, FrameStream, Upstream, UpstreamSettings};
use serde_json::{Value, json};
use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The answer of an endpoint other than chat completions (Responses, Messages): one JSON
/// object, or its own event stream.
pub enum EndpointReply {
    /// The answer object, as JSON.
    Json(Bytes),
    /// Complete SSE events (`event: …\ndata: …\n\n`) ending with the API's own final event
    /// (`response.completed`/`.incomplete`/`.failed`, `message_stop` or `error`); never an
    /// `Err` item.
    Stream(FrameStream),
}

/// An endpoint's answer and how it was obtained.
pub struct EndpointOutcome {
    /// The answer.
    pub reply: EndpointReply,
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
    /// Answers a Responses API request body: sent as it is to an upstream that speaks the
    /// Responses API natively (every instance the model can be routed to has
    /// `responses_native`), otherwise translated onto chat completions
    /// ([`Gateway::responses_plan`], [`Gateway::responses`]).
    pub async fn respond(
        &self,
        body: Bytes,
        ctx: ChatContext<'_>,
    ) -> Result<EndpointOutcome, Error> {
        if let Some(native) = self.respond_natively(&body, &ctx).await {
            return native;
        }
        let (plan, chat) = self.responses_plan(&body).await?;
        if let Some(o) = &ctx.observation {
            o.chat(&chat.model, chat.stream);
        }
        self.responses(plan, &chat, ctx).await
    }

    /// Whether every instance `model` can be routed to (its group's deployments and its
    /// fallbacks', or the default instance for a name in no group) has `what`.
    pub(crate) fn all_instances(
        &self,
        model: &str,
        what: impl Fn(&UpstreamSettings) -> bool,
    ) -> bool {
        let state = self.state();
        let has = |i: usize| what(state.upstreams[i].settings());
        let Some(g) = state.router.group(model) else {
            return has(state.default_instance);
        };
        let fallbacks = g.fallbacks.iter().filter_map(|f| state.router.group(f));
        std::iter::once(g)
            .chain(fallbacks)
            .flat_map(|g| g.deployments.iter())
            .all(|d| has(d.instance))
    }

    /// Whether the instances `model` routes to all speak the Responses API natively.
    fn native_for(&self, model: &str) -> bool {
        self.all_instances(model, |s| s.responses_native)
    }

    /// The pass-through to a native Responses upstream; `None` when the model's instances do
    /// not all speak it (the request is then translated).
    async fn respond_natively(
        &self,
        body: &Bytes,
        ctx: &ChatContext<'_>,
    ) -> Option<Result<EndpointOutcome, Error>> {
        let raw = RawObject::parse(body.clone()).ok()?;
        let model: String = raw.get::<String>("model")?.ok()?;
        if !self.native_for(&model) {
            return None;
        }
        if let Err(e) = crate::client::admit_model(&model) {
            return Some(Err(e));
        }
        let stream = matches!(raw.get::<bool>("stream"), Some(Ok(true)));
        if let Some(o) = &ctx.observation {
            o.chat(&model, stream);
        }
        let state = self.state();
        let retries = Cell::new(0);
        let started = Instant::now();
        let (result, (served, _, deployment, _)) = match state.router.group(&model) {
            None => {
                let internal = state.catalog.map().to_internal(&model).to_owned();
                let up = &self.upstreams[state.default_instance];
                let r = up
                    .responses_native(&raw, &model, &internal, stream, &retries, None)
                    .await;
                (r, (state.default_instance, internal, None, None))
            }
            Some(_) => {
                let send = async |up: &Upstream, internal: &str, attempts: u32| {
                    up.responses_native(&raw, &model, internal, stream, &retries, Some(attempts))
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
                    .and_then(|r| native_usage::usage_of(&r["usage"]));
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
                let events = NativeEvents {
                    frames,
                    last_seq: None,
                    response: None,
                    cut: Box::pin(state.streams_cut()),
                    tail: VecDeque::new(),
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
        // Scira searches the web: a `web_search` tool is honoured there.
        let model = req.get("model").and_then(Value::as_str).unwrap_or_default();
        let caps = responses::Capabilities {
            web_search: self.all_instances(model, |s| s.provider.searches_web()),
        };
        let plan = responses::to_chat_for(&req, &history, caps)?;
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
    ) -> Result<EndpointOutcome, Error> {
        let outcome = self.chat(chat, ctx).await?;
        let id = responses::new_id("resp_");
        let created_at = now_unix();
        let store = plan.store.then(|| self.state().responses.clone());
        let input = Bytes::from(serde_json::to_vec(&plan.input).unwrap_or_default());
        let reply = match outcome.reply {
            ChatReply::Json(body) => {
                let completion: Value = serde_json::from_slice(&body)
                    .map_err(|e| Error::Internal(format!("the chat answer was not JSON: {e}")))?;
                let mut r = responses::from_completion(&completion, &id, created_at, &plan.echo);
                if matches!(outcome.usage, Some((_, UsageSource::Estimated))) {
                    // Counted by the gateway, as `x-usage-source` says too.
                    r["usage_source"] = json!("estimated");
                }
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
                EndpointReply::Json(json)
            }
            ChatReply::Stream(frames) => {
                let writer = EventWriter::new(id, created_at, plan.echo);
                // A stored stream is kept when it completes (in the background: the store may
                // be remote).
                let keep = store.map(|store| {
                    Box::new(move |w: &EventWriter| {
                        let response =
                            Bytes::from(serde_json::to_vec(&w.response()).unwrap_or_default());
                        let id = w.id().to_owned();
                        actix_rt::spawn(async move {
                            store.put(id, StoredResponse { response, input }).await;
                        });
                    }) as OnFinish<EventWriter>
                });
                let cut = self.state().streams_cut();
                EndpointReply::Stream(TranslatedStream::new(frames, writer, cut, keep).boxed())
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

    /// The default instance, when it speaks Responses natively (it then keeps the responses
    /// it answered, and `GET`/`DELETE` of an id the gateway does not hold go to it).
    fn native_default(&self) -> Option<&Upstream> {
        let state = self.state();
        state.upstreams[state.default_instance]
            .settings()
            .responses_native
            .then(|| &self.upstreams[state.default_instance])
    }

    /// `GET /v1/responses/{id}`: the stored response object (the gateway's, else a native
    /// default upstream's).
    pub async fn stored_response(&self, id: &str) -> Result<Bytes, Error> {
        if let Some(s) = self.state().responses.get(id).await {
            return Ok(s.response.clone());
        }
        match self.native_default() {
            Some(up) => up.response_object(id, false).await,
            None => Err(not_found(id, None)),
        }
    }

    /// `DELETE /v1/responses/{id}`: removes a stored response (the gateway's, else a native
    /// default upstream's).
    pub async fn delete_response(&self, id: &str) -> Result<Value, Error> {
        if self.state().responses.delete(id).await {
            return Ok(json!({"id": id, "object": "response", "deleted": true}));
        }
        match self.native_default() {
            Some(up) => {
                let body = up.response_object(id, true).await?;
                serde_json::from_slice(&body).map_err(|e| {
                    Error::upstream(format!("the upstream's delete answer was not JSON: {e}"))
                })
            }
            None => Err(not_found(id, None)),
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

/// The events of a Responses stream for `model` that failed before its first event, after
/// the HTTP head was committed (keep-alive comments went out while the upstream was silent):
/// an `error` event and `response.failed`.
pub fn failed_before_first_event(model: &str, e: &Error) -> FrameStream {
    let mut w = EventWriter::new(
        responses::new_id("resp_"),
        now_unix(),
        responses::default_echo(model),
    );
    let code = e.code().unwrap_or("upstream_error");
    let frames: Vec<Result<Bytes, Error>> =
        w.fail(code, &e.to_string()).into_iter().map(Ok).collect();
    Box::pin(futures_util::stream::iter(frames))
}

/// A native Responses stream, passed on as it is; when it breaks off (or the shutdown grace
/// period ends) it is closed as OpenAI would: an `error` event and `response.failed` with the
/// response as last announced, numbered after the last event.
struct NativeEvents {
    frames: FrameStream,
    last_seq: Option<u64>,
    /// The `response` object of the last `response.created`/`.in_progress` event.
    response: Option<Value>,
    cut: Pin<Box<dyn Future<Output = ()>>>,
    tail: VecDeque<Bytes>,
    /// The stream's accounting (usage from the final response object).
    tally: NativeStreamTally,
    ended: bool,
}

/// `"sequence_number":N` of an event frame, by a scan (no parse for ordinary events).
fn sequence_number(frame: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sequence_number\":";
    let at = frame.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: Vec<u8> = frame[at..]
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

impl NativeEvents {
    fn observe(&mut self, frame: &[u8]) {
        if let Some(n) = sequence_number(frame) {
            self.last_seq = Some(n);
        }
        let created = frame.starts_with(b"event: response.created\n")
            || frame.starts_with(b"event: response.in_progress\n");
        let done = frame.starts_with(b"event: response.completed\n")
            || frame.starts_with(b"event: response.incomplete\n");
        let failed = frame.starts_with(b"event: response.failed\n");
        if !(created || done || failed) {
            return;
        }
        let response = native_usage::event_data(frame)
            .and_then(|mut v| v.get_mut("response").map(Value::take));
        if created {
            self.response = response;
        } else if let Some(r) = response {
            self.tally.saw(&r["usage"]);
            self.tally.finish(if failed {
                StreamOutcome::Failed("upstream_error".to_owned())
            } else {
                StreamOutcome::Completed
            });
        }
    }

    fn fail(&mut self, code: &str, message: &str) {
        self.ended = true;
        self.tally.finish(StreamOutcome::Failed(code.to_owned()));
        let mut seq = self.last_seq.map_or(0, |n| n + 1);
        let mut event = |kind: &str, mut body: Value| {
            body["type"] = json!(kind);
            body["sequence_number"] = json!(seq);
            seq += 1;
            let mut f = format!("event: {kind}\ndata: ").into_bytes();
            let _ = serde_json::to_writer(&mut f, &body);
            f.extend_from_slice(b"\n\n");
            Bytes::from(f)
        };
        let e = event(
            "error",
            json!({"code": code, "message": message, "param": null}),
        );
        let mut response = self.response.take().unwrap_or_else(|| json!({}));
        response["status"] = json!("failed");
        response["error"] =
            json!({"code": "server_error", "message": format!("{message} ({code})")});
        let f = event("response.failed", json!({"response": response}));
        self.tail.extend([e, f]);
    }
}

impl Stream for NativeEvents {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(f) = this.tail.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        if this.cut.as_mut().poll(cx).is_ready() {
            this.fail(
                "server_shutting_down",
                "the gateway is shutting down and its grace period ran out before the answer was complete",
            );
            return Poll::Ready(this.tail.pop_front().map(Ok));
        }
        match this.frames.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.observe(&frame);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let code = e.code().unwrap_or("upstream_error").to_owned();
                this.fail(&code, &e.to_string());
                Poll::Ready(this.tail.pop_front().map(Ok))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
