//! `CONFIG_FILE`: several provider instances, model groups, fallbacks and router settings from
//! one YAML or TOML file (read with the `config` crate) — in the project's own format, or a
//! LiteLLM proxy `config.yaml` exactly as LiteLLM users have it.
//!
//! The project's format:
//!
//! ```yaml
//! providers:                      # provider instances
//!   - name: main                  # unique; shown in x-gateway-provider, logs and metrics
//!     kind: openai                # openai | scira
//!     base_url: https://api.openai.com
//!     api_keys: [os.environ/OPENAI_KEY]   # literal keys or os.environ/NAME
//!     timeout: 600s               # CLIENT_TIMEOUT for this instance
//!     connect_timeout: 10s        # CONNECT_TIMEOUT for this instance
//!     retry: 3                    # attempts on this instance when it is a group's only choice
//!     headers: {OpenAI-Organization: org-1}
//!     proxy: socks5h://os.environ/PROXY_AUTH@proxy:1080   # or os.environ/NAME; "none" = direct
//!     no_proxy: [localhost]
//!     ca_file: /etc/ssl/internal-ca.pem   # extra trusted CAs for this instance
//!     responses_api: native       # it speaks the Responses API itself (default: translate)
//! models:                         # groups: the names clients use
//!   - name: gpt-4o
//!     fallbacks: [gpt-4o-mini]
//!     deployments:
//!       - {provider: main, model: gpt-4o, weight: 2, order: 1, rpm: 600, tpm: 100000}
//! router: {strategy: simple-shuffle, num_retries: 2, allowed_fails: 3, cooldown_time: 5s}
//! keys:                           # client keys, like APIKEY; a key may carry its own policy
//!   - os.environ/CLIENT_KEY
//!   - key: os.environ/TEAM_A_KEY
//!     name: team-a                # shown in logs instead of the key's hash
//!     rpm: 120                    # its own request limit (bucket: rpm/60 per second, burst)
//!     burst: 20                   # default: rpm
//!     tpm: 100000                 # tokens per minute: reserved at admission, settled after
//!     models: [gpt-4o, "claude-*"]   # the only models it may use (`*` at the end: a prefix)
//! default_provider: main          # serves names that are in no group (default: the first)
//! files_provider: main            # serves /v1/files and /v1/batches (no model to route by)
//! ```
//!
//! Keys the gateway does not use are reported in one startup warning; a file that cannot be read
//! or parsed, a group without deployments, a deployment or fallback naming something unknown, or
//! an unset `os.environ/` variable stops startup with one line naming the file, the key and the
//! problem.

use crate::settings::{ConfigError, parse_duration};
use scira2api_upstream::{CertificateDer, ProviderKind, ProxyConfig, load_ca_file};
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Duration;

/// A provider instance from the file; unset fields take the environment's settings.
#[derive(Clone)]
pub struct ProviderSpec {
    /// Unique name.
    pub name: String,
    /// Protocol.
    pub kind: ProviderKind,
    /// Base URL (the kind's default when unset).
    pub base_url: Option<String>,
    /// Upstream keys (rotated), or Scira cookies for a `scira` instance. Secret.
    pub api_keys: Vec<String>,
    /// Timeout for the response head, a whole answer, and silences inside a stream.
    pub timeout: Option<Duration>,
    /// Attempts on this instance when it is a group's only choice.
    pub retry: Option<u32>,
    /// Connect timeout.
    pub connect_timeout: Option<Duration>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Outbound proxy: `None` = the environment's, `Some(None)` = direct (`proxy: none`).
    /// May hold a password: secret.
    pub proxy: Option<Option<ProxyConfig>>,
    /// Extra trusted CA certificates (`ca_file`); empty = the environment's.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// `responses_api: native` (the upstream speaks the Responses API) or `translate`.
    pub responses_native: Option<bool>,
}

/// Names and counts only: keys, header values and proxy passwords are secrets.
impl std::fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field(
                "base_url",
                &self.base_url.as_deref().map(crate::settings::mask_str),
            )
            .field("api_keys", &self.api_keys.len())
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("headers", &self.headers.len())
            .field("proxy", &self.proxy)
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

/// One deployment of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentSpec {
    /// The provider instance's name.
    pub provider: String,
    /// The model the instance knows.
    pub model: String,
    /// Share of traffic (default 1).
    pub weight: u32,
    /// Lower first (default 0).
    pub order: u32,
    /// Requests per minute, if limited.
    pub rpm: Option<u64>,
    /// Tokens per minute, if limited.
    pub tpm: Option<u64>,
}

/// A model group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// The name clients use.
    pub name: String,
    /// Its deployments.
    pub deployments: Vec<DeploymentSpec>,
    /// Groups to try next, in order.
    pub fallbacks: Vec<String>,
}

