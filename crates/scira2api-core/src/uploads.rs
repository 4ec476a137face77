//! OpenAI's streamed endpoints: multipart uploads routed by their `model` field
//! ([`UploadEndpoint`]: transcription, translation, image edits) and the endpoints that name no
//! model (`/v1/files`, `/v1/batches`), sent to the instance the config names for them.
//!
//! Their bodies are streamed upstream as they arrive and never held whole (see
//! [`crate::multipart`] for the one exception, what precedes a late `model` field), so each is
//! sent once: the router's pick, no retry and no fallback (a body already sent cannot be sent
//! again). Answers stream back with their status and content type (`text`, `srt`, `vtt`,
//! `json`, file contents); an upstream error becomes the OpenAI error chat's would.

use crate::gateway::Gateway;
use crate::multipart;
use crate::outcome::{CacheStatus, ChatContext};
use bytes::Bytes;
use futures_util::Stream;
use scira2api_types::Error;
use scira2api_upstream::{ByteStream, Upstream};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An OpenAI endpoint taking a `multipart/form-data` upload with a `model` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadEndpoint {
    /// `POST /v1/audio/transcriptions`.
    Transcriptions,
    /// `POST /v1/audio/translations`.
    Translations,
    /// `POST /v1/images/edits`.
    ImageEdits,
}

impl UploadEndpoint {
    /// The path under `/v1`.
    pub fn path(self) -> &'static str {
        match self {
            UploadEndpoint::Transcriptions => "audio/transcriptions",
            UploadEndpoint::Translations => "audio/translations",
            UploadEndpoint::ImageEdits => "images/edits",
        }
    }
}

/// A streamed answer, as the upstream gave it.
pub struct StreamedOutcome {
    /// The upstream's status (a 2xx).
    pub status: u16,
    /// The upstream's `Content-Type`.
    pub content_type: Option<String>,
    /// The body, streamed.
    pub body: ByteStream,
    /// The provider instance that answered.
    pub provider: Arc<str>,
    /// Time until the upstream's response head.
    pub upstream_time: Duration,
}

impl Gateway {
    /// Sends a multipart upload (`content_type` with its boundary, `body` as it arrives, at
    /// most `limit` bytes) to the instance its `model` field routes to, the field rewritten.
    pub async fn forward_upload<S>(
        &self,
        endpoint: UploadEndpoint,
        content_type: &str,
        body: S,
        limit: usize,
        ctx: ChatContext<'_>,
    ) -> Result<StreamedOutcome, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + 'static,
    {
        let boundary = multipart::boundary(content_type).ok_or_else(|| {
            Error::invalid(
                format!(
                    "/v1/{} takes multipart/form-data with a boundary",
                    endpoint.path()
                ),
                None,
            )
        })?;
        let upload = multipart::read_model(body, boundary, limit).await?;
        let model = upload.model.clone();
        log::debug!(
            "/v1/{} upload: model field read after {} bytes",
            endpoint.path(),
            upload.held_bytes()
        );
        if model.is_empty() {
            return Err(Error::invalid("`model` must not be empty", Some("model")));
        }
        crate::client::admit_model(&model)?;
        if let Some(o) = &ctx.observation {
            o.chat(&model, false);
        }
        self.check_served(Some(&model), endpoint.path())?;
        let state = self.state();
        let content_type = content_type.to_owned();
        let upload = RefCell::new(Some(upload));
        let retries = std::cell::Cell::new(0);
        let started = Instant::now();
        let send = async |up: &Upstream, internal: &str, _attempts: u32| {
            let Some(upload) = upload.borrow_mut().take() else {
                // Not reached with a budget of one; a streamed body is never sent twice.
                return Err(Error::Internal("an upload was to be sent twice".to_owned()));
            };
            let body = upload.with_model(internal).await?;
            up.forward_raw("POST", endpoint.path(), Some(&content_type), Some(body))
                .await
        };
        let (result, served) = if state.router.group(&model).is_some() {
            let (r, (i, _, _, _)) = self.route_within(&model, &retries, 1, None, send).await;
            (r, i)
        } else {
            let internal = state.catalog.map().to_internal(&model).to_owned();
            let i = state.default_instance;
            (send(&self.upstreams[i], &internal, 1).await, i)
        };
        self.streamed(result, served, started, &ctx)
    }

    /// Sends a `/v1/files` or `/v1/batches` request (`method`, `path_and_query` under `/v1`,
    /// its body, if it has one, as it arrives) to the instance the config names for them; a 404 when none is.
    pub async fn forward_files<S>(
        &self,
        method: &str,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Option<S>,
        ctx: ChatContext<'_>,
    ) -> Result<StreamedOutcome, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + 'static,
    {
        let state = self.state();
        let Some(i) = state.files_instance else {
            return Err(Error::ResourceNotFound {
                message: format!(
                    "No provider instance serves /v1/{}: name an OpenAI-compatible one as `files_provider` in the config file",
                    path_and_query.split(['/', '?']).next().unwrap_or("files")
                ),
                param: None,
            });
        };
        if let Some(o) = &ctx.observation {
            o.chat("-", false);
        }
        let started = Instant::now();
        let result = self.upstreams[i]
            .forward_raw(method, path_and_query, content_type, body)
            .await;
        self.streamed(result, i, started, &ctx)
    }

    fn streamed(
        &self,
        result: Result<scira2api_upstream::RawReply, Error>,
        served: usize,
        started: Instant,
        ctx: &ChatContext<'_>,
    ) -> Result<StreamedOutcome, Error> {
        let upstream_time = started.elapsed();
        if let Some(o) = &ctx.observation {
            o.called(1, upstream_time);
        }
        let reply = result?;
        let provider = self.state().instance_names[served].clone();
        if let Some(o) = &ctx.observation {
            o.answered(CacheStatus::Bypass, &provider, None);
        }
        Ok(StreamedOutcome {
            status: reply.status,
            content_type: reply.content_type,
            body: reply.body,
            provider,
            upstream_time,
        })
    }
}
