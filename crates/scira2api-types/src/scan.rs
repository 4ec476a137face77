//! Finding one top-level field of a JSON object without parsing the rest.
//!
//! The gateway rewrites `model` in every answer and every stream chunk, and reads `usage` from
//! every answer. Both are top-level fields of objects the upstream produced; a full parse costs
//! an order of magnitude more than walking the bytes once. [`top_level_value`] walks them,
//! skipping nested values and strings (escapes included), and gives the byte range of the value.
//! It answers `None` for anything it does not understand, and callers then fall back to a full
//! parse, so a surprise costs time, never correctness.

use std::ops::Range;

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

const ONES: u64 = u64::from_ne_bytes([1; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// `byte` in each of the eight lanes of a word.
const fn splat(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// The high bit of each zero byte of `v` set; exact up to the first zero byte (a borrow can
/// only mark bytes above it), which is all [`first_of`] reads.
const fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & HIGHS
}

/// The index of the first `"` or `\\` in `b[i..end]`, eight bytes at a time (SWAR), or `end`.
/// Most strings (keys, ids, roles) are short, and `memchr` costs a call to start.
#[inline(always)]
fn first_of(b: &[u8], mut i: usize, end: usize) -> usize {
    while let Some(word) = b.get(i..i + 8).filter(|_| i + 8 <= end) {
        let mut lanes = [0; 8];
        lanes.copy_from_slice(word);
        let v = u64::from_le_bytes(lanes);
        let hits = zero_bytes(v ^ splat(b'"')) | zero_bytes(v ^ splat(b'\\'));
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < end && !matches!(b[i], b'"' | b'\\') {
        i += 1;
    }
    i
}

/// `i` is at an opening quote; returns the index just past the closing quote. The first bytes
/// are searched a word at a time; the rest of a long string (an answer's content) is crossed
/// with `memchr`, which is vectorised but costs a call to start.
#[inline(always)]
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    const SHORT: usize = 32;
    i += 1;
    let short_end = (i + SHORT).min(b.len());
    i = first_of(b, i, short_end);
    loop {
        if i >= short_end {
            i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        }
        if b[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
        if i < short_end {
            i = first_of(b, i, short_end);
        }
    }
}

/// `i` is at the first byte of a value; returns the index just past it.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The byte range of the value of the top-level field `key` in the JSON object `json`, or `None`
/// when `json` is not an object, has no such field (spelled without escapes), or is malformed.
pub fn top_level_value(json: &[u8], key: &str) -> Option<Range<usize>> {
    let b = json;
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return None;
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(b, i)?;
        let found = &b[i + 1..key_end - 1] == key.as_bytes();
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = skip_value(b, start)?;
        if found {
            return Some(start..end);
        }
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            _ => return None,
        }
    }
}

/// Whether `json` is one whole JSON object (and nothing after it but whitespace): a structural
/// scan — balanced brackets, closed strings, `key: value` pairs — without decoding anything,
/// so that checking an upstream's non-stream answer costs a fraction of a parse. It catches what
/// matters there: an HTML or text body, and a body cut short.
pub fn is_json_object(json: &[u8]) -> bool {
    object_fields(json, []).is_some()
}

/// [`is_json_object`] and [`top_level_value`] in one pass: `None` when `json` is not one whole
/// JSON object, else the byte range of the top-level field `key` (`None` when it has none), so
/// that an answer is checked and its `model` found without walking it twice.
pub fn object_field(json: &[u8], key: &str) -> Option<Option<Range<usize>>> {
    object_fields(json, [key]).map(|[r]| r)
}

/// [`object_field`] for several keys in the same pass: the range of the first top-level field
/// named by each of `keys` (an empty key names none), so that an answer is checked and its
/// `model` and `usage` found without walking it more than once.
pub fn object_fields<const N: usize>(
    json: &[u8],
    keys: [&str; N],
) -> Option<[Option<Range<usize>>; N]> {
    let mut found: [Option<Range<usize>>; N] = std::array::from_fn(|_| None);
    each_field(json, |k, v| {
        for (key, slot) in keys.iter().zip(found.iter_mut()) {
            if slot.is_none() && !key.is_empty() && k == key.as_bytes() {
                *slot = Some(v);
                break;
            }
        }
        true
    })
    .then_some(found)
}

/// Calls `each(key, value)` for every top-level field of the JSON object `json` in order: the
/// key's bytes as written (escapes not decoded), the value's byte range. `false` when `json` is
/// not one whole JSON object (nothing after it but whitespace), or when `each` answered `false`
/// (stop).
pub(crate) fn each_field(json: &[u8], each: impl FnMut(&[u8], Range<usize>) -> bool) -> bool {
    let i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return false;
    }
    walk_object(json, i, each).is_some_and(|end| skip_ws(json, end) == json.len())
}

