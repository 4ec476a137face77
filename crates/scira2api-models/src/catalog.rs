//! The model list served by `/v1/models`.

use crate::ModelMap;
use serde::Serialize;

/// One entry of `/v1/models`: `{"id","object":"model","created","owned_by"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelEntry {
    /// The name clients send.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The owner shown to clients.
    pub owned_by: String,
}

/// What the gateway advertises: the mapping table's external names, then extra ids (e.g.
/// `SCIRA_MODELS`), then whatever the upstream lists itself, without duplicates.
#[derive(Debug, Clone)]
pub struct Catalog {
    map: ModelMap,
    extra: Vec<String>,
    owned_by: String,
    created: u64,
}

impl Catalog {
    /// A catalog over `map`, listing `extra` ids after the table, owned by `owned_by`, with
    /// `created` (Unix seconds) for the entries the gateway itself defines.
    pub fn new(
        map: ModelMap,
        extra: Vec<String>,
        owned_by: impl Into<String>,
        created: u64,
    ) -> Self {
        Catalog {
            map,
            extra,
            owned_by: owned_by.into(),
            created,
        }
    }

    /// Lists these model group names too (after the table, before the extras).
    pub fn add_groups(&mut self, names: impl IntoIterator<Item = String>) {
        let mut groups: Vec<String> = names.into_iter().collect();
        groups.append(&mut self.extra);
        self.extra = groups;
    }

    /// The mapping table.
    pub fn map(&self) -> &ModelMap {
        &self.map
    }

    /// The full list in a stable order, merging `upstream` entries (already fetched) after ours.
    pub fn list(&self, upstream: &[ModelEntry]) -> Vec<ModelEntry> {
        let mut out: Vec<ModelEntry> =
            Vec::with_capacity(self.map.len() + self.extra.len() + upstream.len());
        let own = |id: &str| ModelEntry {
            id: id.to_owned(),
            object: "model",
            created: self.created,
            owned_by: self.owned_by.clone(),
        };
        for (ext, _) in self.map.pairs() {
            out.push(own(ext));
        }
        for id in &self.extra {
            if !out.iter().any(|m| &m.id == id) {
                out.push(own(id));
            }
        }
        for m in upstream {
            if !out.iter().any(|o| o.id == m.id) {
                out.push(m.clone());
            }
        }
        out
    }

    /// One model by the name a client uses, if listed.
    pub fn find(&self, id: &str, upstream: &[ModelEntry]) -> Option<ModelEntry> {
        self.list(upstream).into_iter().find(|m| m.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_table_then_extra_then_upstream_without_duplicates() {
        let map = ModelMap::from_pairs([("gpt-4o", "scira-default"), ("o3", "scira-o3")]);
        let cat = Catalog::new(map, vec!["scira-x".into(), "o3".into()], "scira", 7);
        let up = vec![
            ModelEntry {
                id: "gpt-4o".into(),
                object: "model",
                created: 1,
                owned_by: "openai".into(),
            },
            ModelEntry {
                id: "up-1".into(),
                object: "model",
                created: 2,
                owned_by: "openai".into(),
            },
        ];
        let ids: Vec<_> = cat.list(&up).into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["gpt-4o", "o3", "scira-x", "up-1"]);
        assert_eq!(cat.find("up-1", &up).unwrap().owned_by, "openai");
        assert_eq!(cat.find("gpt-4o", &up).unwrap().owned_by, "scira");
        assert!(cat.find("nope", &up).is_none());
    }
}
