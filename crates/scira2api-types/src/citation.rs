//! Web sources an answer cites, as OpenAI `url_citation` annotations.
//!
//! A provider that knows its sources (Scira's search results, its official API's `sources`)
//! turns them into [`Citation`]s over the answer's text with [`cite`]: each source spans the
//! first markdown link to its URL in the text (`[label](url)`), or the whole text when the
//! answer does not mark it. Indexes count Unicode scalar values, as OpenAI's SDKs slice.

use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};

/// One web source with the span of the answer text that cites it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citation {
    /// The source's URL.
    pub url: String,
    /// Its title, when the upstream gave one.
    pub title: Option<String>,
    /// First character of the citing span.
    pub start_index: usize,
    /// One past its last character.
    pub end_index: usize,
}

/// Most sources kept for one answer: a deep search can return hundreds of results, and an
/// answer's annotations must stay a bounded size.
pub const MAX_CITATIONS: usize = 64;

impl Serialize for Citation {
    /// `{"type":"url_citation","url_citation":{"start_index","end_index","title","url"}}`
    /// (OpenAI requires a title: the URL stands in when the upstream gave none).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Inner<'a>(&'a Citation);
        impl Serialize for Inner<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let c = self.0;
                let mut st = s.serialize_struct("url_citation", 4)?;
                st.serialize_field("start_index", &c.start_index)?;
                st.serialize_field("end_index", &c.end_index)?;
                st.serialize_field("title", c.title.as_deref().unwrap_or(&c.url))?;
                st.serialize_field("url", &c.url)?;
                st.end()
            }
        }
        let mut st = s.serialize_struct("annotation", 2)?;
        st.serialize_field("type", "url_citation")?;
        st.serialize_field("url_citation", &Inner(self))?;
        st.end()
    }
}

/// The character span of the first markdown link to `url` in `text` (`[label](url)`, the
/// brackets included), if there is one.
fn link_span(text: &str, url: &str) -> Option<(usize, usize)> {
    let target = format!("]({url})");
    let close = text.find(&target)?;
    let open = text[..close].rfind('[')?;
    let start = text[..open].chars().count();
    let end = start + text[open..close + target.len()].chars().count();
    Some((start, end))
}

/// Citations for `text` from `sources` (URL and title, in the order the upstream gave them),
/// one per distinct URL (the first title kept), at most [`MAX_CITATIONS`].
pub fn cite(text: &str, sources: &[(String, Option<String>)]) -> Vec<Citation> {
    let len = text.chars().count();
    let mut out: Vec<Citation> = Vec::new();
    for (url, title) in sources {
        if url.is_empty() || out.iter().any(|c| &c.url == url) {
            continue;
        }
        if out.len() == MAX_CITATIONS {
            break;
        }
        let (start_index, end_index) = link_span(text, url).unwrap_or((0, len));
        out.push(Citation {
            url: url.clone(),
            title: title.clone().filter(|t| !t.is_empty()),
            start_index,
            end_index,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_source_spans_its_link_others_the_text() {
        let text = "Scira é um motor ([scira.ai](https://scira.ai/)). Mais.";
        let c = cite(
            text,
            &[
                ("https://scira.ai/".into(), Some("Scira AI".into())),
                ("https://github.com/x".into(), None),
                ("https://scira.ai/".into(), Some("dup".into())),
            ],
        );
        assert_eq!(c.len(), 2);
        let chars: Vec<char> = text.chars().collect();
        let span: String = chars[c[0].start_index..c[0].end_index].iter().collect();
        assert_eq!(span, "[scira.ai](https://scira.ai/)");
        assert_eq!((c[1].start_index, c[1].end_index), (0, chars.len()));
        let v = serde_json::to_value(&c[1]).unwrap();
        assert_eq!(v["type"], "url_citation");
        assert_eq!(v["url_citation"]["title"], "https://github.com/x");
        assert_eq!(v["url_citation"]["url"], "https://github.com/x");
    }

    #[test]
    fn citations_are_bounded() {
        let sources: Vec<(String, Option<String>)> =
            (0..500).map(|i| (format!("https://e/{i}"), None)).collect();
        assert_eq!(cite("t", &sources).len(), MAX_CITATIONS);
    }
}
