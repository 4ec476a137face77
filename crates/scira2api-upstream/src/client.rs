//! The per-worker upstream client: sending with retries and credential rotation, and the two
//! providers' request paths.

use crate::anthropic::{
    ANTHROPIC_VERSION, AnthropicHeaders, ChatFromMessagesDecoder, MessagesStreamDecoder,
};
use crate::config::{ProviderKind, UpstreamConfig, UpstreamSettings};
use crate::connect::UpstreamConnector;
use crate::errors::{
    body_error, describe_body, map_openai_error, redirect_error, retry_after, retryable_send_error,
    send_error,
};
use crate::h1::{H1Client, H1Settings};
use crate::keys::{KeyOutcome, KeyRing};
use crate::openai::{ModelRewrite, OpenAiStreamDecoder};
use crate::outgoing::Outgoing;
use crate::received::Received;
use crate::responses::ResponsesStreamDecoder;
use crate::retry::{RetryPolicy, retryable_status};
use crate::scira::{self, SciraStreamDecoder};
use crate::scira_api;
use crate::stream::{DecodedStream, LineDecoder};
use crate::{ChatReply, Reply};
use awc::error::SendRequestError;
use awc::http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use awc::http::{Method, Uri};
use bytes::Bytes;
use log::debug;
use scira2api_models::ModelEntry;
use scira2api_types::{ChatRequest, ChunkEncoder, Error, RawObject, json_string};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// `Content-Type` of every request body sent upstream.
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Maps a non-2xx upstream answer to an [`Error`]: the instance, the status, its
/// `Retry-After`, its headers (a platform's challenge marks itself there) and its body.
pub(crate) type ErrorMapper =
    fn(&UpstreamConfig, u16, Option<Duration>, &HeaderMap, &Bytes) -> Error;

/// The mapper of an OpenAI-compatible upstream.
const OPENAI_ERRORS: ErrorMapper = |_, status, wait, _, body| map_openai_error(status, wait, body);

/// What an upstream status says about the credential used.
fn key_outcome(status: u16, retry: Option<Duration>) -> KeyOutcome {
    match status {
        200..=299 => KeyOutcome::Ok,
        401 | 403 | 429 => KeyOutcome::Rejected(retry),
        _ => KeyOutcome::Neutral,
    }
}

/// A worker's upstream client. Cheap to call concurrently from that worker's tasks.
pub struct Upstream {
    client: awc::Client,
    config: Arc<UpstreamConfig>,
    chat_url: String,
    /// `chat_url` parsed once (awc would otherwise parse the string on every request); `None`
    /// when it does not parse, and then awc reports the error per request.
    chat_uri: Option<Uri>,
    /// The lean HTTP/1.1 client, for a plain-`http://` upstream reached without a proxy
    /// (`LEAN_HTTP1`); `None` sends everything through awc.
    h1: Option<H1Client>,
}

impl Upstream {
    /// Builds the awc client for this worker: the connector (direct or proxied TCP, TLS, pool
    /// limits) and the timeouts.
    pub fn new(config: Arc<UpstreamConfig>) -> Self {
        let s = &config.settings;
        let tcp = UpstreamConnector::new(config.proxy.clone(), config.stats.connections.clone());
        let mut connector = awc::Connector::new()
            .connector(tcp)
            .timeout(s.connect_timeout)
            .limit(s.pool.max_conns_per_host)
            .conn_keep_alive(s.pool.idle_timeout)
            .conn_lifetime(s.pool.lifetime);
        if let Some(tls) = &config.tls {
            connector = connector.rustls_0_23(tls.clone());
        }
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(s.client_timeout)
            .disable_redirects()
            .finish();
        let chat_url = match s.provider {
            ProviderKind::OpenAi => config.v1_url("chat/completions"),
            ProviderKind::Scira => format!("{}{}", config.base_url, s.scira.path),
            ProviderKind::Anthropic => config.v1_url("messages"),
            ProviderKind::SciraApi => format!("{}/api/search", config.base_url),
        };
        let chat_uri = Uri::try_from(chat_url.as_str()).ok();
        let h1 = Self::lean_client(&config);
        Upstream {
            client,
            config,
            chat_url,
            chat_uri,
            h1,
        }
    }