/// Router settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterSpec {
    /// `simple-shuffle` (default) or `least-busy`.
    pub strategy: Option<String>,
    /// Retries after the first attempt, across deployments (total attempts = this + 1).
    pub num_retries: Option<u32>,
    /// Failures within a minute tolerated before a deployment rests.
    pub allowed_fails: Option<u32>,
    /// How long a deployment rests.
    pub cooldown: Option<Duration>,
}

/// A client key's own policy (a `keys` entry written as an object).
#[derive(Clone, PartialEq)]
pub struct KeySpec {
    /// The key. Secret.
    pub key: String,
    /// A name for logs.
    pub name: Option<String>,
    /// Requests per minute: the key's own bucket, instead of `REQUESTS_PER_SECOND`/`BURST`.
    pub rpm: Option<u64>,
    /// The bucket's capacity (default: `rpm`).
    pub burst: Option<u64>,
    /// Tokens per minute (prompt and completion), reserved at admission and settled after.
    pub tpm: Option<u64>,
    /// The only models it may use: exact names, or prefixes ending in `*`.
    pub models: Option<Vec<String>>,
}

/// Shows everything but the key.
impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySpec")
            .field("name", &self.name)
            .field("rpm", &self.rpm)
            .field("burst", &self.burst)
            .field("tpm", &self.tpm)
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

/// Everything a config file says.
#[derive(Debug, Clone, Default)]
pub struct FileConfig {
    /// Provider instances, in file order.
    pub providers: Vec<ProviderSpec>,
    /// Model groups, in file order.
    pub groups: Vec<GroupSpec>,
    /// Router settings.
    pub router: RouterSpec,
    /// Client keys the file adds (`keys`, LiteLLM's `general_settings.master_key`). Secret.
    pub client_keys: Vec<String>,
    /// The keys of `client_keys` that carry a policy of their own.
    pub key_policies: Vec<KeySpec>,
    /// The instance that serves names in no group.
    pub default_provider: Option<String>,
    /// The instance that serves `/v1/files` and `/v1/batches`, which name no model.
    pub files_provider: Option<String>,
    /// Keys present in the file that the gateway does not use (for one startup warning).
    pub ignored: Vec<String>,
    /// Whether the file was a LiteLLM proxy config.
    pub litellm: bool,
}

struct Reader<'a> {
    file: String,
    env: &'a dyn Fn(&str) -> Option<String>,
    ignored: Vec<String>,
}

