//! The external <-> internal name table.

use std::collections::HashMap;

/// An ordered `external -> internal` table with lookups in both directions.
#[derive(Debug, Clone, Default)]
pub struct ModelMap {
    pairs: Vec<(String, String)>,
    to_internal: HashMap<String, usize>,
    to_external: HashMap<String, usize>,
}

/// The outcome of parsing a `MODEL_MAPPINGS` value.
#[derive(Debug, Clone)]
pub struct MappingParse {
    /// The table to use.
    pub map: ModelMap,
    /// The pairs that could not be read; when non-empty the default table was used instead.
    pub bad_pairs: Vec<String>,
}

impl ModelMap {
    /// A table from pairs, in order. A repeated external name keeps its first pair; an internal
    /// name used by several external names maps back to the first of them.
    pub fn from_pairs<I, A, B>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (A, B)>,
        A: Into<String>,
        B: Into<String>,
    {
        let mut map = ModelMap::default();
        for (ext, int) in pairs {
            let (ext, int) = (ext.into(), int.into());
            if map.to_internal.contains_key(&ext) {
                continue;
            }
            let i = map.pairs.len();
            map.to_internal.insert(ext.clone(), i);
            map.to_external.entry(int.clone()).or_insert(i);
            map.pairs.push((ext, int));
        }
        map
    }

    /// Parses `ext:int,ext2:int2` (spaces around names are trimmed, empty items ignored).
    ///
    /// As the original scira2api documents, a malformed pair (no colon, or an empty side) makes
    /// the whole value fall back to `default`; the bad pairs are returned so the caller can warn
    /// about each of them. `None` (unset) gives the default table.
    pub fn parse(spec: Option<&str>, default: &[(&str, &str)]) -> MappingParse {
        let default_map = || ModelMap::from_pairs(default.iter().copied());
        let Some(spec) = spec.filter(|s| !s.trim().is_empty()) else {
            return MappingParse {
                map: default_map(),
                bad_pairs: Vec::new(),
            };
        };
        let mut pairs = Vec::new();
        let mut bad_pairs = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once(':') {
                Some((e, i))
                    if !e.trim().is_empty() && !i.trim().is_empty() && !i.contains(':') =>
                {
                    pairs.push((e.trim().to_owned(), i.trim().to_owned()))
                }
                _ => bad_pairs.push(item.to_owned()),
            }
        }
        let map = if bad_pairs.is_empty() {
            ModelMap::from_pairs(pairs)
        } else {
            default_map()
        };
        MappingParse { map, bad_pairs }
    }

    /// The upstream name for a client's name (unchanged when not in the table).
    pub fn to_internal<'a>(&'a self, external: &'a str) -> &'a str {
        match self.to_internal.get(external) {
            Some(&i) => &self.pairs[i].1,
            None => external,
        }
    }

    /// The client-facing name for an upstream name (unchanged when not in the table).
    pub fn to_external<'a>(&'a self, internal: &'a str) -> &'a str {
        match self.to_external.get(internal) {
            Some(&i) => &self.pairs[i].0,
            None => internal,
        }
    }

    /// Whether `external` is a name in the table.
    pub fn contains_external(&self, external: &str) -> bool {
        self.to_internal.contains_key(external)
    }

    /// Whether `internal` is an upstream name the table maps to.
    pub fn contains_internal(&self, internal: &str) -> bool {
        self.to_external.contains_key(internal)
    }

    /// The pairs, in table order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(e, i)| (e.as_str(), i.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEF: &[(&str, &str)] = &[("d", "scira-d")];

    #[test]
    fn maps_both_ways_and_passes_unknown_through() {
        let m = ModelMap::parse(Some(" gpt-4o : scira-4o ,o3:scira-o3,alias:scira-4o,"), DEF);
        assert!(m.bad_pairs.is_empty());
        let m = m.map;
        assert_eq!(m.to_internal("gpt-4o"), "scira-4o");
        assert_eq!(m.to_external("scira-4o"), "gpt-4o");
        assert_eq!(m.to_internal("alias"), "scira-4o");
        assert_eq!(m.to_internal("other"), "other");
        assert_eq!(m.to_external("other"), "other");
        let order: Vec<_> = m.pairs().map(|p| p.0).collect();
        assert_eq!(order, ["gpt-4o", "o3", "alias"]);
    }

    #[test]
    fn unset_or_malformed_gives_default_and_names_bad_pairs() {
        let m = ModelMap::parse(None, DEF);
        assert_eq!(m.map.to_internal("d"), "scira-d");
        let m = ModelMap::parse(Some("a:b,broken,c:,:d,e:f:g"), DEF);
        assert_eq!(m.bad_pairs, ["broken", "c:", ":d", "e:f:g"]);
        assert_eq!(m.map.to_internal("a"), "a");
        assert_eq!(m.map.to_internal("d"), "scira-d");
    }
}