    /// The lean client for this instance, when it is on and can serve it: the base URL is
    /// `http://` and no proxy stands in the way.
    fn lean_client(config: &UpstreamConfig) -> Option<H1Client> {
        let s = &config.settings;
        if !s.lean_http1 || config.proxied().is_some() {
            return None;
        }
        let uri = Uri::try_from(config.base_url.as_str()).ok()?;
        let settings = H1Settings {
            keep_alive: s.pool.enabled,
            max_conns: s.pool.max_conns_per_host,
            idle_timeout: s.pool.idle_timeout,
            lifetime: s.pool.lifetime,
            connect_timeout: s.connect_timeout,
        };
        H1Client::for_uri(&uri, settings, config.stats.connections.clone())
    }

    /// Sends `req` with `body` through the lean client when it serves the request's URL, and
    /// through awc otherwise.
    async fn transmit(
        &self,
        mut req: Outgoing,
        body: &Bytes,
    ) -> Result<Received, SendRequestError> {
        if let Some(e) = req.error() {
            return Err(e);
        }
        if let Some(h1) = self.h1.as_ref().filter(|h| h.serves(req.uri())) {
            let timeout = self.settings().client_timeout;
            return h1
                .send(req.method(), req.uri(), req.headers(), body, timeout)
                .await
                .map(Received::h1);
        }
        let req = req.into_awc(&self.client)?;
        req.send_body(body.clone()).await.map(Received::awc)
    }

    /// The shared settings.
    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    fn settings(&self) -> &UpstreamSettings {
        &self.config.settings
    }

    /// A POST to the chat endpoint.
    fn post_chat(&self) -> Outgoing {
        self.request(match &self.chat_uri {
            Some(uri) => Outgoing::new(Method::POST, uri.clone()),
            None => Outgoing::new(Method::POST, &self.chat_url),
        })
    }

    /// The worker's awc client.
    pub(crate) fn client(&self) -> &awc::Client {
        &self.client
    }

    /// `req`, closing its connection afterwards when the pool is off.
    pub(crate) fn request(&self, req: Outgoing) -> Outgoing {
        if self.settings().pool.enabled {
            req
        } else {
            req.force_close()
        }
    }

