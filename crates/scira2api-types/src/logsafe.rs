//! Client-chosen text made safe for log lines and metric labels.

use std::borrow::Cow;

/// Longest client-chosen value written into a log line.
pub const LOG_VALUE_MAX: usize = 200;

/// `s` as it may appear in a log line: control characters (a newline would forge a second
/// line), quotes and backslashes escaped, and cut to [`LOG_VALUE_MAX`] characters with `…`.
/// Borrowed, with no copy, when nothing needs escaping.
pub fn log_safe(s: &str) -> Cow<'_, str> {
    let plain = s.len() <= LOG_VALUE_MAX
        && s.bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'\\' && b != b'"');
    if plain {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(LOG_VALUE_MAX) + 8);
    for (n, c) in s.chars().enumerate() {
        if n == LOG_VALUE_MAX {
            out.push('…');
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_bounds() {
        assert!(matches!(log_safe("gpt-4o"), Cow::Borrowed("gpt-4o")));
        assert_eq!(log_safe("a\nINFO forged"), "a\\nINFO forged");
        assert_eq!(log_safe("x\"y\\"), "x\\\"y\\\\");
        let long = "m".repeat(1 << 20);
        let safe = log_safe(&long);
        assert_eq!(safe.chars().count(), LOG_VALUE_MAX + 1);
        assert_eq!(log_safe("héllo"), "héllo");
    }
}
