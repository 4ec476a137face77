//! The client's chat request, read just deeply enough to route it.
//!
//! A gateway must forward every field it does not understand. Instead of deserialising the body
//! into a struct and serialising it again (which drops or reorders fields and costs time), the
//! top level of the JSON object is split into raw spans over the original bytes. Only `model`,
//! `stream`, `stream_options` and `messages` are looked at; everything else travels as the exact
//! bytes the client sent.

use crate::Error;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;
use std::ops::Range;

/// One top-level field of a JSON object: its key and the byte range of its raw value.
#[derive(Debug, Clone)]
struct Field {
    key: Key,
    value: Range<usize>,
}

/// A top-level key: a span of the body when written without escapes (the usual case, which
/// costs no allocation), else its decoded text.
#[derive(Debug, Clone)]
enum Key {
    Span(Range<usize>),
    Decoded(String),
}

/// Reads a key as a span of `base` when serde_json can lend it, else as decoded text.
struct KeySeed<'a> {
    base: &'a [u8],
}

impl<'de> Visitor<'de> for KeySeed<'de> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key, E> {
        let start = v.as_ptr() as usize - self.base.as_ptr() as usize;
        Ok(Key::Span(start..start + v.len()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Key, E> {
        Ok(Key::Decoded(v.to_owned()))
    }
}

impl<'de> DeserializeSeed<'de> for KeySeed<'de> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

/// The top level of a JSON object as key/raw-value spans over the original bytes.
#[derive(Debug, Clone)]
pub struct RawObject {
    body: Bytes,
    fields: Vec<Field>,
}

struct FieldsVisitor<'a> {
    base: &'a [u8],
}

impl<'de> Visitor<'de> for FieldsVisitor<'de> {
    type Value = Vec<Field>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
        let base = self.base.as_ptr() as usize;
        while let Some(key) = map.next_key_seed(KeySeed { base: self.base })? {
            let raw: &'de RawValue = map.next_value()?;
            let start = raw.get().as_ptr() as usize - base;
            fields.push(Field {
                key,
                value: start..start + raw.get().len(),
            });
        }
        Ok(fields)
    }
}

impl RawObject {
    /// Splits `body` into top-level fields. Fails with a 400 naming line and column when the body
    /// is not valid JSON, or is JSON but not an object.
    pub fn parse(body: Bytes) -> Result<Self, Error> {
        let mut de = serde_json::Deserializer::from_slice(&body);
        let fields = de
            .deserialize_map(FieldsVisitor { base: &body })
            .and_then(|f| de.end().map(|_| f))
            .map_err(|e| {
                let what = if e.is_data() {
                    "The request body must be a JSON object"
                } else {
                    "The request body is not valid JSON"
                };
                Error::invalid(format!("{what}: {e}"), None)
            })?;
        Ok(RawObject { body, fields })
    }

    /// A field's key as bytes (a span is valid UTF-8: serde_json lent it as a `&str`).
    fn key_bytes<'a>(&'a self, f: &'a Field) -> &'a [u8] {
        match &f.key {
            Key::Span(r) => &self.body[r.clone()],
            Key::Decoded(s) => s.as_bytes(),
        }
    }

