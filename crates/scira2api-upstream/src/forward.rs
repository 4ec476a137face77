//! OpenAI endpoints beside chat, forwarded to an OpenAI-compatible upstream
//! ([`ProviderKind::serves_openai_endpoints`]):
//!
//! * [`Upstream::forward_json`] — a JSON body with a `model` (embeddings, legacy completions,
//!   moderations, image generation, speech): only `model` replaced (plus what the caller adds,
//!   such as a forced `stream_options`), with retries; the answer as one JSON object (its
//!   `model` set back), a completions event stream passed through event by event, or a binary
//!   answer (speech audio) streamed through with its content type.
//! * [`Upstream::forward_raw`] — a request carrying no model (files, batches) or a multipart
//!   upload, streamed both ways as it is: one attempt, since a streamed body cannot be sent
//!   twice; the upstream's status and body (errors included) passed back.
//!
//! [`ProviderKind::serves_openai_endpoints`]: crate::ProviderKind::serves_openai_endpoints

use crate::bounded::{Bounded, Bounds};
use crate::client::Upstream;
use crate::errors::{map_openai_error, send_error};
use crate::openai::{ModelRewrite, OpenAiStreamDecoder};
use crate::outgoing::Outgoing;
use crate::received::Received;
use crate::retry::RetryPolicy;
use crate::stream::{DecodedStream, FrameStream, humantime_short};
use awc::http::Method;
use awc::http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use bytes::Bytes;
use futures_util::Stream;
use scira2api_types::{Error, RawObject, json_string};
use std::cell::Cell;
use std::pin::Pin;
use std::time::Duration;

/// A body streamed as it arrives, ending with an `Err` item when it breaks off.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>>>>;

/// What a forwarded JSON endpoint answered.
pub enum ForwardReply {
    /// One JSON object, `model` set back to the client's name.
    Json(Bytes),
    /// An OpenAI event stream (legacy completions), event by event, without `[DONE]`.
    Stream(FrameStream),
    /// A binary answer (speech audio) and its content type.
    Binary {
        /// The upstream's `Content-Type`.
        content_type: String,
        /// The body as it arrives.
        body: ByteStream,
    },
}

/// What a raw forward answered (a 2xx; any other status is an [`Error`]): the upstream's
/// status, content type and body, as they were.
pub struct RawReply {
    /// The upstream's status.
    pub status: u16,
    /// Its `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Its body, streamed.
    pub body: ByteStream,
}

/// How a forwarded answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// One JSON object.
    Json,
    /// An OpenAI event stream.
    Events,
    /// Bytes of any type (speech).
    Binary,
}

/// The errors of an upstream answer streamed through: the upstream's failures (502, 504).
struct Passthrough {
    host: String,
}

impl Bounds for Passthrough {
    fn too_large(&self) -> Error {
        Error::upstream(format!(
            "the answer from {} is larger than MAX_BODY_BYTES",
            self.host
        ))
    }

    fn broken(&self, e: &dyn std::fmt::Display) -> Error {
        Error::upstream(format!("the answer from {} broke off: {e}", self.host))
    }

    fn silent(&self, idle: Duration) -> Error {
        Error::UpstreamTimeout(format!(
            "{} sent nothing for {} (CLIENT_TIMEOUT); the answer is incomplete",
            self.host,
            humantime_short(idle)
        ))
    }
}

impl Upstream {
    /// `resp`'s body streamed within `CLIENT_TIMEOUT` between chunks, and at most `limit` bytes
    /// (none for a download that is never held, only passed on).
    fn passthrough(&self, resp: Received, limit: Option<usize>) -> ByteStream {
        let host = self.config().host().to_owned();
        Box::pin(Bounded::new(
            Box::pin(resp),
            self.config().settings().client_timeout,
            limit,
            Passthrough { host },
        ))
    }