    /// Sends `body`, retrying what a second try can fix (see [`crate::retry`]), with the next
    /// credential of `ring` on each attempt. A 2xx response goes to `accept` (read the whole
    /// body, or prime a stream): a failure there — a truncated or non-JSON body, a stream whose
    /// first event is an error — is retried like any other when it is retryable, because nothing
    /// has reached the client yet; so no answer is ever written twice. Every error leaves here
    /// with the configured secrets redacted.
    #[allow(clippy::too_many_arguments)] // one call's whole recipe; a struct would only rename it
    pub(crate) async fn send<T>(
        &self,
        policy: RetryPolicy,
        ring: &KeyRing,
        retries: &Cell<u32>,
        build: impl Fn(Option<&str>) -> Outgoing,
        body: &Bytes,
        map_error: ErrorMapper,
        accept: impl AsyncFn(Received) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let stats = &self.config.stats;
        let secrets = &self.config.secrets;
        let started = Instant::now();
        let mut failed = 0u32;
        loop {
            let key = ring.pick();
            stats.requests.fetch_add(1, Ordering::Relaxed);
            let (err, wait, retryable) =
                match self.transmit(build(key.map(|k| k.value)), body).await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        // A success has nothing to wait for: its headers are not searched.
                        let wait = (!resp.status().is_success())
                            .then(|| retry_after(resp.headers()))
                            .flatten()
                            .or_else(|| {
                                // The official Scira API's quota resets at midnight UTC: its 429
                                // rests the key until then.
                                (status == 429
                                    && self.settings().provider == ProviderKind::SciraApi)
                                    .then(scira_api::until_reset)
                            });
                        if let Some(k) = key {
                            ring.report(k.index, key_outcome(status, wait));
                        }
                        if resp.status().is_success() {
                            match accept(resp).await {
                                Ok(v) => return Ok(v),
                                Err(e) => {
                                    let retryable = e.should_retry();
                                    (secrets.error(e), None, retryable)
                                }
                            }
                        } else if resp.status().is_redirection() {
                            let location = resp
                                .headers()
                                .get(awc::http::header::LOCATION)
                                .and_then(|v| v.to_str().ok());
                            let err = redirect_error(status, location, self.config.host());
                            (secrets.error(err), None, false)
                        } else {
                            let headers = resp.headers().clone();
                            let timeout = self.settings().client_timeout;
                            let body = resp.body(1 << 20, timeout).await.unwrap_or_default();
                            let err = map_error(&self.config, status, wait, &headers, &body);
                            let err = secrets.error(err);
                            let retryable = retryable_status(status)
                                && err.should_retry()
                                && !(failed >= 1 && crate::retry::retried_once_at_most(&err));
                            // A spent quota is retried with another key at once, not after the
                            // exhausted one's wait.
                            let wait = wait.filter(|_| err.code() != Some("insufficient_quota"));
                            (err, wait, retryable)
                        }
                    }
                    Err(e) => {
                        if let Some(k) = key {
                            ring.report(k.index, KeyOutcome::Neutral);
                        }
                        let retryable = retryable_send_error(&e);
                        (secrets.error(send_error(e, &self.config)), None, retryable)
                    }
                };
            failed += 1;
            if !retryable || failed >= policy.attempts {
                if retryable && failed > 1 {
                    debug!("upstream gave up after {failed} attempts: {err}");
                    let spent = started.elapsed();
                    return Err(err.exhausted().with_note(&format!(
                        "gave up after {failed} attempts in {:.1}s",
                        spent.as_secs_f64()
                    )));
                }
                return Err(err);
            }
            let delay = policy.delay(failed, wait, fastrand::f64());
            debug!(
                "upstream attempt {failed}/{} failed ({}: {err}); retrying in {}ms",
                policy.attempts,
                err.code().unwrap_or("error"),
                delay.as_millis()
            );
            stats.retries.fetch_add(1, Ordering::Relaxed);
            retries.set(retries.get() + 1);
            actix_rt::time::sleep(delay).await;
        }
    }

    /// Sends a chat request for `internal_model` and returns the answer in OpenAI form, with
    /// `model` set to the name the client asked for.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        internal_model: &str,
        retries: &Cell<u32>,
    ) -> Result<Reply, Error> {
        self.chat_with(req, internal_model, retries, None).await
    }

    /// Like [`Upstream::chat`], with at most `attempts` attempts instead of the instance's
    /// `RETRY` (a router moving to another deployment after one failure passes 1).
    pub async fn chat_with(
        &self,
        req: &ChatRequest,
        internal_model: &str,
        retries: &Cell<u32>,
        attempts: Option<u32>,
    ) -> Result<Reply, Error> {
        let mut policy = self.settings().retry;
        if let Some(n) = attempts {
            policy.attempts = n.max(1);
        }
        match self.settings().provider {
            ProviderKind::OpenAi => self.chat_openai(req, internal_model, retries, policy).await,
            ProviderKind::Scira => self
                .chat_scira(req, internal_model, retries, policy)
                .await
                .map(Reply::from),
            ProviderKind::Anthropic => self
                .chat_anthropic(req, internal_model, retries, policy)
                .await
                .map(Reply::from),
            ProviderKind::SciraApi => self
                .chat_scira_api(req, internal_model, retries, policy)
                .await
                .map(Reply::from),
        }
    }

    /// The request fields this instance's provider accepts without effect (for
    /// `x-dropped-params`): none for an OpenAI-compatible backend, which gets them all.
    pub fn dropped_params(&self, req: &ChatRequest) -> Vec<String> {
        match self.settings().provider {
            ProviderKind::OpenAi => Vec::new(),
            ProviderKind::Scira => scira::dropped_params(req),
            // `username` is read by `scira-x`.
            ProviderKind::SciraApi => scira::dropped_params(req)
                .into_iter()
                .filter(|k| k != "username")
                .collect(),
            ProviderKind::Anthropic => {
                let obj = req.object();
                scira2api_translate::anthropic::dropped_params(
                    obj.keys()
                        .filter(|k| obj.raw(k).is_some_and(|v| v != "null")),
                )
            }
        }
    }

    /// The request's credential, as the provider kind takes it: `Authorization: Bearer`, or
    /// for Anthropic `x-api-key` with `anthropic-version` (the default, replaced by the
    /// instance's extra headers, replaced in turn by a Messages client's own `anthropic-*`
    /// headers). The credential goes on last, so that no header can replace it.
    pub(crate) fn authorized(
        &self,
        req: Outgoing,
        key: Option<&str>,
        anthropic: Option<&AnthropicHeaders>,
    ) -> Outgoing {
        match self.settings().provider {
            ProviderKind::Anthropic => {}
            ProviderKind::SciraApi => {
                let http = self.with_headers(req);
                return match key {
                    Some(k) => http.insert_header(("x-api-key", k)),
                    None => http,
                };
            }
            ProviderKind::OpenAi | ProviderKind::Scira => {
                let http = self.with_headers(req);
                return match key {
                    Some(k) => http.bearer_auth(k),
                    None => http,
                };
            }
        }
        let mut http =
            self.with_headers(req.insert_header(("anthropic-version", ANTHROPIC_VERSION)));
        if let Some(h) = anthropic {
            if let Some(v) = h.version.as_deref() {
                http = http.insert_header(("anthropic-version", v));
            }
            if let Some(b) = h.beta.as_deref() {
                http = http.insert_header(("anthropic-beta", b));
            }
        }
        match key {
            Some(k) => http.insert_header(("x-api-key", k)),
            None => http,
        }
    }

    /// A chat request on an Anthropic Messages upstream: translated (`scira2api-translate`'s
    /// `anthropic` module), and the answer translated back to a chat completion or its chunks.
    async fn chat_anthropic(
        &self,
        req: &ChatRequest,
        internal_model: &str,
        retries: &Cell<u32>,
        policy: RetryPolicy,
    ) -> Result<ChatReply, Error> {
        let parsed: serde_json::Value =
            serde_json::from_slice(req.object().bytes()).map_err(|e| {
                Error::invalid(format!("The request body is not valid JSON: {e}"), None)
            })?;
        let plan = scira2api_translate::anthropic::to_messages(&parsed, internal_model)?;
        let body = Bytes::from(serde_json::to_vec(&plan.body).unwrap_or_default());
        let build = |key: Option<&str>| {
            let mut http = self
                .authorized(self.post_chat(), key, None)
                .insert_header((CONTENT_TYPE, JSON));
            if req.stream {
                http = http.insert_header((ACCEPT, HeaderValue::from_static("text/event-stream")));
            }
            http
        };
        let accept = async |resp: Received| {
            let s = self.settings();
            if req.stream {
                let decoder = ChatFromMessagesDecoder::new(&req.model);
                let stream =
                    DecodedStream::new(Box::pin(resp), decoder, s.client_timeout, s.max_body_bytes)
                        .redacting(self.config.secrets.clone())
                        .primed()
                        .await?;
                return Ok(ChatReply::Stream(stream.boxed()));
            }
            let body = self.read_body(resp).await?;
            check_json_object(&body, [], || self.config.host())?;
            let message: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| Error::upstream(format!("the Anthropic answer is not JSON: {e}")))?;
            if message["type"] != "message" {
                return Err(Error::upstream(format!(
                    "{} answered 200 with a JSON object that is not a Messages `message`",
                    self.config.host()
                )));
            }
            let completion = scira2api_translate::anthropic::to_completion(
                &message,
                &scira2api_types::new_completion_id(),
                scira2api_types::unix_now(),
                &req.model,
            );
            Ok(ChatReply::Json(Bytes::from(
                serde_json::to_vec(&completion).unwrap_or_default(),
            )))
        };
        self.send(
            policy,
            &self.config.keys,
            retries,
            build,
            &body,
            |_, status, wait, _, body| crate::anthropic::map_error(status, wait, body),
            accept,
        )
        .await
    }

    /// A chat request on Scira's official API: the endpoint the model names, the history
    /// folded into its one message (or the last user message as the query), the JSON answer as
    /// a completion with its sources as citations — or, for `stream: true`, as a chat stream of
    /// the finished answer (the API does not stream).
    async fn chat_scira_api(
        &self,
        req: &ChatRequest,
        internal_model: &str,
        retries: &Cell<u32>,
        policy: RetryPolicy,
    ) -> Result<ChatReply, Error> {
        let s = self.settings();
        scira::refuse(req, &s.name)?;
        let endpoint = scira_api::Endpoint::of(internal_model)?;
        let username = req.object().get::<String>("username").and_then(Result::ok);
        let body = scira_api::body(endpoint, &req.messages()?, username.as_deref())?;
        let url = format!("{}{}", self.config.base_url, endpoint.path());
        let build = |key: Option<&str>| {
            self.authorized(self.request(Outgoing::new(Method::POST, &url)), key, None)
                .insert_header((CONTENT_TYPE, JSON))
                .insert_header((ACCEPT, JSON))
        };
        // Every request the API answers counts against the key's daily quota: once it has
        // answered 200, a failure while reading the answer is not retried.
        let accept = async |resp: Received| {
            let body = self.read_body(resp).await.map_err(Error::exhausted)?;
            scira_api::completion(&body, s.scira.citations).map_err(Error::exhausted)
        };
        let completion = self
            .send(
                policy,
                &self.config.keys,
                retries,
                build,
                &body,
                scira_api::map_error,
                accept,
            )
            .await?;
        if req.stream {
            let enc = ChunkEncoder::new(req.model.clone(), req.include_usage);
            let frames = scira_api::frames(&completion, &enc);
            let stream = futures_util::stream::iter(frames.into_iter().map(Ok));
            return Ok(ChatReply::Stream(Box::pin(stream)));
        }
        Ok(ChatReply::Json(completion.to_json(&req.model)))
    }

    /// Sends an Anthropic Messages request to an instance that speaks it
    /// ([`ProviderKind::speaks_messages`]): the client's body with only `model` replaced and its
    /// `anthropic-*` headers; the answer with `model` set back to `client_model` — one
    /// `message`, or the event stream passed through event by event. At most `attempts`
    /// attempts (the instance's `RETRY` when `None`).
    #[allow(clippy::too_many_arguments)] // the Responses pass-through's recipe plus the headers
    pub async fn messages_native(
        &self,
        req: &RawObject,
        client_model: &str,
        internal_model: &str,
        stream: bool,
        headers: &AnthropicHeaders,
        retries: &Cell<u32>,
        attempts: Option<u32>,
    ) -> Result<ChatReply, Error> {
        let mut policy = self.settings().retry;
        if let Some(n) = attempts {
            policy.attempts = n.max(1);
        }
        let literal = json_string(internal_model);
        let body = req.with_replaced(&[("model", literal.as_str())]);
        let rewrite = ModelRewrite::new(client_model, internal_model);
        let build = |key: Option<&str>| {
            let mut http = self
                .authorized(self.post_chat(), key, Some(headers))
                .insert_header((CONTENT_TYPE, JSON));
            if stream {
                http = http.insert_header((ACCEPT, HeaderValue::from_static("text/event-stream")));
            }
            http
        };
        let accept = async |resp: Received| {
            let decoder = || MessagesStreamDecoder::new(client_model, internal_model);
            self.accept_openai(resp, stream.then_some(decoder), &rewrite, false)
                .await
                .map(|r| r.reply)
        };
        self.send(
            policy,
            &self.config.keys,
            retries,
            build,
            &body,
            |_, status, wait, _, body| crate::anthropic::map_error(status, wait, body),
            accept,
        )
        .await
    }

    /// Adds the instance's extra headers.
    fn with_headers(&self, mut http: Outgoing) -> Outgoing {
        for (k, v) in &self.settings().headers {
            http = http.insert_header((k.as_str(), v.as_str()));
        }
        http
    }

    async fn chat_openai(
        &self,
        req: &ChatRequest,
        internal_model: &str,
        retries: &Cell<u32>,
        policy: RetryPolicy,
    ) -> Result<Reply, Error> {
        let rewrite = ModelRewrite::new(&req.model, internal_model);
        let body = req.upstream_body(internal_model);
        let build = |key: Option<&str>| {
            let mut http = self
                .authorized(self.post_chat(), key, None)
                .insert_header((CONTENT_TYPE, JSON));
            if req.stream {
                http = http.insert_header((ACCEPT, HeaderValue::from_static("text/event-stream")));
            }
            http
        };
        let accept = async |resp: Received| {
            let decoder = || OpenAiStreamDecoder::new(rewrite.clone());
            self.accept_openai(resp, req.stream.then_some(decoder), &rewrite, true)
                .await
        };
        self.send(
            policy,
            &self.config.keys,
            retries,
            build,
            &body,
            OPENAI_ERRORS,
            accept,
        )
        .await
    }

    async fn chat_scira(
        &self,
        req: &ChatRequest,
        internal_model: &str,
        retries: &Cell<u32>,
        policy: RetryPolicy,
    ) -> Result<ChatReply, Error> {
        let s = self.settings();
        scira::refuse(req, &s.name)?;
        let messages = req.messages()?;
        let user_id = self.config.user_ids.pick();
        // OpenAI chat's own ask for web search selects Scira's web group.
        let group = if req
            .object()
            .raw("web_search_options")
            .is_some_and(|v| v != "null")
        {
            scira::WEB_GROUP
        } else {
            s.scira.group.as_str()
        };
        scira::check_session(internal_model, group, !self.config.cookies.is_empty())?;
        let body = Bytes::from(scira::body(
            &s.scira,
            internal_model,
            group,
            &messages,
            user_id.map(|u| u.value),
        )?);
        let origin = scira::origin(&self.config.base_url);
        let referer = format!("{origin}/");
        let build = |cookie: Option<&str>| {
            let mut http = self
                .with_headers(self.post_chat())
                .insert_header((CONTENT_TYPE, JSON))
                .insert_header((ACCEPT, "*/*"))
                .insert_header(("referer", referer.as_str()))
                .insert_header(("origin", origin.as_str()))
                .insert_header(("user-agent", s.scira.user_agent.as_str()));
            if let Some(c) = cookie {
                http = http.insert_header(("cookie", c));
            }
            http
        };
        // Scira spends quota on every request it receives: once it has answered 200, a
        // failure while reading the answer is not retried.
        if req.stream {
            let accept = async |resp: Received| {
                let decoder = SciraStreamDecoder::new(
                    ChunkEncoder::new(req.model.clone(), req.include_usage),
                    s.scira.citations,
                );
                DecodedStream::new(Box::pin(resp), decoder, s.client_timeout, s.max_body_bytes)
                    .redacting(self.config.secrets.clone())
                    .primed()
                    .await
                    .map_err(Error::exhausted)
            };
            let stream = self
                .send(
                    policy,
                    &self.config.cookies,
                    retries,
                    build,
                    &body,
                    scira::map_error,
                    accept,
                )
                .await?;
            Ok(ChatReply::Stream(stream.boxed()))
        } else {
            let accept =
                async |resp: Received| self.read_body(resp).await.map_err(Error::exhausted);
            let body = self
                .send(
                    policy,
                    &self.config.cookies,
                    retries,
                    build,
                    &body,
                    scira::map_error,
                    accept,
                )
                .await?;
            let completion = scira::collect(&body, s.scira.citations)
                .map_err(|e| self.config.secrets.error(e))?;
            Ok(ChatReply::Json(completion.to_json(&req.model)))
        }
    }

    /// Sends a Responses API request to an instance that speaks it natively
    /// ([`UpstreamSettings::responses_native`]): the client's body with only `model` replaced,
    /// to `/v1/responses`; the answer with `model` set back to `client_model` — one JSON object,
    /// or the event stream passed through event by event. At most `attempts` attempts (the
    /// instance's `RETRY` when `None`).
    #[allow(clippy::too_many_arguments)] // the chat call's recipe plus the body's two names
    pub async fn responses_native(
        &self,
        req: &RawObject,
        client_model: &str,
        internal_model: &str,
        stream: bool,
        retries: &Cell<u32>,
        attempts: Option<u32>,
    ) -> Result<ChatReply, Error> {
        let mut policy = self.settings().retry;
        if let Some(n) = attempts {
            policy.attempts = n.max(1);
        }
        let url = self.config.v1_url("responses");
        let literal = json_string(internal_model);
        let body = req.with_replaced(&[("model", literal.as_str())]);
        let rewrite = ModelRewrite::new(client_model, internal_model);
        let build = |key: Option<&str>| {
            let mut http = self
                .authorized(self.request(Outgoing::new(Method::POST, &url)), key, None)
                .insert_header((CONTENT_TYPE, JSON));
            if stream {
                http = http.insert_header((ACCEPT, HeaderValue::from_static("text/event-stream")));
            }
            http
        };
        let accept = async |resp: Received| {
            let decoder = || ResponsesStreamDecoder::new(client_model, internal_model);
            self.accept_openai(resp, stream.then_some(decoder), &rewrite, false)
                .await
                .map(|r| r.reply)
        };
        self.send(
            policy,
            &self.config.keys,
            retries,
            build,
            &body,
            OPENAI_ERRORS,
            accept,
        )
        .await
    }

    /// `GET` (or, with `delete`, `DELETE`) `/v1/responses/{id}` on a native Responses
    /// upstream: its stored response, or its error as it sent it. One attempt.
    pub async fn response_object(&self, id: &str, delete: bool) -> Result<Bytes, Error> {
        let url = self.config.v1_url(&format!("responses/{id}"));
        let build = |key: Option<&str>| {
            let req = if delete {
                Outgoing::new(Method::DELETE, &url)
            } else {
                Outgoing::new(Method::GET, &url)
            };
            self.authorized(self.request(req), key, None)
        };
        let accept = async |resp: Received| {
            let body = self.read_body(resp).await?;
            check_json_object(&body, [], || self.config.host())?;
            Ok(body)
        };
        let once = RetryPolicy {
            attempts: 1,
            ..self.settings().retry
        };
        self.send(
            once,
            &self.config.keys,
            &Cell::new(0),
            build,
            &Bytes::new(),
            OPENAI_ERRORS,
            accept,
        )
        .await
    }

    /// A 2xx answer of an OpenAI-protocol endpoint: a stream decoded by the decoder `stream`
    /// makes (primed: its first event read), or a whole body that must be one JSON object; the
    /// model set back to the client's name either way. For a chat completion (`chat_usage`),
    /// a whole body's `usage` is read in the same pass that checks it.
    async fn accept_openai<D: LineDecoder + Unpin + 'static>(
        &self,
        resp: Received,
        stream: Option<impl FnOnce() -> D>,
        rewrite: &ModelRewrite,
        chat_usage: bool,
    ) -> Result<Reply, Error> {
        let s = self.settings();
        match stream {
            Some(decoder) => {
                let stream = DecodedStream::new(
                    Box::pin(resp),
                    decoder(),
                    s.client_timeout,
                    s.max_body_bytes,
                )
                .redacting(self.config.secrets.clone())
                .primed()
                .await?;
                Ok(ChatReply::Stream(stream.boxed()).into())
            }
            None => {
                let body = self.read_body(resp).await?;
                let usage_key = if chat_usage { "usage" } else { "" };
                let [model, usage] =
                    check_json_object(&body, ["model", usage_key], || self.config.host())?;
                let usage = usage.and_then(|r| scira2api_types::Usage::from_json(&body[r]));
                Ok(Reply {
                    reply: ChatReply::Json(rewrite.apply_at(body, model)),
                    usage,
                })
            }
        }
    }

    /// Reads a whole body within `CLIENT_TIMEOUT` and `MAX_BODY_BYTES`.
    pub(crate) async fn read_body(&self, mut resp: Received) -> Result<Bytes, Error> {
        let s = self.settings();
        let whole = match resp.already_read(s.max_body_bytes) {
            Some(whole) => whole,
            None => resp.body(s.max_body_bytes, s.client_timeout).await,
        };
        whole.map_err(|e| body_error(e, &self.config))
    }

    /// Fetches the upstream's own model list (`GET /v1/models`), for providers that have one.
    pub async fn models(&self) -> Result<Vec<ModelEntry>, Error> {
        if !self.settings().provider.has_model_list() {
            return Ok(Vec::new());
        }
        let url = self.config.v1_url("models");
        let build = |key: Option<&str>| {
            self.authorized(self.request(Outgoing::new(Method::GET, &url)), key, None)
        };
        let accept = async |resp: Received| {
            let body = self.read_body(resp).await?;
            parse_model_list(&body)
        };
        // One attempt: a model list is fetched for a client's `GET /v1/models`, which may be
        // public; retries would multiply the upstream calls made with the operator's key.
        let once = RetryPolicy {
            attempts: 1,
            ..self.settings().retry
        };
        self.send(
            once,
            &self.config.keys,
            &Cell::new(0),
            build,
            &Bytes::new(),
            OPENAI_ERRORS,
            accept,
        )
        .await
    }
}