    fn field(&self, key: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| self.key_bytes(f) == key.as_bytes())
    }

    /// The first top-level key that appears more than once. Parsers disagree on which copy
    /// wins (serde takes the first, most upstreams the last), so such a body is refused rather
    /// than read differently by the gateway and the upstream.
    pub fn duplicate_key(&self) -> Option<&str> {
        self.fields.iter().enumerate().find_map(|(i, f)| {
            let key = self.key_bytes(f);
            self.fields[..i]
                .iter()
                .any(|g| self.key_bytes(g) == key)
                .then(|| std::str::from_utf8(key).unwrap_or_default())
        })
    }

    /// The raw JSON text of a top-level field, if present.
    pub fn raw(&self, key: &str) -> Option<&str> {
        let f = self.field(key)?;
        // The span was cut from a `&str` produced by serde_json, so it is valid UTF-8.
        std::str::from_utf8(&self.body[f.value.clone()]).ok()
    }

    /// Deserialises one top-level field.
    pub fn get<'a, T: Deserialize<'a>>(&'a self, key: &str) -> Option<serde_json::Result<T>> {
        let f = self.field(key)?;
        Some(serde_json::from_slice(&self.body[f.value.clone()]))
    }

    /// The original bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.body
    }

    /// Keys in the order the client sent them.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .map(|f| std::str::from_utf8(self.key_bytes(f)).unwrap_or_default())
    }

    /// Rebuilds the object with some top-level values replaced by new raw JSON; fields not named
    /// in `replace` keep their exact bytes and order, and replacements for absent keys are
    /// appended. Returns the original bytes unchanged (no copy) when there is nothing to replace.
    pub fn with_replaced(&self, replace: &[(&str, &str)]) -> Bytes {
        if replace.is_empty() {
            return self.body.clone();
        }
        let extra: usize = replace.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut out = Vec::with_capacity(self.body.len() + extra);
        out.push(b'{');
        for f in &self.fields {
            if out.len() > 1 {
                out.push(b',');
            }
            let key = self.key_bytes(f);
            match &f.key {
                // A span is the key exactly as the client escaped it (it had no escapes).
                Key::Span(r) => out.extend_from_slice(&self.body[r.start - 1..r.end + 1]),
                // Keys are plain strings: serialising them cannot fail.
                Key::Decoded(k) => {
                    let _ = serde_json::to_writer(&mut out, k);
                }
            }
            out.push(b':');
            match replace.iter().find(|(k, _)| k.as_bytes() == key) {
                Some((_, v)) => out.extend_from_slice(v.as_bytes()),
                None => out.extend_from_slice(&self.body[f.value.clone()]),
            }
        }
        for (k, v) in replace {
            if self.field(k).is_none() {
                if out.len() > 1 {
                    out.push(b',');
                }
                // Keys are plain strings: serialising them cannot fail.
                let _ = serde_json::to_writer(&mut out, k);
                out.push(b':');
                out.extend_from_slice(v.as_bytes());
            }
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

/// Whether `json` has a field `key` whose value starts with the byte `first` (e.g. `b'"'` for a
/// string, `b'{'` for an object), found by scanning, not parsing. Inside JSON strings quotes are
/// escaped, so an unescaped `"key"` followed by `:` can only be a real field.
pub fn field_starts_with(json: &[u8], key: &str, first: u8) -> bool {
    let trim = |s: &[u8]| -> usize { s.iter().take_while(|b| b.is_ascii_whitespace()).count() };
    let mut rest = json;
    while let Some(pos) = find_quoted(rest, key.as_bytes()) {
        rest = &rest[pos..];
        let after = &rest[trim(rest)..];
        if let Some(after) = after.strip_prefix(b":") {
            if after.get(trim(after)) == Some(&first) {
                return true;
            }
        }
    }
    false
}

/// Position just after the next `"key"` in `hay` (a vectorised substring search for the key,
/// then a check of the quotes around it).
fn find_quoted(hay: &[u8], key: &[u8]) -> Option<usize> {
    let finder = memchr::memmem::Finder::new(key);
    let mut from = 0;
    while let Some(i) = finder.find(&hay[from..]) {
        let (start, end) = (from + i, from + i + key.len());
        if start > 0 && hay[start - 1] == b'"' && hay.get(end) == Some(&b'"') {
            return Some(end + 1);
        }
        from = start + 1;
    }
    None
}

/// Encodes a string as a JSON string literal.
pub fn json_string(s: &str) -> String {
    // Serialising a &str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

/// Replaces the top-level `model` of a JSON object (a completion or a stream chunk) with `model`,
/// keeping every other byte (an object without `model` is returned as it is). Returns `None`
/// when `json` is not an object.
pub fn rewrite_model(json: Bytes, model: &str) -> Option<Bytes> {
    replace_model_literal(json, &json_string(model))
}

/// Like [`rewrite_model`] with the new value given as a JSON string literal. The fast path
/// splices the literal over the old value's bytes (found by [`crate::top_level_value`]); only
/// what the scanner does not understand takes a full parse.
pub fn replace_model_literal(json: Bytes, literal: &str) -> Option<Bytes> {
    if let Some(r) = crate::top_level_value(&json, "model").filter(|r| json[r.start] == b'"') {
        let mut out = Vec::with_capacity(json.len() + literal.len());
        out.extend_from_slice(&json[..r.start]);
        out.extend_from_slice(literal.as_bytes());
        out.extend_from_slice(&json[r.end..]);
        return Some(Bytes::from(out));
    }
    let obj = RawObject::parse(json.clone()).ok()?;
    if obj.raw("model").is_none() {
        return Some(json);
    }
    Some(obj.with_replaced(&[("model", literal)]))
}

/// A validated chat completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    obj: RawObject,
    /// The model name the client asked for (external name).
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether the client asked for the usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

impl ChatRequest {
    /// Parses and validates a `/v1/chat/completions` body: valid JSON object, `model` a non-empty
    /// string, `messages` a non-empty array of objects with a string `role`, `stream` a boolean.
    pub fn parse(body: Bytes) -> Result<Self, Error> {
        let obj = RawObject::parse(body)?;
        if let Some(key) = obj.duplicate_key() {
            return Err(Error::invalid(
                format!(
                    "The request body has the field `{}` more than once; send each field once.",
                    crate::log_safe(key)
                ),
                Some(key),
            ));
        }
        let model = match obj.get::<String>("model") {
            None => {
                return Err(Error::invalid(
                    "you must provide a model parameter",
                    Some("model"),
                ));
            }
            Some(Err(_)) => return Err(Error::invalid("`model` must be a string", Some("model"))),
            Some(Ok(m)) if m.trim().is_empty() => {
                return Err(Error::invalid("`model` must not be empty", Some("model")));
            }
            Some(Ok(m)) => m,
        };
        // The common case is shown by a scan of the span serde has just validated; otherwise
        // serde decides, and a slower per-message pass names a bad message.
        let messages = obj.field("messages").map(|f| &obj.body[f.value.clone()]);
        if !messages.is_some_and(|m| crate::scan::objects_with_string_field(m, "role")) {
            Self::check_messages(&obj)?;
        }
        let stream = match obj.get::<Option<bool>>("stream") {
            None => false,
            Some(Ok(s)) => s.unwrap_or(false),
            Some(Err(_)) => {
                return Err(Error::invalid("`stream` must be a boolean", Some("stream")));
            }
        };
        let include_usage = match obj.get::<Option<StreamOptions>>("stream_options") {
            None | Some(Ok(None)) => false,
            Some(Ok(Some(o))) => o.include_usage.unwrap_or(false),
            Some(Err(_)) => {
                return Err(Error::invalid(
                    "`stream_options` must be an object like {\"include_usage\": true}",
                    Some("stream_options"),
                ));
            }
        };
        Ok(ChatRequest {
            obj,
            model,
            stream,
            include_usage,
        })
    }

    /// The messages checked by serde: a non-empty array of objects with a string `role`, or
    /// a 400 naming what is wrong (the bad message's index when one is).
    fn check_messages(obj: &RawObject) -> Result<(), Error> {
        #[derive(Deserialize)]
        struct RoleOnly<'a> {
            #[serde(borrow, rename = "role")]
            _role: std::borrow::Cow<'a, str>,
        }
        match obj.get::<Vec<RoleOnly>>("messages") {
            Some(Ok(list)) if !list.is_empty() => Ok(()),
            None => Err(Error::invalid(
                "you must provide a messages parameter",
                Some("messages"),
            )),
            Some(Ok(_)) => Err(Error::invalid(
                "`messages` must contain at least one message",
                Some("messages"),
            )),
            Some(Err(_)) => match obj.get::<Vec<&RawValue>>("messages") {
                Some(Ok(list)) => {
                    for (i, m) in list.iter().enumerate() {
                        if serde_json::from_str::<RoleOnly>(m.get()).is_err() {
                            return Err(Error::invalid(
                                format!("`messages[{i}]` must be an object with a string `role`"),
                                Some(&format!("messages[{i}].role")),
                            ));
                        }
                    }
                    Err(Error::invalid("`messages` is not valid", Some("messages")))
                }
                _ => Err(Error::invalid(
                    "`messages` must be an array",
                    Some("messages"),
                )),
            },
        }
    }

    /// The request's top-level fields as raw spans.
    pub fn object(&self) -> &RawObject {
        &self.obj
    }

    /// The messages, fully parsed (for providers that must translate them).
    pub fn messages(&self) -> Result<Vec<crate::Message>, Error> {
        match self.obj.get::<Vec<crate::Message>>("messages") {
            Some(Ok(m)) => Ok(m),
            Some(Err(e)) => Err(Error::invalid(
                format!("invalid `messages`: {e}"),
                Some("messages"),
            )),
            None => Err(Error::invalid(
                "you must provide a messages parameter",
                Some("messages"),
            )),
        }
    }

    /// The body to send to an OpenAI-compatible upstream: the client's exact bytes with only
    /// `model` replaced, and for a stream `stream_options.include_usage` set so every answer's
    /// usage is known (the gateway drops the extra usage chunk again if the client did not ask).
    /// No copy at all when nothing changes.
    pub fn upstream_body(&self, internal_model: &str) -> Bytes {
        let model = (internal_model != self.model).then(|| json_string(internal_model));
        let options =
            (self.stream && !self.include_usage).then(|| self.stream_options_with_usage());
        let mut replace: Vec<(&str, &str)> = Vec::with_capacity(2);
        if let Some(m) = &model {
            replace.push(("model", m));
        }
        if let Some(o) = &options {
            replace.push(("stream_options", o));
        }
        self.obj.with_replaced(&replace)
    }

    /// The client's `stream_options` with `include_usage: true` added.
    fn stream_options_with_usage(&self) -> String {
        match self
            .obj
            .get::<serde_json::Map<String, serde_json::Value>>("stream_options")
        {
            Some(Ok(mut map)) => {
                map.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
                serde_json::Value::Object(map).to_string()
            }
            _ => r#"{"include_usage":true}"#.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn req(s: &str) -> Result<ChatRequest, Error> {
        ChatRequest::parse(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn duplicate_top_level_keys_are_refused() {
        let e = req(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":false,"stream":true}"#)
            .unwrap_err();
        assert_eq!((e.status(), e.param()), (400, Some("stream")));
        // Escaped and plain spellings of one key are the same key.
        let e = req(r#"{"model":"m","m\u006fdel":"n","messages":[{"role":"user","content":"x"}]}"#)
            .unwrap_err();
        assert_eq!(e.param(), Some("model"));
        // Nested objects may repeat keys of the top level.
        req(r#"{"model":"m","messages":[{"role":"user","content":"x","model":1}]}"#).unwrap();
    }

    #[test]
    fn rewrites_only_model_and_keeps_every_other_byte() {
        let body = r#"{ "temperature" : 0.5, "model":"gpt-4o","messages":[{"role":"user","content":null}],"x_vendor":{"a":[1,2]},"stream":true}"#;
        let r = req(body).unwrap();
        assert_eq!(r.model, "gpt-4o");
        assert!(r.stream);
        let out = r.upstream_body("scira-4o");
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            text,
            r#"{"temperature":0.5,"model":"scira-4o","messages":[{"role":"user","content":null}],"x_vendor":{"a":[1,2]},"stream":true,"stream_options":{"include_usage":true}}"#
        );
        // a stream always asks for usage
        let text = String::from_utf8(r.upstream_body("gpt-4o").to_vec()).unwrap();
        assert!(
            text.ends_with(r#""stream":true,"stream_options":{"include_usage":true}}"#),
            "{text}"
        );
        // same name, not a stream: the exact original bytes
        let plain = r#"{"model":"gpt-4o","messages":[{"role":"user"}],"stream_options":{"x":1}}"#;
        assert_eq!(
            &req(plain).unwrap().upstream_body("gpt-4o")[..],
            plain.as_bytes()
        );
        let s = req(
            r#"{"model":"m","messages":[{"role":"user"}],"stream":true,"stream_options":{"x":1}}"#,
        )
        .unwrap();
        let out: Value = serde_json::from_slice(&s.upstream_body("m")).unwrap();
        assert_eq!(
            out["stream_options"],
            serde_json::json!({"x":1,"include_usage":true})
        );
    }

    #[test]
    fn validation_names_the_param() {
        let e = req(r#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert_eq!(e.param(), Some("model"));
        let e = req(r#"{"model":5,"messages":[]}"#).unwrap_err();
        assert_eq!(e.param(), Some("model"));
        let e = req(r#"{"model":"m","messages":[]}"#).unwrap_err();
        assert_eq!(e.param(), Some("messages"));
        let e = req(r#"{"model":"m","messages":"hi"}"#).unwrap_err();
        assert_eq!(e.param(), Some("messages"));
        let e = req(r#"{"model":"m","messages":[{"content":"x"}]}"#).unwrap_err();
        assert_eq!(e.param(), Some("messages[0].role"));
        let e = req(r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#).unwrap_err();
        assert_eq!(e.param(), Some("stream"));
        let e = req(r#"{"model":"m","#).unwrap_err();
        assert!(e.to_string().contains("line 1 column"), "{e}");
        let e = req(r#"[1,2]"#).unwrap_err();
        assert!(e.to_string().contains("JSON object"), "{e}");
        let e = req(r#"{"model":"m","messages":[{"role":"user"}]} trailing"#).unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn include_usage_and_stream_null() {
        let r = req(r#"{"model":"m","messages":[{"role":"user"}],"stream":null,"stream_options":{"include_usage":true}}"#).unwrap();
        assert!(!r.stream);
        assert!(r.include_usage);
    }

    #[test]
    fn rewrite_model_in_chunk_handles_escaped_keys() {
        let chunk = Bytes::from_static(br#"{"id":"c1","model":"int","choices":[{"delta":{"content":"\"model\""}}],"k\u00e9y":1}"#);
        let out = rewrite_model(chunk, "ext").unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "ext");
        assert_eq!(v["choices"][0]["delta"]["content"], "\"model\"");
        assert_eq!(v["kéy"], 1);
        assert!(rewrite_model(Bytes::from_static(b"[1]"), "x").is_none());
    }

    #[test]
    fn field_scan() {
        assert!(field_starts_with(br#"{"usage" : {"a":1}}"#, "usage", b'{'));
        assert!(!field_starts_with(br#"{"usage":null}"#, "usage", b'{'));
        assert!(!field_starts_with(br#"{"c":"\"usage\":{"}"#, "usage", b'{'));
        assert!(field_starts_with(
            br#"{"x":"usage","finish_reason":"stop"}"#,
            "finish_reason",
            b'"'
        ));
    }

    #[test]
    fn appends_missing_field() {
        let o = RawObject::parse(Bytes::from_static(br#"{"a":1}"#)).unwrap();
        assert_eq!(
            &o.with_replaced(&[("b", "true")])[..],
            br#"{"a":1,"b":true}"#
        );
        let o = RawObject::parse(Bytes::from_static(br#"{}"#)).unwrap();
        assert_eq!(&o.with_replaced(&[("b", "2")])[..], br#"{"b":2}"#);
    }

    #[test]
    fn escaped_keys_are_found_and_kept() {
        let o = RawObject::parse(Bytes::from_static(
            br#"{"mo\u0064el":"a","x\"y":1,"plain":[1]}"#,
        ))
        .unwrap();
        assert_eq!(o.keys().collect::<Vec<_>>(), ["model", "x\"y", "plain"]);
        assert_eq!(o.raw("model"), Some(r#""a""#));
        assert_eq!(
            &o.with_replaced(&[("model", r#""b""#), ("plain", "2")])[..],
            br#"{"model":"b","x\"y":1,"plain":2}"#
        );
    }
}