    /// Sends a JSON endpoint's body (`path` under `/v1`, e.g. `embeddings`) for
    /// `internal_model`: the client's bytes with `model` and the `extra` top-level fields
    /// replaced; the answer read as `answer` says. At most `attempts` attempts.
    #[allow(clippy::too_many_arguments)] // the chat call's recipe plus the endpoint's
    pub async fn forward_json(
        &self,
        path: &str,
        req: &RawObject,
        client_model: &str,
        internal_model: &str,
        extra: &[(&str, &str)],
        answer: Answer,
        retries: &Cell<u32>,
        attempts: Option<u32>,
    ) -> Result<ForwardReply, Error> {
        let mut policy: RetryPolicy = self.config().settings().retry;
        if let Some(n) = attempts {
            policy.attempts = n.max(1);
        }
        let url = self.config().v1_url(path);
        let literal = json_string(internal_model);
        let mut replace = vec![("model", literal.as_str())];
        replace.extend_from_slice(extra);
        let body = req.with_replaced(&replace);
        let rewrite = ModelRewrite::new(client_model, internal_model);
        let build = |key: Option<&str>| {
            let mut http = self
                .authorized(self.request(Outgoing::new(Method::POST, &url)), key, None)
                .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")));
            if answer == Answer::Events {
                http = http.insert_header((ACCEPT, HeaderValue::from_static("text/event-stream")));
            }
            http
        };
        let accept = async |resp: Received| match answer {
            Answer::Binary => {
                let content_type = resp
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                Ok(ForwardReply::Binary {
                    content_type,
                    body: self.passthrough(resp, Some(self.config().settings().max_body_bytes)),
                })
            }
            Answer::Events => {
                let s = self.config().settings();
                let stream = DecodedStream::new(
                    Box::pin(resp),
                    OpenAiStreamDecoder::new(rewrite.clone()),
                    s.client_timeout,
                    s.max_body_bytes,
                )
                .redacting(self.config().secrets.clone())
                .primed()
                .await?;
                Ok(ForwardReply::Stream(stream.boxed()))
            }
            Answer::Json => {
                let body = self.read_body(resp).await?;
                crate::client::check_json_object(&body, [], || self.config().host())?;
                Ok(ForwardReply::Json(rewrite.apply(body)))
            }
        };
        self.send(
            policy,
            &self.config().keys,
            retries,
            build,
            &body,
            |_, status, wait, _, body| map_openai_error(status, wait, body),
            accept,
        )
        .await
    }

    /// Forwards a request as it is — `method`, `path_and_query` under `/v1`, its content type,
    /// its body (if it has one) streamed — and passes back the upstream's 2xx answer as it is, streamed; any
    /// other status becomes the [`Error`] chat's would (a 401 a 403 naming the operator's key).
    /// One attempt: a streamed body cannot be sent twice.
    pub async fn forward_raw<S>(
        &self,
        method: &str,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Option<S>,
    ) -> Result<RawReply, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + 'static,
    {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| Error::invalid(format!("`{method}` is not an HTTP method"), None))?;
        let url = self.config().v1_url(path_and_query);
        let key = self.config().keys.pick();
        let mut http = self.authorized(
            self.request(Outgoing::new(method, &url)),
            key.as_ref().map(|k| k.value),
            None,
        );
        if let Some(ct) = content_type {
            http = http.insert_header((CONTENT_TYPE, ct));
        }
        let secrets = &self.config().secrets;
        let sent = match http.into_awc(self.client()) {
            Ok(http) => match body {
                Some(body) => http.send_stream(body).await,
                None => http.send().await,
            },
            Err(e) => Err(e),
        };
        let resp = Received::awc(sent.map_err(|e| secrets.error(send_error(e, self.config())))?);
        let status = resp.status();
        if !status.is_success() {
            let wait = crate::errors::retry_after(resp.headers());
            let body = self.read_body(resp).await.unwrap_or_default();
            return Err(secrets.error(map_openai_error(status.as_u16(), wait, &body)));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(RawReply {
            status: status.as_u16(),
            content_type,
            body: self.passthrough(resp, None),
        })
    }
}