/// Walks the object whose `{` is at `b[i]`: `key: value` pairs, nested values skipped, each
/// pair given to `each` (see [`each_field`]). The index just past the closing brace, or `None`
/// when the object is malformed or `each` said stop.
fn walk_object(
    b: &[u8],
    i: usize,
    mut each: impl FnMut(&[u8], Range<usize>) -> bool,
) -> Option<usize> {
    let mut i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(b, i)?;
        let key = &b[i + 1..key_end - 1];
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = skip_value(b, start)?;
        if !each(key, start..end) {
            return None;
        }
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Some(i + 1),
            _ => return None,
        }
    }
}

/// Whether `json` is a non-empty array of objects that each have the top-level field `key`
/// exactly once, with a string value (a chat request's `messages`, each with its `role`). A
/// structural check for JSON a parser has already validated: `false` means "not shown this way"
/// (a key spelled with escapes, say), and the caller then asks the parser.
pub fn objects_with_string_field(json: &[u8], key: &str) -> bool {
    let b = json;
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return false;
    }
    i = skip_ws(b, i + 1);
    loop {
        if b.get(i) != Some(&b'{') {
            return false;
        }
        // How many fields named `key` the object has, and whether each is a string.
        let (mut count, mut strings) = (0, true);
        let end = walk_object(b, i, |k, v| {
            if k == key.as_bytes() {
                count += 1;
                strings &= b[v.start] == b'"';
            }
            true
        });
        let Some(end) = end.filter(|_| count == 1 && strings) else {
            return false;
        };
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b']') => return skip_ws(b, i + 1) == b.len(),
            _ => return false,
        }
    }
}