impl Reader<'_> {
    fn err(&self, key: &str, value: &str, problem: &str) -> ConfigError {
        ConfigError::new(
            &format!("CONFIG_FILE {} key {key}", self.file),
            value,
            problem,
        )
    }

    /// Reports every key of `obj` not in `known` as ignored.
    fn only(&mut self, path: &str, obj: &Map<String, Value>, known: &[&str]) {
        for k in obj.keys() {
            if !known.contains(&k.as_str()) {
                self.ignored.push(if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                });
            }
        }
    }

    fn obj<'v>(&self, key: &str, v: &'v Value) -> Result<&'v Map<String, Value>, ConfigError> {
        v.as_object()
            .ok_or_else(|| self.err(key, &short(v), "a mapping"))
    }

    fn list<'v>(&self, key: &str, v: Option<&'v Value>) -> Result<&'v [Value], ConfigError> {
        match v {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(other) => Err(self.err(key, &short(other), "a list")),
        }
    }

    fn string(&self, key: &str, v: Option<&Value>) -> Result<Option<String>, ConfigError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(self.err(key, &short(other), "a string")),
        }
    }

    fn required(&self, key: &str, v: Option<&Value>) -> Result<String, ConfigError> {
        self.string(key, v)?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| self.err(key, "", "a non-empty string"))
    }

    /// A secret: a literal, or `os.environ/NAME` read from the environment (must be set).
    fn secret(&self, key: &str, v: Option<&Value>) -> Result<Option<String>, ConfigError> {
        let Some(s) = self.string(key, v)? else {
            return Ok(None);
        };
        match s.strip_prefix("os.environ/") {
            Some(name) => match (self.env)(name) {
                Some(val) if !val.is_empty() => Ok(Some(val)),
                _ => Err(self.err(
                    key,
                    &s,
                    &format!("a set environment variable ({name} is not set)"),
                )),
            },
            // Never echo a literal secret in an error.
            None => Ok(Some(s)),
        }
    }

    fn secrets(&self, key: &str, v: Option<&Value>) -> Result<Vec<String>, ConfigError> {
        match v {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, it)| self.secret(&format!("{key}[{i}]"), Some(it)).transpose())
                .collect(),
            other => Ok(self.secret(key, other)?.into_iter().collect()),
        }
    }

    /// `keys`: one secret, or a list of secrets and `{key, name, rpm, burst, models}` objects.
    fn client_keys(
        &mut self,
        v: Option<&Value>,
    ) -> Result<(Vec<String>, Vec<KeySpec>), ConfigError> {
        let Some(Value::Array(items)) = v else {
            return Ok((self.secrets("keys", v)?, Vec::new()));
        };
        let (mut keys, mut policies) = (Vec::new(), Vec::new());
        for (i, item) in items.iter().enumerate() {
            let at = format!("keys[{i}]");
            let Value::Object(o) = item else {
                keys.extend(self.secret(&at, Some(item))?);
                continue;
            };
            self.only(&at, o, &["key", "name", "rpm", "burst", "tpm", "models"]);
            let key = self
                .secret(&format!("{at}.key"), o.get("key"))?
                .ok_or_else(|| self.err(&format!("{at}.key"), "", "a non-empty key"))?;
            let positive = |name: &str| -> Result<Option<u64>, ConfigError> {
                match self.uint(&format!("{at}.{name}"), o.get(name))? {
                    Some(0) => Err(self.err(&format!("{at}.{name}"), "0", "a whole number ≥ 1")),
                    n => Ok(n),
                }
            };
            let (rpm, burst, tpm) = (positive("rpm")?, positive("burst")?, positive("tpm")?);
            if burst.is_some() && rpm.is_none() {
                return Err(self.err(&format!("{at}.burst"), "", "an rpm beside it"));
            }
            let models = match o.get("models") {
                None | Some(Value::Null) => None,
                Some(Value::Array(list)) => Some(
                    list.iter()
                        .enumerate()
                        .map(|(j, m)| self.required(&format!("{at}.models[{j}]"), Some(m)))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                Some(other) => {
                    return Err(self.err(
                        &format!("{at}.models"),
                        &short(other),
                        "a list of model names",
                    ));
                }
            };
            keys.push(key.clone());
            policies.push(KeySpec {
                key,
                name: self.string(&format!("{at}.name"), o.get("name"))?,
                rpm,
                burst,
                tpm,
                models,
            });
        }
        Ok((keys, policies))
    }

    fn uint(&self, key: &str, v: Option<&Value>) -> Result<Option<u64>, ConfigError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .map(Some)
                .ok_or_else(|| self.err(key, &n.to_string(), "a whole number ≥ 0")),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.err(key, s, "a whole number ≥ 0")),
            Some(other) => Err(self.err(key, &short(other), "a whole number ≥ 0")),
        }
    }

    /// A duration: `5s`, `250ms`, or a number of seconds (LiteLLM writes numbers).
    fn duration(&self, key: &str, v: Option<&Value>) -> Result<Option<Duration>, ConfigError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| Some(Duration::from_secs_f64(f)))
                .ok_or_else(|| self.err(key, &n.to_string(), "a duration such as 5s or 30")),
            Some(Value::String(s)) => parse_duration(s)
                .map(Some)
                .ok_or_else(|| self.err(key, s, "a duration such as 5s, 250ms or 30")),
            Some(other) => Err(self.err(key, &short(other), "a duration")),
        }
    }

    /// Router settings (the same names in both formats, but for the strategy's key).
    fn router(
        &self,
        key: &str,
        o: &Map<String, Value>,
        strategy: &str,
    ) -> Result<RouterSpec, ConfigError> {
        let k = |name: &str| format!("{key}.{name}");
        Ok(RouterSpec {
            strategy: self.string(&k(strategy), o.get(strategy))?,
            num_retries: self
                .uint(&k("num_retries"), o.get("num_retries"))?
                .map(|n| n.min(100) as u32),
            allowed_fails: self
                .uint(&k("allowed_fails"), o.get("allowed_fails"))?
                .map(|n| n.min(1_000_000) as u32),
            cooldown: self.duration(&k("cooldown_time"), o.get("cooldown_time"))?,
        })
    }

    /// An instance's `proxy` (a URL, `os.environ/NAME`, or `none`) and `no_proxy`.
    fn proxy(
        &self,
        key: &str,
        p: &Map<String, Value>,
    ) -> Result<Option<Option<ProxyConfig>>, ConfigError> {
        let pkey = format!("{key}.proxy");
        let Some(v) = self.secret(&pkey, p.get("proxy"))? else {
            return Ok(None);
        };
        if v.eq_ignore_ascii_case("none") {
            return Ok(Some(None));
        }
        let mut no_proxy = Vec::new();
        for (i, h) in self
            .list(&format!("{key}.no_proxy"), p.get("no_proxy"))?
            .iter()
            .enumerate()
        {
            no_proxy.push(self.required(&format!("{key}.no_proxy[{i}]"), Some(h))?);
        }
        let proxy = url::Url::parse(&v)
            .ok()
            .and_then(|u| ProxyConfig::from_url(&u, no_proxy));
        match proxy {
            Some(p) => Ok(Some(Some(p))),
            None => Err(self.err(
                &pkey,
                &crate::settings::mask_str(&v),
                "a proxy URL like http://host:port, socks5://host:port or socks5h://user:pass@host:port, or none",
            )),
        }
    }

    /// An instance's `ca_file`, read now (a bad file stops startup).
    fn ca_file(
        &self,
        key: &str,
        v: Option<&Value>,
    ) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let Some(path) = self.string(key, v)? else {
            return Ok(Vec::new());
        };
        load_ca_file(Path::new(&path))
            .map_err(|e| self.err(key, &path, &format!("a readable PEM CA bundle ({e})")))
    }

    fn kind(&self, key: &str, s: &str) -> Result<ProviderKind, ConfigError> {
        ProviderKind::parse(s).ok_or_else(|| self.err(key, s, &ProviderKind::accepted()))
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(80).collect()
}

