//! Redaction of configured secrets from upstream text.
//!
//! An upstream (or a proxy in front of it) may echo the request's headers in an error body —
//! the upstream key, a Scira session cookie. Before any upstream text is forwarded to a client
//! or written to a log, every configured secret in it is replaced by `[REDACTED]`.

use crate::Error;
use bytes::Bytes;
use memchr::memmem;
use std::sync::Arc;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Secrets shorter than this are not searched for (they would match ordinary text).
const MIN_SECRET: usize = 3;

/// The configured secrets (upstream keys, cookies and their values, proxy and URL passwords).
#[derive(Clone, Default)]
pub struct Secrets {
    finders: Arc<Vec<memmem::Finder<'static>>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({})", self.finders.len())
    }
}

impl Secrets {
    /// Secrets from their values; empty and very short values are skipped, and each cookie
    /// string also adds the values of its `name=value` pairs (an echo may show only one).
    pub fn new<I, S>(values: I) -> Secrets
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut all: Vec<String> = Vec::new();
        for v in values {
            let v = v.as_ref().trim();
            all.push(v.to_owned());
            for pair in v.split(';') {
                if let Some((_, value)) = pair.split_once('=') {
                    all.push(value.trim().to_owned());
                }
            }
        }
        all.retain(|s| s.len() >= MIN_SECRET);
        // Longer first, so a secret that contains another is replaced whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        all.dedup();
        Secrets {
            finders: Arc::new(
                all.iter()
                    .map(|s| memmem::Finder::new(s.as_bytes()).into_owned())
                    .collect(),
            ),
        }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.finders.is_empty()
    }

    /// `data` with every secret replaced; `None` when it held none (the common case, no copy).
    pub fn redact(&self, data: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        for f in self.finders.iter() {
            let cur = out.as_deref().unwrap_or(data);
            if f.find(cur).is_none() {
                continue;
            }
            let mut next = Vec::with_capacity(cur.len());
            let mut last = 0;
            for at in f.find_iter(cur) {
                if at < last {
                    continue;
                }
                next.extend_from_slice(&cur[last..at]);
                next.extend_from_slice(REDACTED.as_bytes());
                last = at + f.needle().len();
            }
            next.extend_from_slice(&cur[last..]);
            out = Some(next);
        }
        out
    }

    /// A string with every secret replaced.
    pub fn redact_str(&self, s: String) -> String {
        match self.redact(s.as_bytes()) {
            // Secrets and the replacement are whole UTF-8 strings: cutting them out keeps UTF-8.
            Some(v) => String::from_utf8(v)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            None => s,
        }
    }

    /// Bytes with every secret replaced.
    pub fn redact_bytes(&self, b: Bytes) -> Bytes {
        match self.redact(&b) {
            Some(v) => Bytes::from(v),
            None => b,
        }
    }

    /// An error with every secret removed from its message and forwarded body.
    pub fn error(&self, mut e: Error) -> Error {
        if self.is_empty() {
            return e;
        }
        if let Error::UpstreamApi { body, .. } = &mut e {
            *body = self.redact_bytes(std::mem::take(body));
        }
        if let Error::UpstreamApi { message, .. }
        | Error::Upstream { message, .. }
        | Error::InvalidRequest { message, .. }
        | Error::UpstreamTimeout(message)
        | Error::Proxy(message)
        | Error::Internal(message) = &mut e
        {
            *message = self.redact_str(std::mem::take(message));
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_secret_and_cookie_value() {
        let s = Secrets::new([
            "sk-upstream-1",
            "__Secure-better-auth.session_token=tok123; other=v4lue",
            "",
            "ab",
        ]);
        let text = b"Authorization: Bearer sk-upstream-1\ncookie: __Secure-better-auth.session_token=tok123; other=v4lue\nonly tok123 and v4lue ab";
        let out = String::from_utf8(s.redact(text).unwrap()).unwrap();
        assert!(
            !out.contains("sk-upstream-1") && !out.contains("tok123") && !out.contains("v4lue"),
            "{out}"
        );
        assert!(out.contains("Bearer [REDACTED]"), "{out}");
        assert!(out.ends_with(" ab"), "short values are not secrets: {out}");
        assert!(s.redact(b"nothing here").is_none());
    }

    #[test]
    fn errors_lose_their_secrets() {
        let s = Secrets::new(["hunter22"]);
        let e = Error::upstream_api(
            400,
            Bytes::from_static(br#"{"error":{"message":"bad header hunter22"}}"#),
            "bad header hunter22".into(),
            None,
        );
        let e = s.error(e);
        assert!(!String::from_utf8_lossy(&e.body()).contains("hunter22"));
        assert!(!e.to_string().contains("hunter22"));
    }
}
