//! Property tests: the request parser and the field scanners never panic on arbitrary bytes,
//! and on real JSON objects they agree with a full parse.

use crate::{ChatRequest, RawObject, field_starts_with, top_level_value};
use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A small JSON value of any kind.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z\"\\\\ \n{}:,é]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_\"]{1,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A JSON object with distinct keys.
fn object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-z_]{1,8}", value(), 0..6)
        .prop_map(|m| m.into_iter().collect::<Map<_, _>>())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let b = Bytes::from(bytes.clone());
        let _ = ChatRequest::parse(b.clone());
        if let Ok(o) = RawObject::parse(b) {
            let _ = o.duplicate_key();
            let _ = o.with_replaced(&[("model", "\"x\"")]);
        }
        let _ = field_starts_with(&bytes, "usage", b'{');
        let _ = top_level_value(&bytes, "usage");
    }

    #[test]
    fn raw_fields_agree_with_a_full_parse(obj in object()) {
        let text = Value::Object(obj.clone()).to_string();
        let raw = RawObject::parse(Bytes::from(text.clone())).unwrap();
        prop_assert_eq!(raw.duplicate_key(), None);
        for (k, v) in &obj {
            let got: Value = raw.get(k).unwrap().unwrap();
            prop_assert_eq!(&got, v);
            let r = top_level_value(text.as_bytes(), k).unwrap();
            let scanned: Value = serde_json::from_slice(&text.as_bytes()[r]).unwrap();
            prop_assert_eq!(&scanned, v);
            let first = v.to_string().as_bytes()[0];
            prop_assert!(field_starts_with(text.as_bytes(), k, first));
        }
        prop_assert_eq!(top_level_value(text.as_bytes(), "no-such-key"), None);
        // Replacing one field keeps every other field's value.
        let replaced = raw.with_replaced(&[("model", "\"swapped\"")]);
        let back: Map<String, Value> = serde_json::from_slice(&replaced).unwrap();
        for (k, v) in &obj {
            if k != "model" {
                prop_assert_eq!(back.get(k), Some(v));
            }
        }
        prop_assert_eq!(back.get("model"), Some(&json!("swapped")));
    }

    #[test]
    fn a_duplicated_key_is_always_found(obj in object(), dup in "[a-z_]{1,8}") {
        let mut text = Value::Object(obj).to_string();
        text.pop();
        if text.len() > 1 {
            text.push(',');
        }
        text.push_str(&format!("\"{dup}\":1,\"{dup}\":2}}"));
        let raw = RawObject::parse(Bytes::from(text)).unwrap();
        prop_assert!(raw.duplicate_key().is_some());
    }
}
