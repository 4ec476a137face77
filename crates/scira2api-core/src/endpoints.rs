//! OpenAI's endpoints beside chat completions and Responses, forwarded to OpenAI-compatible
//! upstreams with the gateway's auth, limits, routing by `model` (groups, fallbacks, cool-downs),
//! retries, metrics and logs:
//!
//! * JSON bodies with a `model` ([`JsonEndpoint`]): embeddings, legacy completions (JSON and
//!   SSE), moderations, image generation, speech — the body byte for byte with only `model`
//!   rewritten, and back; usage of embeddings and completions recorded like chat's (estimated
//!   with the tokens crate, and marked, when the upstream gives none).
//! * Multipart uploads with a `model` field (transcription, translation, image edits) and
//!   requests without a model (files, batches): see [`Gateway::forward_raw`].
//!
//! Only an OpenAI-compatible instance serves them: a model that routes to any other kind
//! (Scira, Anthropic) is refused with a 400 naming the instance and the endpoint before any
//! upstream call, so routing never sends an endpoint where it cannot be served.

use crate::gateway::Gateway;
use crate::native_usage;
use crate::outcome::{CacheControl, CacheStatus, ChatContext, StreamOutcome, UsageSource};
use bytes::Bytes;
use futures_util::Stream;
use scira2api_cache::{CacheScope, cache_key};
use scira2api_types::{Answer, Error, RawObject, Usage, field_starts_with, top_level_value};
use scira2api_upstream::{ByteStream, ForwardAnswer, ForwardReply, FrameStream, Upstream};
use serde_json::Value;
use std::cell::Cell;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// An OpenAI endpoint whose JSON body names a `model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonEndpoint {
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/completions` (legacy), JSON or SSE.
    Completions,
    /// `POST /v1/moderations` (`model` optional).
    Moderations,
    /// `POST /v1/images/generations`.
    ImageGenerations,
    /// `POST /v1/audio/speech`: a binary answer.
    Speech,
}

impl JsonEndpoint {
    /// The path under `/v1`.
    pub fn path(self) -> &'static str {
        match self {
            JsonEndpoint::Embeddings => "embeddings",
            JsonEndpoint::Completions => "completions",
            JsonEndpoint::Moderations => "moderations",
            JsonEndpoint::ImageGenerations => "images/generations",
            JsonEndpoint::Speech => "audio/speech",
        }
    }

    /// Whether its answers carry token usage worth recording.
    fn counts_tokens(self) -> bool {
        matches!(self, JsonEndpoint::Embeddings | JsonEndpoint::Completions)
    }
}

/// What a forwarded endpoint answered.
pub enum Forwarded {
    /// One JSON object.
    Json(Bytes),
    /// A completions event stream: complete `data:` frames, the writer adds `[DONE]`.
    Stream(FrameStream),
    /// A binary body with its content type.
    Binary {
        /// `Content-Type` of the answer.
        content_type: String,
        /// The body.
        body: ByteStream,
    },
}

/// A forwarded endpoint's answer and how it was obtained.
pub struct ForwardOutcome {
    /// The answer.
    pub reply: Forwarded,
    /// The provider instance that answered.
    pub provider: Arc<str>,
    /// Time spent waiting for the upstream.
    pub upstream_time: Duration,
    /// Where a non-stream answer's usage came from.
    pub usage_source: Option<UsageSource>,
    /// Whether the response cache answered (embeddings and non-stream completions only).
    pub cache: CacheStatus,
}

/// The 400 for an endpoint the instance's kind does not serve.
fn not_served(instance: &str, kind: &str, path: &str) -> Error {
    Error::InvalidRequest {
        message: format!(
            "The provider instance `{instance}` ({kind}) does not serve /v1/{path}; route this model to an OpenAI-compatible instance"
        ),
        param: Some("model".to_owned()),
        code: Some("unsupported_endpoint"),
    }
}

/// Text whose tokens make up an endpoint's prompt: embeddings' `input` (strings, or token
/// arrays counted as they are), completions' `prompt`.
fn prompt_tokens(model: &str, v: &Value) -> u64 {
    match v {
        Value::String(s) => scira2api_tokens::count_completion(model, s),
        Value::Array(items) if items.iter().all(Value::is_number) => items.len() as u64,
        Value::Array(items) => items.iter().map(|i| prompt_tokens(model, i)).sum(),
        _ => 0,
    }
}

/// The usage of a non-stream answer: the upstream's, or estimated and written into it.
fn settle(
    endpoint: JsonEndpoint,
    raw: &RawObject,
    model: &str,
    body: Bytes,
) -> (Bytes, Option<(Usage, UsageSource)>) {
    if let Some(r) = top_level_value(&body, "usage") {
        if let Ok(u) = serde_json::from_slice::<UsageIn>(&body[r]) {
            return (body, Some((u.usage(), UsageSource::Upstream)));
        }
    }
    let Ok(answer) = RawObject::parse(body.clone()) else {
        return (body, None);
    };
    let input_key = if endpoint == JsonEndpoint::Embeddings {
        "input"
    } else {
        "prompt"
    };
    let prompt = raw
        .get::<Value>(input_key)
        .and_then(Result::ok)
        .map_or(0, |v| prompt_tokens(model, &v));
    let completion = if endpoint == JsonEndpoint::Completions {
        answer
            .get::<Vec<ChoiceText>>("choices")
            .and_then(Result::ok)
            .unwrap_or_default()
            .iter()
            .map(|c| scira2api_tokens::count_completion(model, &c.text))
            .sum()
    } else {
        0
    };
    let usage = Usage::new(prompt, completion);
    let json = serde_json::to_string(&usage).unwrap_or_default();
    let body = answer.with_replaced(&[("usage", &json), ("usage_source", "\"estimated\"")]);
    (body, Some((usage, UsageSource::Estimated)))
}

/// A usage object: embeddings report no `completion_tokens`.
#[derive(serde::Deserialize)]
struct UsageIn {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl UsageIn {
    fn usage(&self) -> Usage {
        Usage::new(self.prompt_tokens, self.completion_tokens)
    }
}

#[derive(serde::Deserialize, Default)]
struct ChoiceText {
    #[serde(default)]
    text: String,
}

impl Gateway {
    /// Whether every instance `model` routes to serves OpenAI's other endpoints; the 400 naming
    /// the first that does not.
    pub(crate) fn check_served(&self, model: Option<&str>, path: &str) -> Result<(), Error> {
        let state = self.state();
        let serves = |i: usize| {
            state.upstreams[i]
                .settings()
                .provider
                .serves_openai_endpoints()
        };
        let refuse = |i: usize| {
            not_served(
                &state.instance_names[i],
                state.upstreams[i].settings().provider.as_str(),
                path,
            )
        };
        let Some(g) = model.and_then(|m| state.router.group(m)) else {
            let d = state.default_instance;
            return if serves(d) { Ok(()) } else { Err(refuse(d)) };
        };
        let fallbacks = g.fallbacks.iter().filter_map(|f| state.router.group(f));
        for d in std::iter::once(g)
            .chain(fallbacks)
            .flat_map(|g| g.deployments.iter())
        {
            if !serves(d.instance) {
                return Err(refuse(d.instance));
            }
        }
        Ok(())
    }

    /// Answers a JSON endpoint's request body (see the module docs).
    pub async fn forward(
        &self,
        endpoint: JsonEndpoint,
        body: Bytes,
        ctx: ChatContext<'_>,
    ) -> Result<ForwardOutcome, Error> {
        let raw = RawObject::parse(body)?;
        let model = match raw.get::<String>("model") {
            Some(Ok(m)) if !m.trim().is_empty() => Some(m),
            Some(_) => {
                return Err(Error::invalid(
                    "`model` must be a non-empty string",
                    Some("model"),
                ));
            }
            // Moderations choose their default model upstream.
            None if endpoint == JsonEndpoint::Moderations => None,
            None => {
                return Err(Error::invalid(
                    "you must provide a model parameter",
                    Some("model"),
                ));
            }
        };
        if let Some(m) = &model {
            crate::client::admit_model(m)?;
        }
        let stream = endpoint == JsonEndpoint::Completions
            && matches!(raw.get::<bool>("stream"), Some(Ok(true)));
        let include_usage = raw
            .get::<Value>("stream_options")
            .and_then(Result::ok)
            .is_some_and(|o| o["include_usage"] == true);
        if let Some(o) = &ctx.observation {
            o.chat(model.as_deref().unwrap_or("-"), stream);
        }
        self.check_served(model.as_deref(), endpoint.path())?;
        // Like chat: a stream always asks for its usage; the chunk is dropped again when the
        // client did not.
        let forced = r#"{"include_usage":true}"#;
        let extra: Vec<(&str, &str)> = if stream && !include_usage {
            vec![("stream_options", forced)]
        } else {
            Vec::new()
        };
        let answer = match endpoint {
            JsonEndpoint::Speech => ForwardAnswer::Binary,
            _ if stream => ForwardAnswer::Events,
            _ => ForwardAnswer::Json,
        };
        let state = self.state();
        let group = model.as_deref().and_then(|m| state.router.group(m));
        // Identical input, identical vector: embeddings and non-stream completions are cached
        // like chat (a big saving when a RAG pipeline re-indexes), per group or per model.
        let store = state
            .store
            .as_ref()
            .filter(|_| endpoint.counts_tokens() && !stream)
            .filter(|_| ctx.cache_control != CacheControl::NoStore);
        let key = match (store, model.as_deref()) {
            (Some(_), Some(m)) => {
                let scope = match state.config().cache.scope {
                    CacheScope::Shared => None,
                    CacheScope::PerKey => Some(ctx.client_key.unwrap_or("")),
                };
                let internal =
                    group.map_or_else(|| state.catalog.map().to_internal(m), |g| g.name.as_str());
                let kind = format!("{}\0{m}", endpoint.path());
                Some(cache_key(&kind, internal, &raw, scope))
            }
            _ => None,
        };
        let mut cache = CacheStatus::Bypass;
        if let (Some(store), Some(key)) = (store, key) {
            if ctx.cache_control == CacheControl::Default {
                if let Some(hit) = store.get(key).await {
                    if let Some(body) = hit.body.clone() {
                        let source = if hit.usage_estimated {
                            UsageSource::Estimated
                        } else {
                            UsageSource::Upstream
                        };
                        let usage = hit.usage.map(|u| (u, source));
                        let provider: Arc<str> = Arc::from("cache");
                        if let Some(o) = &ctx.observation {
                            o.answered(CacheStatus::Hit, &provider, usage);
                        }
                        return Ok(ForwardOutcome {
                            reply: Forwarded::Json(body),
                            provider,
                            upstream_time: Duration::ZERO,
                            usage_source: usage.map(|(_, s)| s),
                            cache: CacheStatus::Hit,
                        });
                    }
                }
            }
            cache = CacheStatus::Miss;
        }
        let retries = Cell::new(0);
        let started = Instant::now();
        let (result, (served, internal, deployment, _)) = match (group, model.as_deref()) {
            (Some(_), Some(m)) => {
                let send = async |up: &Upstream, internal: &str, attempts: u32| {
                    up.forward_json(
                        endpoint.path(),
                        &raw,
                        m,
                        internal,
                        &extra,
                        answer,
                        &retries,
                        Some(attempts),
                    )
                    .await
                };
                self.route(m, &retries, send).await
            }
            _ => {
                let client = model.as_deref().unwrap_or("");
                let internal = model
                    .as_deref()
                    .map_or("", |m| state.catalog.map().to_internal(m))
                    .to_owned();
                let up = &self.upstreams[state.default_instance];
                // No model to rewrite for a moderation without one.
                let r = if model.is_some() {
                    up.forward_json(
                        endpoint.path(),
                        &raw,
                        client,
                        &internal,
                        &extra,
                        answer,
                        &retries,
                        None,
                    )
                    .await
                } else {
                    up.forward_json(
                        endpoint.path(),
                        &raw,
                        "",
                        "",
                        &[("model", "null")],
                        answer,
                        &retries,
                        None,
                    )
                    .await
                };
                (r, (state.default_instance, internal, None, None))
            }
        };
        let upstream_time = started.elapsed();
        if let Some(o) = &ctx.observation {
            o.called(retries.get() + 1, upstream_time);
        }
        let provider = state.instance_names[served].clone();
        let reply = result?;
        let client_model = model.unwrap_or_default();
        let (reply, usage) = match reply {
            ForwardReply::Json(b) if endpoint.counts_tokens() => {
                let (b, usage) = settle(endpoint, &raw, &internal, b);
                if let Some((u, source)) = &usage {
                    state.record_usage(&client_model, u, *source);
                    if let Some(d) = &deployment {
                        d.record_tokens(u.total_tokens, Instant::now());
                    }
                }
                if let (Some(store), Some(key)) = (store, key) {
                    let answer = Answer {
                        usage: usage.map(|(u, _)| u),
                        usage_estimated: matches!(usage, Some((_, UsageSource::Estimated))),
                        body: Some(b.clone()),
                        ..Answer::default()
                    };
                    store.put(key, answer).await;
                }
                (Forwarded::Json(b), usage)
            }
            ForwardReply::Json(b) => (Forwarded::Json(b), None),
            ForwardReply::Binary { content_type, body } => {
                (Forwarded::Binary { content_type, body }, None)
            }
            ForwardReply::Stream(frames) => {
                let tally = native_usage::NativeStreamTally::new(
                    state.clone(),
                    &client_model,
                    deployment,
                    ctx.observation.clone(),
                );
                let s = CompletionEvents {
                    frames,
                    tally,
                    strip_usage: !include_usage,
                };
                (Forwarded::Stream(Box::pin(s)), None)
            }
        };
        if let Some(o) = &ctx.observation {
            o.answered(cache, &provider, usage);
        }
        Ok(ForwardOutcome {
            reply,
            provider,
            upstream_time,
            usage_source: usage.map(|(_, s)| s),
            cache,
        })
    }
}

/// A legacy completions stream as the client asked for it: the usage chunk (forced upstream)
/// recorded, and dropped with the other chunks' `"usage":null` when the client did not ask.
struct CompletionEvents {
    frames: FrameStream,
    tally: native_usage::NativeStreamTally,
    strip_usage: bool,
}

impl Stream for CompletionEvents {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            return match this.frames.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let json = frame
                        .strip_prefix(b"data: ")
                        .map_or(&frame[..], |j| j.trim_ascii_end());
                    if field_starts_with(json, "usage", b'{') {
                        if let Some(u) = serde_json::from_slice::<Value>(json)
                            .ok()
                            .and_then(|v| v.get("usage").cloned())
                        {
                            let mut u = u;
                            if let Some(p) = u.get("prompt_tokens").cloned() {
                                u["input_tokens"] = p;
                            }
                            if let Some(c) = u.get("completion_tokens").cloned() {
                                u["output_tokens"] = c;
                            }
                            this.tally.saw(&u);
                        }
                        if this.strip_usage {
                            continue;
                        }
                    }
                    if this.strip_usage {
                        const TAIL: &[u8] = b",\"usage\":null}\n\n";
                        if frame.ends_with(TAIL) {
                            let mut out = frame[..frame.len() - TAIL.len()].to_vec();
                            out.extend_from_slice(b"}\n\n");
                            return Poll::Ready(Some(Ok(Bytes::from(out))));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    this.tally.finish(StreamOutcome::Failed(
                        e.code().unwrap_or("upstream_error").to_owned(),
                    ));
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(None) => {
                    this.tally.finish(StreamOutcome::Completed);
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        }
    }
}
