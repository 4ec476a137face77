//! Reading and validating single settings, with errors that name the variable, the value and
//! what is accepted.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// A setting with a value the gateway cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable, e.g. `PORT`.
    pub var: String,
    /// The value as given (empty for file errors).
    pub value: String,
    /// What would have been accepted.
    pub accepted: String,
}

impl ConfigError {
    /// An error for `var=value`, explaining what `accepted` values look like.
    pub fn new(var: &str, value: &str, accepted: &str) -> Self {
        ConfigError {
            var: var.to_owned(),
            value: value.to_owned(),
            accepted: accepted.to_owned(),
        }
    }

    pub(crate) fn file(path: &Path, e: dotenvy::Error) -> Self {
        ConfigError {
            var: path.display().to_string(),
            value: String::new(),
            accepted: format!("a readable dotenv file ({e})"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid setting {}={:?}: expected {}",
            self.var, self.value, self.accepted
        )
    }
}

impl std::error::Error for ConfigError {}

/// The raw variables, read through the `config` crate (keys are matched case-insensitively).
pub(crate) struct Raw {
    cfg: config::Config,
}

impl Raw {
    pub(crate) fn new(vars: HashMap<String, String>) -> Result<Raw, ConfigError> {
        let cfg = config::Config::builder()
            .add_source(config::Environment::default().source(Some(vars)))
            .build()
            .map_err(|e| {
                ConfigError::new("environment", "", &format!("readable variables ({e})"))
            })?;
        Ok(Raw { cfg })
    }

    /// The value, trimmed; `None` when unset or empty.
    pub(crate) fn str(&self, var: &str) -> Option<String> {
        self.cfg
            .get_string(&var.to_ascii_lowercase())
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// A comma-separated list, items trimmed, empty items dropped.
    pub(crate) fn list(&self, var: &str) -> Vec<String> {
        self.list_sep(var, ',')
    }

    /// A list split on `sep`.
    pub(crate) fn list_sep(&self, var: &str, sep: char) -> Vec<String> {
        self.str(var)
            .map(|s| {
                s.split(sep)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A list, or `None` when unset.
    pub(crate) fn str_list(&self, var: &str) -> Option<Vec<String>> {
        self.str(var).map(|_| self.list(var))
    }

    pub(crate) fn port(&self, var: &str, default: u16) -> Result<u16, ConfigError> {
        match self.str(var) {
            None => Ok(default),
            Some(v) => v
                .parse::<u16>()
                .map_err(|_| ConfigError::new(var, &v, "a port number from 0 to 65535")),
        }
    }

    pub(crate) fn u64_min(&self, var: &str, default: u64, min: u64) -> Result<u64, ConfigError> {
        match self.str(var) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(ConfigError::new(
                    var,
                    &v,
                    &format!("a whole number of at least {min}"),
                )),
            },
        }
    }

    pub(crate) fn positive_f64(&self, var: &str, default: f64) -> Result<f64, ConfigError> {
        match self.str(var) {
            None => Ok(default),
            Some(v) => match v.parse::<f64>() {
                Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
                _ => Err(ConfigError::new(
                    var,
                    &v,
                    "a number greater than 0 (0 would block every request)",
                )),
            },
        }
    }

    pub(crate) fn bool(&self, var: &str, default: bool) -> Result<bool, ConfigError> {
        match self.str(var) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::new(var, &v, "true or false")),
            },
        }
    }

    pub(crate) fn duration(&self, var: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.str(var) {
            None => Ok(default),
            Some(v) => match parse_duration(&v) {
                Some(d) if !d.is_zero() => Ok(d),
                _ => Err(ConfigError::new(
                    var,
                    &v,
                    "a duration greater than 0 such as 250ms, 600s, 5m, 1h, or a whole number of seconds",
                )),
            },
        }
    }

    /// An absolute http(s) URL without query or fragment, returned without a trailing slash.
    pub(crate) fn http_url(&self, var: &str, default: &str) -> Result<String, ConfigError> {
        let Some(v) = self.str(var) else {
            return Ok(default.to_owned());
        };
        let accepted = "an absolute http:// or https:// URL such as https://api.openai.com";
        match url::Url::parse(&v) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none() =>
            {
                Ok(v.trim_end_matches('/').to_owned())
            }
            _ => Err(ConfigError::new(var, &mask_str(&v), accepted)),
        }
    }

    /// A proxy URL with one of `schemes`, a host and a port. The value is masked in errors.
    pub(crate) fn proxy_url(
        &self,
        var: &str,
        schemes: &[&str],
    ) -> Result<Option<url::Url>, ConfigError> {
        let Some(v) = self.str(var) else {
            return Ok(None);
        };
        let accepted = format!("a URL like {}://[user:pass@]host:port", schemes[0]);
        match url::Url::parse(&v) {
            Ok(u)
                if schemes.contains(&u.scheme())
                    && u.host().is_some()
                    && u.port_or_known_default().is_some() =>
            {
                Ok(Some(u))
            }
            Ok(u) => Err(ConfigError::new(var, &mask_url(&u), &accepted)),
            Err(_) if v.contains('@') => Err(ConfigError::new(
                var,
                "<masked: contains credentials>",
                &accepted,
            )),
            Err(_) => Err(ConfigError::new(var, &v, &accepted)),
        }
    }
}

/// `250ms`, `600s`, `5m`, `1h`, `1h 30m`, or a bare whole number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).ok()
}

/// A URL with its password replaced by `***`, for logs.
pub fn mask_url(u: &url::Url) -> String {
    let mut m = u.clone();
    if m.password().is_some() {
        let _ = m.set_password(Some("***"));
    }
    m.to_string().trim_end_matches('/').to_owned()
}

/// A URL-ish setting as it may be shown: a parsable URL with its password masked, an unparsable
/// value that may hold credentials (an `@`) replaced as a whole.
pub fn mask_str(v: &str) -> String {
    match url::Url::parse(v) {
        Ok(u) if u.host().is_some() => mask_url(&u),
        _ if v.contains('@') => "<masked: contains credentials>".to_owned(),
        _ => v.to_owned(),
    }
}

/// The variables a dotenv file and the environment give together: the environment wins.
pub(crate) fn merge(
    file: impl IntoIterator<Item = (String, String)>,
    env: impl IntoIterator<Item = (String, String)>,
) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = file.into_iter().collect();
    vars.extend(env);
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("600s"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("42"), Some(Duration::from_secs(42)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("-1"), None);
    }

    #[test]
    fn environment_wins_over_file() {
        let m = merge(
            [
                ("A".to_owned(), "file".to_owned()),
                ("B".to_owned(), "file".to_owned()),
            ],
            [("A".to_owned(), "env".to_owned())],
        );
        assert_eq!(m["A"], "env");
        assert_eq!(m["B"], "file");
    }

    #[test]
    fn masks_passwords() {
        let u = url::Url::parse("socks5://user:secret@h:1080").unwrap();
        assert_eq!(mask_url(&u), "socks5://user:***@h:1080");
        assert_eq!(
            mask_str("https://u:pw@h.example/v1"),
            "https://u:***@h.example/v1"
        );
        assert_eq!(mask_str("nonsense:pw@"), "<masked: contains credentials>");
        assert_eq!(mask_str("https://h.example"), "https://h.example");
    }
}