/// Reads `path` (YAML by `.yaml`/`.yml`, TOML by `.toml`); `env` looks up `os.environ/` names.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<FileConfig, ConfigError> {
    let file = path.display().to_string();
    let unreadable = |problem: String| ConfigError::new("CONFIG_FILE", &file, &problem);
    if !path.is_file() {
        return Err(unreadable(
            "a readable YAML or TOML file (not found)".into(),
        ));
    }
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => config::FileFormat::Yaml,
        Some("toml") => config::FileFormat::Toml,
        _ => {
            return Err(unreadable("a file named *.yaml, *.yml or *.toml".into()));
        }
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| unreadable(format!("a readable file ({e})")))?;
    let root: Value = config::Config::builder()
        .add_source(config::File::from_str(&text, format))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| unreadable(format!("valid YAML or TOML ({e})")))?;
    parse(&file, &root, env)
}

/// Interprets a parsed file (see [`load`]).
pub fn parse(
    file: &str,
    root: &Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<FileConfig, ConfigError> {
    let mut r = Reader {
        file: file.to_owned(),
        env,
        ignored: Vec::new(),
    };
    let empty = Map::new();
    let top = match root {
        Value::Object(o) => o,
        Value::Null => &empty,
        other => return Err(r.err("(top level)", &short(other), "a mapping")),
    };
    let mut out = if top.contains_key("model_list") {
        litellm(&mut r, top)?
    } else {
        native(&mut r, top)?
    };
    validate(&r, &out)?;
    out.ignored = std::mem::take(&mut r.ignored);
    Ok(out)
}

fn native(r: &mut Reader<'_>, top: &Map<String, Value>) -> Result<FileConfig, ConfigError> {
    r.only(
        "",
        top,
        &[
            "providers",
            "models",
            "router",
            "keys",
            "default_provider",
            "files_provider",
        ],
    );
    let mut out = FileConfig::default();
    for (i, p) in r
        .list("providers", top.get("providers"))?
        .iter()
        .enumerate()
    {
        let key = format!("providers[{i}]");
        let p = r.obj(&key, p)?;
        r.only(
            &key,
            p,
            &[
                "name",
                "kind",
                "base_url",
                "api_keys",
                "api_key",
                "cookies",
                "timeout",
                "connect_timeout",
                "retry",
                "headers",
                "proxy",
                "no_proxy",
                "ca_file",
                "responses_api",
            ],
        );
        let kind_s = r
            .string(&format!("{key}.kind"), p.get("kind"))?
            .unwrap_or_else(|| "openai".to_owned());
        let mut api_keys = r.secrets(&format!("{key}.api_keys"), p.get("api_keys"))?;
        api_keys.extend(r.secrets(&format!("{key}.api_key"), p.get("api_key"))?);
        api_keys.extend(r.secrets(&format!("{key}.cookies"), p.get("cookies"))?);
        let mut headers = Vec::new();
        if let Some(h) = p.get("headers") {
            for (k, v) in r.obj(&format!("{key}.headers"), h)? {
                let v = r
                    .secret(&format!("{key}.headers.{k}"), Some(v))?
                    .unwrap_or_default();
                headers.push((k.clone(), v));
            }
        }
        out.providers.push(ProviderSpec {
            name: r.required(&format!("{key}.name"), p.get("name"))?,
            kind: r.kind(&format!("{key}.kind"), &kind_s)?,
            base_url: r.string(&format!("{key}.base_url"), p.get("base_url"))?,
            api_keys,
            timeout: r.duration(&format!("{key}.timeout"), p.get("timeout"))?,
            retry: r
                .uint(&format!("{key}.retry"), p.get("retry"))?
                .map(|n| n.clamp(1, 100) as u32),
            connect_timeout: r
                .duration(&format!("{key}.connect_timeout"), p.get("connect_timeout"))?,
            headers,
            proxy: r.proxy(&key, p)?,
            extra_roots: r.ca_file(&format!("{key}.ca_file"), p.get("ca_file"))?,
            responses_native: match r
                .string(&format!("{key}.responses_api"), p.get("responses_api"))?
                .as_deref()
            {
                None => None,
                Some("native") => Some(true),
                Some("translate") => Some(false),
                Some(other) => {
                    return Err(r.err(
                        &format!("{key}.responses_api"),
                        other,
                        "`native` or `translate`",
                    ));
                }
            },
        });
    }
    for (i, g) in r.list("models", top.get("models"))?.iter().enumerate() {
        let key = format!("models[{i}]");
        let g = r.obj(&key, g)?;
        r.only(&key, g, &["name", "deployments", "fallbacks"]);
        let mut deployments = Vec::new();
        for (j, d) in r
            .list(&format!("{key}.deployments"), g.get("deployments"))?
            .iter()
            .enumerate()
        {
            let dkey = format!("{key}.deployments[{j}]");
            let d = r.obj(&dkey, d)?;
            r.only(
                &dkey,
                d,
                &["provider", "model", "weight", "order", "rpm", "tpm"],
            );
            deployments.push(DeploymentSpec {
                provider: r.required(&format!("{dkey}.provider"), d.get("provider"))?,
                model: r.required(&format!("{dkey}.model"), d.get("model"))?,
                weight: r
                    .uint(&format!("{dkey}.weight"), d.get("weight"))?
                    .unwrap_or(1)
                    .clamp(1, 1_000_000) as u32,
                order: r
                    .uint(&format!("{dkey}.order"), d.get("order"))?
                    .unwrap_or(0)
                    .min(1_000_000) as u32,
                rpm: r.uint(&format!("{dkey}.rpm"), d.get("rpm"))?,
                tpm: r.uint(&format!("{dkey}.tpm"), d.get("tpm"))?,
            });
        }
        let mut fallbacks = Vec::new();
        for (j, f) in r
            .list(&format!("{key}.fallbacks"), g.get("fallbacks"))?
            .iter()
            .enumerate()
        {
            fallbacks.push(r.required(&format!("{key}.fallbacks[{j}]"), Some(f))?);
        }
        out.groups.push(GroupSpec {
            name: r.required(&format!("{key}.name"), g.get("name"))?,
            deployments,
            fallbacks,
        });
    }
    if let Some(rt) = top.get("router") {
        let rt = r.obj("router", rt)?;
        r.only(
            "router",
            rt,
            &["strategy", "num_retries", "allowed_fails", "cooldown_time"],
        );
        out.router = r.router("router", rt, "strategy")?;
    }
    (out.client_keys, out.key_policies) = r.client_keys(top.get("keys"))?;
    out.default_provider = r.string("default_provider", top.get("default_provider"))?;
    out.files_provider = r.string("files_provider", top.get("files_provider"))?;
    Ok(out)
}

/// LiteLLM's proxy config: every `model_list` entry becomes a provider instance of its own
/// (named `<model_name>/<n>`), a deployment of the group `model_name`.
fn litellm(r: &mut Reader<'_>, top: &Map<String, Value>) -> Result<FileConfig, ConfigError> {
    r.only(
        "",
        top,
        &["model_list", "router_settings", "general_settings"],
    );
    let mut out = FileConfig {
        litellm: true,
        ..FileConfig::default()
    };
    for (i, entry) in r
        .list("model_list", top.get("model_list"))?
        .iter()
        .enumerate()
    {
        let key = format!("model_list[{i}]");
        let entry = r.obj(&key, entry)?;
        r.only(&key, entry, &["model_name", "litellm_params"]);
        let group = r.required(&format!("{key}.model_name"), entry.get("model_name"))?;
        let pkey = format!("{key}.litellm_params");
        let params = r.obj(&pkey, entry.get("litellm_params").unwrap_or(&Value::Null))?;
        r.only(
            &pkey,
            params,
            &[
                "model",
                "api_base",
                "api_key",
                "rpm",
                "tpm",
                "weight",
                "order",
                "timeout",
                "max_retries",
            ],
        );
        let model = r.required(&format!("{pkey}.model"), params.get("model"))?;
        let (kind, name) = match model.split_once('/') {
            Some((prefix, rest)) => (prefix.to_owned(), rest.to_owned()),
            None => ("openai".to_owned(), model.clone()),
        };
        let Some(kind) = ProviderKind::from_litellm_prefix(&kind) else {
            return Err(r.err(
                &format!("{pkey}.model"),
                &model,
                &format!(
                    "`openai/<model>`, `anthropic/<model>` or `scira/<model>` (provider `{kind}` is not supported yet)"
                ),
            ));
        };
        let instance = format!(
            "{group}/{}",
            out.groups
                .iter()
                .find(|g| g.name == group)
                .map_or(0, |g| g.deployments.len())
        );
        out.providers.push(ProviderSpec {
            name: instance.clone(),
            kind,
            base_url: r.string(&format!("{pkey}.api_base"), params.get("api_base"))?,
            api_keys: r
                .secret(&format!("{pkey}.api_key"), params.get("api_key"))?
                .into_iter()
                .collect(),
            timeout: r.duration(&format!("{pkey}.timeout"), params.get("timeout"))?,
            retry: r
                .uint(&format!("{pkey}.max_retries"), params.get("max_retries"))?
                .map(|n| (n + 1).min(100) as u32),
            connect_timeout: None,
            headers: Vec::new(),
            proxy: None,
            extra_roots: Vec::new(),
            responses_native: None,
        });
        let dep = DeploymentSpec {
            provider: instance,
            model: name,
            weight: r
                .uint(&format!("{pkey}.weight"), params.get("weight"))?
                .unwrap_or(1)
                .clamp(1, 1_000_000) as u32,
            order: r
                .uint(&format!("{pkey}.order"), params.get("order"))?
                .unwrap_or(0)
                .min(1_000_000) as u32,
            rpm: r.uint(&format!("{pkey}.rpm"), params.get("rpm"))?,
            tpm: r.uint(&format!("{pkey}.tpm"), params.get("tpm"))?,
        };
        match out.groups.iter_mut().find(|g| g.name == group) {
            Some(g) => g.deployments.push(dep),
            None => out.groups.push(GroupSpec {
                name: group,
                deployments: vec![dep],
                fallbacks: Vec::new(),
            }),
        }
    }
    if let Some(rs) = top.get("router_settings") {
        let rs = r.obj("router_settings", rs)?;
        r.only(
            "router_settings",
            rs,
            &[
                "routing_strategy",
                "num_retries",
                "fallbacks",
                "allowed_fails",
                "cooldown_time",
            ],
        );
        out.router = r.router("router_settings", rs, "routing_strategy")?;
        // `fallbacks: [{"group": ["other", ...]}, ...]`
        for (i, f) in r
            .list("router_settings.fallbacks", rs.get("fallbacks"))?
            .iter()
            .enumerate()
        {
            let fkey = format!("router_settings.fallbacks[{i}]");
            for (group, targets) in r.obj(&fkey, f)? {
                let mut names = Vec::new();
                for (j, t) in r
                    .list(&format!("{fkey}.{group}"), Some(targets))?
                    .iter()
                    .enumerate()
                {
                    names.push(r.required(&format!("{fkey}.{group}[{j}]"), Some(t))?);
                }
                match out.groups.iter_mut().find(|g| &g.name == group) {
                    Some(g) => g.fallbacks.extend(names),
                    None => {
                        return Err(r.err(
                            &fkey,
                            group,
                            "a fallback for a model_name in model_list",
                        ));
                    }
                }
            }
        }
    }
    if let Some(gs) = top.get("general_settings") {
        let gs = r.obj("general_settings", gs)?;
        r.only("general_settings", gs, &["master_key"]);
        out.client_keys = r
            .secret("general_settings.master_key", gs.get("master_key"))?
            .into_iter()
            .collect();
    }
    Ok(out)
}

fn validate(r: &Reader<'_>, c: &FileConfig) -> Result<(), ConfigError> {
    for (i, p) in c.providers.iter().enumerate() {
        if c.providers[..i].iter().any(|q| q.name == p.name) {
            return Err(r.err(
                &format!("providers[{i}].name"),
                &p.name,
                "a name no other provider has",
            ));
        }
        if let Some(url) = &p.base_url {
            let ok = url::Url::parse(url)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(r.err(
                    &format!("provider {} base_url", p.name),
                    &crate::settings::mask_str(url),
                    "an absolute http:// or https:// URL",
                ));
            }
        }
    }
    for g in &c.groups {
        if g.deployments.is_empty() {
            return Err(r.err(&format!("group {}", g.name), "", "at least one deployment"));
        }
        for d in &g.deployments {
            if !c.providers.iter().any(|p| p.name == d.provider) {
                return Err(r.err(
                    &format!("group {} deployment", g.name),
                    &d.provider,
                    "the name of a provider in `providers`",
                ));
            }
        }
        for f in &g.fallbacks {
            if !c.groups.iter().any(|o| &o.name == f) {
                return Err(r.err(
                    &format!("group {} fallbacks", g.name),
                    f,
                    "the name of a model group",
                ));
            }
        }
    }
    if let Some(s) = &c.router.strategy {
        if !matches!(s.as_str(), "simple-shuffle" | "least-busy") {
            return Err(r.err("routing strategy", s, "`simple-shuffle` or `least-busy`"));
        }
    }
    for (key, name) in [
        ("default_provider", &c.default_provider),
        ("files_provider", &c.files_provider),
    ] {
        if let Some(d) = name {
            if !c.providers.iter().any(|p| &p.name == d) {
                return Err(r.err(key, d, "the name of a provider in `providers`"));
            }
        }
    }
    if let Some(f) = &c.files_provider {
        if let Some(p) = c.providers.iter().find(|p| &p.name == f) {
            if !p.kind.serves_openai_endpoints() {
                return Err(r.err(
                    "files_provider",
                    f,
                    "an OpenAI-compatible provider (only those serve /v1/files and /v1/batches)",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        (name == "KEY_A").then(|| "sk-a".to_owned())
    }

    #[test]
    fn client_keys_may_carry_a_policy() {
        let v = json!({
            "providers": [{"name": "p", "base_url": "http://127.0.0.1:1"}],
            "keys": [
                "sk-plain",
                {"key": "os.environ/KEY_A", "name": "team", "rpm": 60, "burst": 5, "models": ["g", "gpt-*"], "color": "red"},
                {"key": "sk-any"}
            ]
        });
        let c = parse("f.yaml", &v, &env).unwrap();
        assert_eq!(c.client_keys, ["sk-plain", "sk-a", "sk-any"]);
        assert_eq!(c.key_policies.len(), 2);
        let p = &c.key_policies[0];
        assert_eq!(
            (p.key.as_str(), p.rpm, p.burst),
            ("sk-a", Some(60), Some(5))
        );
        assert_eq!(
            p.models.as_deref(),
            Some(&["g".to_owned(), "gpt-*".to_owned()][..])
        );
        assert!(!format!("{p:?}").contains("sk-a"), "Debug hides the key");
        assert_eq!(c.key_policies[1].rpm, None);
        assert_eq!(c.ignored, ["keys[1].color"]);
        for (bad, problem) in [
            (json!([{"name": "no key"}]), "keys[0].key"),
            (json!([{"key": "k", "rpm": 0}]), "keys[0].rpm"),
            (json!([{"key": "k", "burst": 3}]), "keys[0].burst"),
            (json!([{"key": "k", "models": "g"}]), "keys[0].models"),
        ] {
            let v = json!({"providers": [{"name": "p"}], "keys": bad});
            let e = parse("f.yaml", &v, &env).unwrap_err().to_string();
            assert!(e.contains(problem), "{e}");
        }
    }

    #[test]
    fn reads_a_litellm_config() {
        let v = json!({
            "model_list": [
                {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_base": "http://127.0.0.1:1/v1", "api_key": "os.environ/KEY_A", "rpm": 10, "weight": 2}},
                {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o-2", "api_base": "http://127.0.0.1:2", "order": 2, "timeout": 30, "max_retries": 1}},
                {"model_name": "small", "litellm_params": {"model": "openai/mini", "api_base": "http://127.0.0.1:3", "drop_params": true}}
            ],
            "router_settings": {"routing_strategy": "least-busy", "num_retries": 2, "fallbacks": [{"gpt-4o": ["small"]}], "allowed_fails": 0, "cooldown_time": 30, "redis_host": "x"},
            "general_settings": {"master_key": "sk-master"},
            "litellm_settings": {"drop_params": true}
        });
        let c = parse("f.yaml", &v, &env).unwrap();
        assert!(c.litellm);
        assert_eq!(c.providers.len(), 3);
        assert_eq!(c.providers[0].name, "gpt-4o/0");
        assert_eq!(c.providers[0].api_keys, ["sk-a"]);
        assert_eq!(c.providers[1].timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.providers[1].retry, Some(2));
        assert_eq!(c.groups[0].deployments.len(), 2);
        assert_eq!(c.groups[0].deployments[0].weight, 2);
        assert_eq!(c.groups[0].deployments[0].rpm, Some(10));
        assert_eq!(c.groups[0].deployments[1].model, "gpt-4o-2");
        assert_eq!(c.groups[0].fallbacks, ["small"]);
        assert_eq!(c.router.allowed_fails, Some(0));
        assert_eq!(c.router.cooldown, Some(Duration::from_secs(30)));
        assert_eq!(c.client_keys, ["sk-master"]);
        let mut ignored = c.ignored.clone();
        ignored.sort();
        assert_eq!(
            ignored,
            [
                "litellm_settings",
                "model_list[2].litellm_params.drop_params",
                "router_settings.redis_host"
            ]
        );
    }

    #[test]
    fn reads_anthropic_deployments_in_both_formats() {
        let v = json!({"model_list": [
            {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_key": "os.environ/KEY_A"}}
        ]});
        let c = parse("f.yaml", &v, &env).unwrap();
        assert_eq!(c.providers[0].kind, ProviderKind::Anthropic);
        assert_eq!(c.providers[0].api_keys, ["sk-a"]);
        assert_eq!(
            c.providers[0].base_url, None,
            "Anthropic's own URL by default"
        );
        assert_eq!(c.groups[0].deployments[0].model, "claude-sonnet-4-5");
        let v = json!({"providers": [{"name": "claude", "kind": "anthropic", "api_keys": ["k"]}]});
        let c = parse("f.yaml", &v, &env).unwrap();
        assert_eq!(c.providers[0].kind, ProviderKind::Anthropic);
        assert_eq!(
            ProviderKind::Anthropic.default_base_url(),
            "https://api.anthropic.com"
        );
    }

    #[test]
    fn reads_the_native_format() {
        let v = json!({
            "providers": [
                {"name": "a", "kind": "openai", "base_url": "http://127.0.0.1:1", "api_keys": ["k1", "os.environ/KEY_A"], "retry": 2, "headers": {"X-Org": "o"}},
                {"name": "s", "kind": "scira", "cookies": ["c=1"]}
            ],
            "models": [{"name": "g", "deployments": [{"provider": "a", "model": "m", "order": 1}, {"provider": "s", "model": "scira-default"}], "fallbacks": []}],
            "router": {"strategy": "simple-shuffle", "cooldown_time": "2s"},
            "default_provider": "a"
        });
        let c = parse("f.yaml", &v, &env).unwrap();
        assert_eq!(c.providers[0].api_keys, ["k1", "sk-a"]);
        assert_eq!(
            c.providers[0].headers,
            [("X-Org".to_owned(), "o".to_owned())]
        );
        assert_eq!(c.providers[1].kind, ProviderKind::Scira);
        assert_eq!(c.groups[0].deployments[0].order, 1);
        assert_eq!(c.router.cooldown, Some(Duration::from_secs(2)));
        assert!(c.ignored.is_empty());
        assert!(c.providers[0].proxy.is_none());
    }

    #[test]
    fn instances_name_their_own_proxy() {
        let env = |name: &str| (name == "P").then(|| "http://u:pw@127.0.0.1:3128".to_owned());
        let v = json!({"providers": [
            {"name": "a", "proxy": "os.environ/P", "no_proxy": ["localhost"]},
            {"name": "b", "proxy": "none"},
            {"name": "c", "proxy": "socks5h://127.0.0.1:1080", "connect_timeout": "2s"}
        ]});
        let c = parse("f.yaml", &v, &env).unwrap();
        let a = c.providers[0].proxy.clone().flatten().unwrap();
        assert_eq!(a.auth, Some(("u".to_owned(), "pw".to_owned())));
        assert!(a.bypass("localhost"));
        assert!(matches!(c.providers[1].proxy, Some(None)));
        assert_eq!(
            c.providers[2].proxy.clone().flatten().unwrap().describe(),
            "socks5h://127.0.0.1:1080"
        );
        assert_eq!(c.providers[2].connect_timeout, Some(Duration::from_secs(2)));
        assert!(!format!("{c:?}").contains("pw"));
        for (v, want) in [
            (
                json!({"providers": [{"name": "a", "proxy": "ftp://u:topsecret@h:1"}]}),
                "providers[0].proxy",
            ),
            (
                json!({"providers": [{"name": "a", "ca_file": "/nonexistent/ca.pem"}]}),
                "providers[0].ca_file",
            ),
        ] {
            let e = parse("f.yaml", &v, &env).unwrap_err().to_string();
            assert!(e.contains(want) && !e.contains("topsecret"), "{e}");
        }
    }

    #[test]
    fn bad_files_name_the_key_and_the_problem() {
        for (v, want) in [
            (
                json!({"model_list": [{"model_name": "g", "litellm_params": {"model": "openai/x", "api_key": "os.environ/UNSET"}}]}),
                "UNSET is not set",
            ),
            (
                json!({"models": [{"name": "g", "deployments": []}]}),
                "at least one deployment",
            ),
            (
                json!({"models": [{"name": "g", "deployments": [{"provider": "nope", "model": "m"}]}]}),
                "the name of a provider",
            ),
            (
                json!({"providers": [{"name": "a"}], "models": [{"name": "g", "deployments": [{"provider": "a", "model": "m"}], "fallbacks": ["zzz"]}]}),
                "the name of a model group",
            ),
            (
                json!({"model_list": [{"model_name": "g", "litellm_params": {"model": "bedrock/x"}}]}),
                "not supported yet",
            ),
            (
                json!({"model_list": [{"model_name": "g", "litellm_params": {"model": "openai/x"}}], "router_settings": {"fallbacks": [{"other": ["g"]}]}}),
                "a fallback for a model_name",
            ),
        ] {
            let e = parse("conf.yaml", &v, &env).unwrap_err().to_string();
            assert!(e.contains("conf.yaml") && e.contains(want), "{e}");
        }
        let e = parse("conf.yaml", &json!({"providers": [{"name": "a", "api_key": "sk-literal-secret", "base_url": "nope"}]}), &env).unwrap_err().to_string();
        assert!(!e.contains("sk-literal-secret"), "{e}");
    }

    #[test]
    fn reads_yaml_and_toml_files() {
        let dir = std::env::temp_dir().join(format!("scira2api-cfgfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = dir.join("c.yaml");
        std::fs::write(&yaml, "model_list:\n  - model_name: GPT-4o\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: http://127.0.0.1:9\n").unwrap();
        let c = load(&yaml, &env).unwrap();
        assert_eq!(c.groups[0].name, "GPT-4o");
        let toml = dir.join("c.toml");
        std::fs::write(&toml, "[[providers]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9\"\n\n[[models]]\nname = \"g\"\n[[models.deployments]]\nprovider = \"a\"\nmodel = \"m\"\n").unwrap();
        let c = load(&toml, &env).unwrap();
        assert_eq!(c.groups[0].deployments[0].provider, "a");
        std::fs::write(&yaml, "model_list: [unclosed\n").unwrap();
        assert!(
            load(&yaml, &env)
                .unwrap_err()
                .to_string()
                .contains("valid YAML")
        );
        assert!(load(&dir.join("missing.yaml"), &env).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