/// The byte range of the value of `key` when it is the last field of the JSON object `json`,
/// found from the end: an OpenAI answer ends with its `usage`, so the choices before it are not
/// walked. Only for a `json` already known to be one whole JSON object (see [`object_field`]);
/// `None` means "not found this way", and the caller walks from the start.
///
/// Why a match is the top-level field: an unescaped `"` cannot occur inside a JSON string, so
/// `"key"` followed by `:` — and preceded by `{` or `,`, which rules out a key that merely ends
/// in an escaped quote and `key` — is a key; its object closes with the `}` that ends `json`,
/// so it is the top-level object.
pub fn last_field_value(json: &[u8], key: &str) -> Option<Range<usize>> {
    let b = json;
    let k = key.as_bytes();
    let at = memchr::memmem::rfind(b, k)?;
    if at == 0 || b[at - 1] != b'"' || b.get(at + k.len()) != Some(&b'"') {
        return None;
    }
    let before = b[..at - 1].iter().rposition(|c| !c.is_ascii_whitespace())?;
    if !matches!(b[before], b'{' | b',') {
        return None;
    }
    let colon = skip_ws(b, at + k.len() + 1);
    if b.get(colon) != Some(&b':') {
        return None;
    }
    let start = skip_ws(b, colon + 1);
    let end = skip_value(b, start)?;
    let close = skip_ws(b, end);
    (b.get(close) == Some(&b'}') && skip_ws(b, close + 1) == b.len()).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_each_with_one_string_role() {
        for good in [
            r#"[{"role":"user","content":"hi"}]"#,
            r#" [ {"content":"a \"role\": 1","role":"system"} , {"role":"user"} ] "#,
        ] {
            assert!(objects_with_string_field(good.as_bytes(), "role"), "{good}");
        }
        for bad in [
            "[]",
            "{}",
            r#"[{"content":"no role"}]"#,
            r#"[{"role":1}]"#,
            r#"[{"role":"user","role":"system"}]"#,
            r#"[{"role":"user"},"text"]"#,
            r#"[{"r\u006fle":"user"}]"#,
            r#"[{"meta":{"role":"x"}}]"#,
            r#"[{"role":"user"}] x"#,
        ] {
            assert!(!objects_with_string_field(bad.as_bytes(), "role"), "{bad}");
        }
    }

    #[test]
    fn last_field_from_the_end() {
        let last = |j: &str| last_field_value(j.as_bytes(), "usage").map(|r| j[r].to_owned());
        assert_eq!(
            last(r#"{"id":"x","choices":[{"usage":1}],"usage":{"total_tokens":3}}"#).as_deref(),
            Some(r#"{"total_tokens":3}"#)
        );
        assert_eq!(last("{\"usage\" : null \n}\n").as_deref(), Some("null"));
        // Not the last field, nested, or a key that only ends in `usage`: not found this way.
        for other in [
            r#"{"usage":{"a":1},"id":"x"}"#,
            r#"{"id":"x","meta":{"usage":{"a":1}}}"#,
            r#"{"id":"x","x\"usage":{"a":1}}"#,
            r#"{"usage":{"note":"usage"}}"#,
            r#"{"id":"usage"}"#,
        ] {
            assert_eq!(last(other), None, "{other}");
        }
        // Whatever it finds, the walk from the start finds too.
        let j = r#"{"model":"m","usage":{"prompt_tokens":1}}"#;
        assert_eq!(
            last_field_value(j.as_bytes(), "usage"),
            top_level_value(j.as_bytes(), "usage")
        );
    }

    #[test]
    fn checks_and_finds_in_one_pass() {
        let j = br#" {"id":"x","meta":{"model":"n"},"model":"int-1","usage":{"a":[1]}} "#;
        let r = object_field(j, "model").unwrap().unwrap();
        assert_eq!(&j[r], br#""int-1""#);
        let r = object_field(j, "usage").unwrap().unwrap();
        assert_eq!(&j[r], br#"{"a":[1]}"#);
        assert_eq!(object_field(j, "missing"), Some(None));
        assert_eq!(object_field(b"{}", "model"), Some(None));
        assert_eq!(object_field(br#"{"model":"m","choices":[{"#, "model"), None);
        assert_eq!(object_field(br#"{"model":"m"}{}"#, "model"), None);
    }

    #[test]
    fn finds_several_fields_in_one_pass() {
        // As OpenAI orders an answer: `usage` is not the last field.
        let j = br#"{"model":"int-1","choices":[{"message":{"model":"x","usage":1}}],"usage":{"total_tokens":3},"system_fingerprint":"fp","model":"again"}"#;
        let [model, usage, none] = object_fields(j, ["model", "usage", ""]).unwrap();
        assert_eq!(
            &j[model.unwrap()],
            br#""int-1""#,
            "the first, top-level copy"
        );
        assert_eq!(&j[usage.unwrap()], br#"{"total_tokens":3}"#);
        assert_eq!(none, None, "an empty key names no field");
        assert_eq!(object_fields(j, []), Some([]));
        assert_eq!(object_fields(br#"{"usage":{}"#, ["usage"]), None, "cut off");
    }

    #[test]
    fn whole_objects_only() {
        assert!(is_json_object(
            br#" {"id":"x","choices":[{"a":"}\""}],"n":1} "#
        ));
        assert!(is_json_object(b"{}"));
        for bad in [
            &br#"{"id":"x","choices":[{"#[..],
            b"<html></html>",
            b"",
            b"[1]",
            br#"{"a":1}{"b":2}"#,
            br#"{"a":"unclosed}"#,
            br#"{"a" 1}"#,
        ] {
            assert!(!is_json_object(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn val<'a>(json: &'a str, key: &str) -> Option<&'a str> {
        top_level_value(json.as_bytes(), key).map(|r| &json[r])
    }

    #[test]
    fn finds_top_level_values_only() {
        let j = r#"{"id":"x","meta":{"model":"nested"},"choices":[{"delta":{"content":"\"model\":\"no\" \\"}}],"model" : "int-1","usage":{"a":1},"n":12}"#;
        assert_eq!(val(j, "model"), Some(r#""int-1""#));
        assert_eq!(val(j, "usage"), Some(r#"{"a":1}"#));
        assert_eq!(val(j, "n"), Some("12"));
        assert_eq!(val(j, "missing"), None);
        assert_eq!(val(r#"{"usage":null}"#, "usage"), Some("null"));
        assert_eq!(
            val(
                " {\n \"a\" : [1,{\"b\":\"]}\"}] , \"model\":\"m\"}",
                "model"
            ),
            Some("\"m\"")
        );
    }

    #[test]
    fn strings_short_and_long_with_escapes() {
        for len in [0usize, 1, 22, 23, 24, 25, 26, 100] {
            for esc_at in [0, len / 2, len.saturating_sub(1)] {
                let mut s = "a".repeat(len);
                if len > 0 {
                    s.replace_range(esc_at..esc_at + 1, "\\\"");
                }
                let j = format!(r#"{{"k":"{s}","model":"m"}}"#);
                assert_eq!(val(&j, "model"), Some(r#""m""#), "{j}");
                assert_eq!(val(&j, "k"), Some(format!(r#""{s}""#).as_str()), "{j}");
            }
        }
        assert_eq!(val(r#"{"k":"ends with escape\"#, "model"), None);
    }

    /// Every string of up to 80 bytes with up to two escapes, anywhere (across the word and
    /// `memchr` boundaries), against a byte-by-byte reading.
    #[test]
    fn skip_string_agrees_with_a_byte_by_byte_reading() {
        fn reference(b: &[u8], mut i: usize) -> Option<usize> {
            i += 1;
            while i < b.len() {
                match b[i] {
                    b'\\' => i += 2,
                    b'"' => return Some(i + 1),
                    _ => i += 1,
                }
            }
            None
        }
        for len in 0..80usize {
            for a in 0..len.max(1) {
                for b2 in [a + 1, a + 2, a + 7, a + 8, a + 9, len] {
                    let mut s = vec![b'x'; len];
                    for at in [a, b2] {
                        if at < len {
                            s[at] = b'\\';
                        }
                    }
                    let mut quoted = vec![b'"'];
                    quoted.extend_from_slice(&s);
                    for tail in [&b"\"}"[..], b"", b"\\"] {
                        let mut t = quoted.clone();
                        t.extend_from_slice(tail);
                        assert_eq!(
                            skip_string(&t, 0),
                            reference(&t, 0),
                            "{}",
                            String::from_utf8_lossy(&t)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn gives_up_on_what_it_does_not_understand() {
        assert_eq!(val("[1,2]", "model"), None);
        assert_eq!(val("{}", "model"), None);
        assert_eq!(val(r#"{"a":"unterminated"#, "a"), None);
        assert_eq!(val(r#"{"a" 1}"#, "a"), None);
        assert_eq!(val(r#"{"a":{"b":1}"#, "model"), None);
    }

    #[test]
    fn agrees_with_serde_on_real_chunks() {
        let chunk = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"mock-gpt","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"a \"quoted\" \\ and {braces} [x]"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
        let v: serde_json::Value = serde_json::from_str(chunk).unwrap();
        for key in ["id", "object", "created", "model", "choices", "usage"] {
            let raw = val(chunk, key).unwrap();
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(raw).unwrap(),
                v[key],
                "{key}"
            );
        }
    }
}
