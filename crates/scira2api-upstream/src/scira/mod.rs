//! The Scira provider: OpenAI chat requests answered by Scira's `POST /api/search`.
//!
//! * `request` — the OpenAI history becomes Scira UI messages (or the older v4 body);
//! * `events` — Scira's stream, in any of its three formats, becomes [`events::SciraEvent`]s;
//! * `answer` — those events become OpenAI chunks or one completion;
//! * `errors` — Scira's JSON errors before the stream become OpenAI errors.
//! * `capabilities` — what a chat request may ask of Scira: refused requirements, dropped hints.

mod answer;
mod capabilities;
mod errors;
mod events;
mod models;
mod request;

pub(crate) use answer::{SciraStreamDecoder, collect};
pub use capabilities::{SCIRA_ANONYMOUS_MODELS, SCIRA_GROUPS};
pub(crate) use capabilities::{check_session, dropped as dropped_params, refuse};
pub(crate) use errors::map_error;
pub use models::{SCIRA_DEFAULT_MAPPINGS, SCIRA_OWNED_BY};
pub(crate) use request::{WEB_GROUP, body};

/// Which request body shape is sent to Scira.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SciraBody {
    /// AI SDK 5/6 UI messages (`parts` only), `isTemporaryChat`: what Scira accepts today.
    #[default]
    V5,
    /// AI SDK 4 era: `content` beside `parts`, plus `user_id`.
    V4,
}

/// A current desktop Chrome User-Agent, sent unless `SCIRA_USER_AGENT` says otherwise.
pub const DEFAULT_SCIRA_USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// Scira provider settings.
#[derive(Clone)]
pub struct SciraConfig {
    /// Path of the chat endpoint under the base URL (`/api/search`).
    pub path: String,
    /// Search group (`chat` = no web tools).
    pub group: String,
    /// IANA time zone sent with each request.
    pub timezone: String,
    /// Body shape.
    pub body: SciraBody,
    /// Browser User-Agent sent upstream.
    pub user_agent: String,
    /// Cookie header values (signed-in sessions), rotated. Secret.
    pub cookies: Vec<String>,
    /// `user_id` values for the v4 body, rotated.
    pub user_ids: Vec<String>,
    /// Raw Scira model ids added to `/v1/models`.
    pub extra_models: Vec<String>,
    /// Whether the answer's web sources become `url_citation` annotations
    /// (`SCIRA_CITATIONS`).
    pub citations: bool,
}

impl Default for SciraConfig {
    fn default() -> Self {
        SciraConfig {
            path: "/api/search".to_owned(),
            group: "chat".to_owned(),
            timezone: "UTC".to_owned(),
            body: SciraBody::V5,
            user_agent: DEFAULT_SCIRA_USER_AGENT.to_owned(),
            cookies: Vec::new(),
            user_ids: Vec::new(),
            extra_models: Vec::new(),
            citations: true,
        }
    }
}

impl std::fmt::Debug for SciraConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SciraConfig")
            .field("path", &self.path)
            .field("group", &self.group)
            .field("timezone", &self.timezone)
            .field("body", &self.body)
            .field("cookies", &format_args!("[{} masked]", self.cookies.len()))
            .field("user_ids", &self.user_ids.len())
            .finish()
    }
}

/// `scheme://host[:port]` of a URL, for the `Origin` header.
pub(crate) fn origin(base_url: &str) -> String {
    match base_url.find("://") {
        Some(i) => {
            let rest = &base_url[i + 3..];
            let end = rest.find('/').unwrap_or(rest.len());
            format!("{}{}", &base_url[..i + 3], &rest[..end])
        }
        None => base_url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_of_base() {
        assert_eq!(origin("https://scira.ai"), "https://scira.ai");
        assert_eq!(origin("http://127.0.0.1:9/x/y"), "http://127.0.0.1:9");
    }

    #[test]
    fn debug_masks_cookies() {
        let c = SciraConfig {
            cookies: vec!["session=secret".into()],
            ..SciraConfig::default()
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
