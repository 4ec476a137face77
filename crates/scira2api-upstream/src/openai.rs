//! The OpenAI-compatible provider: the client's body goes upstream with only `model` changed,
//! and the answer comes back with `model` changed back, every other byte as the upstream sent it.

use crate::lines::SseEvents;
use crate::stream::LineDecoder;
use bytes::Bytes;
use scira2api_types::{
    Error, field_starts_with, json_string, openai_error_message, replace_model_literal,
};
use std::collections::VecDeque;

/// Rewrites the `model` of upstream JSON objects to the name the client asked for.
#[derive(Debug, Clone)]
pub(crate) struct ModelRewrite {
    /// The JSON string literal of the client's name; `None` when no rewrite is needed.
    literal: Option<String>,
}

impl ModelRewrite {
    /// A rewrite to `external`, or none when the upstream already uses that name.
    pub(crate) fn new(external: &str, internal: &str) -> Self {
        ModelRewrite {
            literal: (external != internal).then(|| json_string(external)),
        }
    }

    /// Applies the rewrite to one JSON object; anything that is not an object, or has no
    /// `model`, passes unchanged.
    pub(crate) fn apply(&self, json: Bytes) -> Bytes {
        match &self.literal {
            Some(lit) => replace_model_literal(json.clone(), lit).unwrap_or(json),
            None => json,
        }
    }

    /// [`ModelRewrite::apply`] with the range of the object's top-level `model` already found
    /// (by the check of the whole answer), so the answer is not walked a second time.
    pub(crate) fn apply_at(&self, json: Bytes, model: Option<std::ops::Range<usize>>) -> Bytes {
        match (&self.literal, model) {
            (None, _) => json,
            (Some(lit), Some(r)) if json[r.start] == b'"' => {
                let mut out = Vec::with_capacity(json.len() + lit.len());
                out.extend_from_slice(&json[..r.start]);
                out.extend_from_slice(lit.as_bytes());
                out.extend_from_slice(&json[r.end..]);
                Bytes::from(out)
            }
            // No plain `model` (or not a string): the general rule decides.
            _ => self.apply(json),
        }
    }
}

/// Whether a chunk carries a non-null `finish_reason`.
fn has_finish_reason(json: &[u8]) -> bool {
    field_starts_with(json, "finish_reason", b'"')
}

/// Whether a chunk could be an error event (`{"error": {...}}`): a scan, so that ordinary chunks
/// are never parsed; only a candidate is parsed to be sure.
fn may_be_error(json: &[u8]) -> bool {
    json.starts_with(b"{\"error\"")
        || field_starts_with(json, "error", b'{')
        || field_starts_with(json, "error", b'[')
}

