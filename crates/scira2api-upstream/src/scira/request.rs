//! Translating an OpenAI chat request into the body Scira's `/api/search` accepts.

use super::{SciraBody, SciraConfig};
use scira2api_types::{Content, ContentPart, Error, Message};
use serde::Serialize;
use serde_json::Value;

/// A UI message part.
#[derive(Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Part {
    /// `{"type":"text","text":...}`
    Text { text: String },
    /// `{"type":"file","url":...,"mediaType":...}` (images, as https or data: URLs)
    File {
        url: String,
        #[serde(rename = "mediaType")]
        media_type: String,
    },
}

/// The media type of an image URL: from a `data:` URL's header, else guessed from the extension.
fn media_type(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some(mt) = rest.split([';', ',']).next().filter(|m| !m.is_empty()) {
            return mt.to_owned();
        }
    }
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    let ext = path.rsplit('.').next().unwrap_or("");
    match ext {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        _ => "image/jpeg",
    }
    .to_owned()
}

/// Scira's role for an OpenAI role: it knows `system`, `user` and `assistant`.
fn role(openai: &str) -> &'static str {
    match openai {
        "system" | "developer" => "system",
        "assistant" => "assistant",
        _ => "user",
    }
}

/// The parts of one message. A `tool` result becomes text that says what it answers.
fn parts(m: &Message) -> Vec<Part> {
    let mut out = Vec::new();
    match &m.content {
        Some(Content::Text(t)) if !t.is_empty() => out.push(Part::Text { text: t.clone() }),
        None | Some(Content::Text(_)) => {}
        Some(Content::Parts(ps)) => {
            for p in ps {
                match p {
                    ContentPart::Text { text } => out.push(Part::Text { text: text.clone() }),
                    ContentPart::ImageUrl { image_url } => out.push(Part::File {
                        url: image_url.url.clone(),
                        media_type: media_type(&image_url.url),
                    }),
                    ContentPart::Other => {}
                }
            }
        }
    }
    if m.role == "tool" {
        let id = m.tool_call_id.as_deref().unwrap_or("?");
        for p in &mut out {
            if let Part::Text { text } = p {
                *text = format!("[tool result for {id}]\n{text}");
            }
        }
    }
    out
}

#[derive(Serialize)]
struct UiMessage {
    id: String,
    role: &'static str,
    parts: Vec<Part>,
    /// v4 only: the message text beside `parts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
}

/// The Scira group that searches the web (its default when no group is sent).
pub(crate) const WEB_GROUP: &str = "web";

/// Builds the request body: a fresh chat id, the internal model, `group` (the configured
/// `SCIRA_GROUP`, or [`WEB_GROUP`] when the client asked for web search), timezone,
/// `isTemporaryChat`, and the whole history as UI messages (v5) or v4 messages.
/// `user_id` is sent with the v4 body when one is configured.
pub(crate) fn body(
    config: &SciraConfig,
    model: &str,
    group: &str,
    messages: &[Message],
    user_id: Option<&str>,
) -> Result<Vec<u8>, Error> {
    let mut ui = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let parts = parts(m);
        if parts.is_empty() {
            continue;
        }
        let content = (config.body == SciraBody::V4).then(|| {
            parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    Part::File { .. } => None,
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        ui.push(UiMessage {
            id: format!("msg-{i}-{}", uuid::Uuid::new_v4().simple()),
            role: role(&m.role),
            parts,
            content,
        });
    }
    if !ui.iter().any(|m| m.role == "user") {
        return Err(Error::invalid(
            "Scira needs at least one user message with text or an image",
            Some("messages"),
        ));
    }
    let mut body = serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "model": model,
        "group": group,
        "timezone": config.timezone,
        "messages": ui,
    });
    match config.body {
        SciraBody::V5 => {
            body["isTemporaryChat"] = Value::Bool(true);
            body["isCustomInstructionsEnabled"] = Value::Bool(false);
        }
        SciraBody::V4 => {
            body["selectedVisibilityType"] = Value::from("private");
            if let Some(uid) = user_id {
                body["user_id"] = Value::from(uid);
            }
        }
    }
    serde_json::to_vec(&body)
        .map_err(|e| Error::Internal(format!("cannot encode the Scira body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(v: Value) -> Vec<Message> {
        serde_json::from_value(v).unwrap()
    }

    fn cfg(body: SciraBody) -> SciraConfig {
        SciraConfig {
            body,
            ..SciraConfig::default()
        }
    }

    #[test]
    fn v5_body_has_ui_messages_with_parts() {
        let m = msgs(json!([
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"what is this?"},{"type":"image_url","image_url":{"url":"data:image/webp;base64,AAAA"}}]},
            {"role":"assistant","content":null,"tool_calls":[]},
            {"role":"assistant","content":"a cat"},
            {"role":"tool","tool_call_id":"c1","content":"42"},
            {"role":"user","content":"thanks"}
        ]));
        let b: Value = serde_json::from_slice(
            &body(&cfg(SciraBody::V5), "scira-default", "chat", &m, None).unwrap(),
        )
        .unwrap();
        assert_eq!(b["model"], "scira-default");
        assert_eq!(b["group"], "chat");
        assert_eq!(b["timezone"], "UTC");
        assert_eq!(b["isTemporaryChat"], true);
        assert!(uuid::Uuid::parse_str(b["id"].as_str().unwrap()).is_ok());
        let ms = b["messages"].as_array().unwrap();
        assert_eq!(ms.len(), 5, "the empty tool-call message is dropped");
        assert_eq!(ms[0]["role"], "system");
        assert_eq!(ms[0]["parts"], json!([{"type":"text","text":"be brief"}]));
        assert_eq!(
            ms[1]["parts"][1],
            json!({"type":"file","url":"data:image/webp;base64,AAAA","mediaType":"image/webp"})
        );
        assert_eq!(ms[3]["role"], "user");
        assert_eq!(ms[3]["parts"][0]["text"], "[tool result for c1]\n42");
        assert!(
            ms.iter()
                .all(|m| m["id"].is_string() && m.get("content").is_none())
        );
        assert!(b.get("user_id").is_none());
    }

    #[test]
    fn v4_body_has_content_and_user_id() {
        let m = msgs(json!([{"role":"user","content":"hi"}]));
        let b: Value = serde_json::from_slice(
            &body(
                &cfg(SciraBody::V4),
                "scira-default",
                "chat",
                &m,
                Some("user-1"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(b["messages"][0]["content"], "hi");
        assert_eq!(
            b["messages"][0]["parts"],
            json!([{"type":"text","text":"hi"}])
        );
        assert_eq!(b["user_id"], "user-1");
    }

    #[test]
    fn needs_a_user_message() {
        let m = msgs(json!([{"role":"system","content":"x"}]));
        assert_eq!(
            body(&cfg(SciraBody::V5), "m", "chat", &m, None)
                .unwrap_err()
                .param(),
            Some("messages")
        );
    }

    #[test]
    fn media_types() {
        assert_eq!(media_type("https://x/a.PNG?x=1"), "image/png");
        assert_eq!(media_type("data:image/gif;base64,AA"), "image/gif");
        assert_eq!(media_type("https://x/a"), "image/jpeg");
    }
}
