//! OpenAI chat messages, for providers that must translate them (Scira) rather than forward them.

use serde::Deserialize;

/// One OpenAI chat message. Fields other than these are not needed for translation.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// A string, an array of parts, or null (assistant tool-call messages).
    #[serde(default)]
    pub content: Option<Content>,
    /// The tool call id a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// The participant name, when given.
    #[serde(default)]
    pub name: Option<String>,
    /// An assistant message's tool calls, as sent.
    #[serde(default)]
    pub tool_calls: Option<serde_json::Value>,
}

/// Message content: plain text or an array of typed parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// `"content": "text"`.
    Text(String),
    /// `"content": [{"type":"text",...}, {"type":"image_url",...}]`.
    Parts(Vec<ContentPart>),
}

/// One part of an array content.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// `{"type":"text","text":"..."}`.
    Text {
        /// The text.
        text: String,
    },
    /// `{"type":"image_url","image_url":{"url":"..."}}` (an https or `data:` URL).
    ImageUrl {
        /// The image reference.
        image_url: ImageUrl,
    },
    /// Any other part type (audio, files, ...), which translating providers skip.
    #[serde(other)]
    Other,
}

/// The `image_url` object of an image part.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageUrl {
    /// An https URL or a `data:<media type>;base64,...` URL.
    pub url: String,
    /// `low`, `high` or `auto`.
    #[serde(default)]
    pub detail: Option<String>,
}

impl Content {
    /// The text of the content: the string, or the text parts joined by newlines.
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_content_shapes() {
        let m: Vec<Message> = serde_json::from_str(
            r#"[{"role":"user","content":"hi"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA","detail":"low"}},{"type":"input_audio","input_audio":{}}]},
                {"role":"assistant","content":null,"tool_calls":[]},
                {"role":"tool","content":"42","tool_call_id":"c1"}]"#,
        )
        .unwrap();
        assert_eq!(m[0].content.as_ref().unwrap().text(), "hi");
        let Some(Content::Parts(p)) = &m[1].content else {
            panic!()
        };
        assert!(
            matches!(&p[1], ContentPart::ImageUrl { image_url } if image_url.url.starts_with("data:"))
        );
        assert!(matches!(p[2], ContentPart::Other));
        assert!(m[2].content.is_none());
        assert_eq!(m[3].tool_call_id.as_deref(), Some("c1"));
    }
}