/// Checks that an event's data is one valid JSON object in UTF-8, so that garbage or a cut-off
/// line is reported instead of being passed on as part of a successful answer.
fn check_event(data: &[u8]) -> Result<(), Error> {
    let describe = |what: &str| {
        let snippet: String = String::from_utf8_lossy(data).chars().take(120).collect();
        Error::upstream(format!(
            "the upstream stream sent {what}: `{snippet}`; the answer is incomplete"
        ))
    };
    let text = std::str::from_utf8(data).map_err(|_| describe("an event that is not UTF-8"))?;
    if !text.trim_start().starts_with('{') {
        return Err(describe("an event that is not a JSON object"));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|_| describe("an event that is not valid JSON"))?;
    Ok(())
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

/// Passes an OpenAI SSE stream through, event by event.
pub(crate) struct OpenAiStreamDecoder {
    events: SseEvents,
    rewrite: ModelRewrite,
    saw_finish: bool,
    saw_event: bool,
}

impl OpenAiStreamDecoder {
    pub(crate) fn new(rewrite: ModelRewrite) -> Self {
        OpenAiStreamDecoder {
            events: SseEvents::default(),
            rewrite,
            saw_finish: false,
            saw_event: false,
        }
    }

    fn event(&mut self, data: Bytes, out: &mut VecDeque<Bytes>) -> Result<bool, Error> {
        self.saw_event = true;
        let trimmed = trim_start(&data);
        if trimmed.starts_with(b"[DONE]") {
            if !self.saw_finish {
                return Err(Error::upstream(
                    "the upstream ended the stream with [DONE] before any choice finished (no finish_reason); the answer may be incomplete",
                ));
            }
            return Ok(true);
        }
        if trimmed.is_empty() {
            return Ok(false);
        }
        check_event(&data)?;
        if may_be_error(&data) {
            let message = openai_error_message(&data);
            if message.is_some() || data.starts_with(b"{\"error\"") {
                let message = message.unwrap_or_default();
                return Err(Error::upstream_api(502, data, message, None));
            }
        }
        if !self.saw_finish && has_finish_reason(&data) {
            self.saw_finish = true;
        }
        out.push_back(scira2api_types::sse_frame(&self.rewrite.apply(data)));
        Ok(false)
    }
}

impl LineDecoder for OpenAiStreamDecoder {
    fn primed(&self) -> bool {
        self.saw_event
    }

    fn line(&mut self, line: Bytes, out: &mut VecDeque<Bytes>) -> Result<bool, Error> {
        match self.events.line(line) {
            Some(data) => self.event(data, out),
            None => Ok(false),
        }
    }

    fn end(&mut self, out: &mut VecDeque<Bytes>) -> Result<(), Error> {
        if let Some(data) = self.events.take() {
            if self.event(data, out)? {
                return Ok(());
            }
        }
        if self.saw_finish {
            Ok(())
        } else {
            Err(Error::upstream(
                "the upstream stream ended before the answer was complete (no finish_reason, no [DONE])",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn run(body: &str, rewrite: ModelRewrite) -> (Vec<String>, Result<(), Error>) {
        let mut d = OpenAiStreamDecoder::new(rewrite);
        let mut out = VecDeque::new();
        let mut res = Ok(());
        let mut complete = false;
        for line in body.split('\n') {
            match d.line(Bytes::copy_from_slice(line.as_bytes()), &mut out) {
                Ok(true) => {
                    complete = true;
                    break;
                }
                Ok(false) => {}
                Err(e) => {
                    res = Err(e);
                    break;
                }
            }
        }
        if res.is_ok() && !complete {
            res = d.end(&mut out);
        }
        (
            out.into_iter()
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
                .collect(),
            res,
        )
    }

    #[test]
    fn passes_frames_and_rewrites_model() {
        let body = "data: {\"id\":\"1\",\"model\":\"int\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{\\\"a\"}}]},\"finish_reason\":null}]}\n\n: keep\n\ndata: {\"model\":\"int\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let (frames, res) = run(body, ModelRewrite::new("ext", "int"));
        res.unwrap();
        assert_eq!(frames.len(), 2);
        let v: Value =
            serde_json::from_str(frames[0].strip_prefix("data: ").unwrap().trim_end()).unwrap();
        assert_eq!(v["model"], "ext");
        assert_eq!(v["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        assert!(frames[0].ends_with("}\n\n"));
    }

    #[test]
    fn no_rewrite_is_byte_identical() {
        let chunk = "{\"model\":\"m\", \"choices\":[{\"finish_reason\": \"stop\"}]}";
        let (frames, res) = run(&format!("data: {chunk}\n\n"), ModelRewrite::new("m", "m"));
        res.unwrap();
        assert_eq!(frames, [format!("data: {chunk}\n\n")]);
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let (frames, res) = run(
            "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"finish_reason\\\":\\\"x\"},\"finish_reason\":null}]}\n\n",
            ModelRewrite::new("m", "m"),
        );
        assert_eq!(frames.len(), 1);
        assert!(res.unwrap_err().to_string().contains("ended before"));
    }

    #[test]
    fn error_event_becomes_error() {
        let (_, res) = run(
            "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
            ModelRewrite::new("m", "m"),
        );
        let e = res.unwrap_err();
        assert!(e.body().starts_with(b"{\"error\":{\"message\":\"boom\""));
    }

    #[test]
    fn error_events_are_found_without_parsing_ordinary_chunks() {
        // An error object anywhere at the top level is an error, first key or not.
        let (_, res) = run(
            "data: {\"id\":\"x\",\"error\":{\"message\":\"late\",\"type\":\"server_error\"}}\n\n",
            ModelRewrite::new("m", "m"),
        );
        assert!(res.unwrap_err().to_string().contains("late"));
        // Text that merely mentions an error object is content.
        let chunk = r#"{"choices":[{"delta":{"content":"{\"error\":{\"message\":\"no\"}}"},"finish_reason":"stop"}]}"#;
        let (frames, res) = run(&format!("data: {chunk}\n\n"), ModelRewrite::new("m", "m"));
        res.unwrap();
        assert_eq!(frames, [format!("data: {chunk}\n\n")]);
        assert!(!may_be_error(chunk.as_bytes()));
    }

    #[test]
    fn garbage_and_early_done_are_errors() {
        let fin = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        for (body, want) in [
            (
                "data: {\"choices\":[]}\n\ndata: [DONE]\n\n".to_owned(),
                "before any choice finished",
            ),
            (format!("data: not json\n\n{fin}"), "not a JSON object"),
            (
                format!("data: {{\"choices\":[{{\n\n{fin}"),
                "not valid JSON",
            ),
        ] {
            let (_, res) = run(&body, ModelRewrite::new("m", "m"));
            let e = res.unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
        let mut d = OpenAiStreamDecoder::new(ModelRewrite::new("m", "m"));
        let mut out = VecDeque::new();
        let e = d
            .line(Bytes::from_static(b"data: {\"a\":\"\xff\"}"), &mut out)
            .and_then(|_| d.line(Bytes::new(), &mut out))
            .unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }

    #[test]
    fn finish_reason_scan() {
        assert!(has_finish_reason(br#"{"finish_reason" : "length"}"#));
        assert!(!has_finish_reason(br#"{"finish_reason":null}"#));
        assert!(!has_finish_reason(
            br#"{"content":"\"finish_reason\":\"stop\""}"#
        ));
    }
}