/// Checks that a non-stream answer is one whole JSON object before it is passed on as success:
/// an HTML page, plain text or a cut-off body with a 200 is an upstream failure (502, retryable).
/// Gives the ranges of the top-level fields named by `keys` (`model`, to set it back; `usage`),
/// found in the same pass; `host` is asked for only to word an error.
pub(crate) fn check_json_object<'a, const N: usize>(
    body: &[u8],
    keys: [&str; N],
    host: impl FnOnce() -> &'a str,
) -> Result<[Option<std::ops::Range<usize>>; N], Error> {
    if !body.trim_ascii_start().starts_with(b"{") {
        return Err(Error::upstream(format!(
            "{} answered 200 with {} instead of a JSON object",
            host(),
            describe_body(body)
        )));
    }
    match scira2api_types::object_fields(body, keys) {
        Some(found) => Ok(found),
        None => Err(Error::upstream(format!(
            "{} answered 200 with a body that is not one complete JSON object ({} bytes); it was probably cut off",
            host(),
            body.len()
        ))),
    }
}

fn parse_model_list(body: &[u8]) -> Result<Vec<ModelEntry>, Error> {
    #[derive(serde::Deserialize)]
    struct List {
        data: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        id: String,
        #[serde(default)]
        created: u64,
        #[serde(default)]
        owned_by: Option<String>,
    }
    let list: List = serde_json::from_slice(body)
        .map_err(|e| Error::upstream(format!("the upstream model list is not OpenAI JSON: {e}")))?;
    Ok(list
        .data
        .into_iter()
        .map(|m| ModelEntry {
            id: m.id,
            object: "model",
            created: m.created,
            owned_by: m.owned_by.unwrap_or_else(|| "upstream".to_owned()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_model_list() {
        let l = parse_model_list(br#"{"object":"list","data":[{"id":"a","object":"model","created":5,"owned_by":"o"},{"id":"b"}]}"#).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].created, 5);
        assert_eq!(l[1].owned_by, "upstream");
        assert!(parse_model_list(b"[]").is_err());
    }

    #[test]
    fn non_stream_answers_must_be_whole_json_objects() {
        assert!(check_json_object(br#" {"id":"x","choices":[]}"#, [], || "h").is_ok());
        for bad in [
            &b"<html>oops</html>"[..],
            b"plain text",
            br#"{"id":"x","choices":[{"#,
            b"",
            br#"[1,2]"#,
        ] {
            let e = check_json_object(bad, [], || "h").unwrap_err();
            assert_eq!(e.status(), 502, "{e}");
            assert!(e.should_retry());
        }
    }

    #[test]
    fn key_outcomes() {
        assert_eq!(key_outcome(200, None), KeyOutcome::Ok);
        assert_eq!(key_outcome(401, None), KeyOutcome::Rejected(None));
        assert_eq!(
            key_outcome(429, Some(Duration::from_secs(1))),
            KeyOutcome::Rejected(Some(Duration::from_secs(1)))
        );
        assert_eq!(key_outcome(503, None), KeyOutcome::Neutral);
    }
}
