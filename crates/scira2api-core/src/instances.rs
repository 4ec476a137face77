//! The provider instances and the router a config describes: one instance from the
//! environment (`PROVIDER`, `BASE_URL`, …), plus those of a `CONFIG_FILE`, and the model groups
//! over them.

use crate::config::Config;
use crate::config_file::{FileConfig, ProviderSpec};
use scira2api_models::{CooldownPolicy, Deployment, Group, Router, Strategy};
use scira2api_upstream::{UpstreamConfig, UpstreamSettings};
use std::sync::Arc;

/// Everything the gateway sends to.
pub(crate) struct Instances {
    pub(crate) upstreams: Vec<Arc<UpstreamConfig>>,
    pub(crate) names: Vec<Arc<str>>,
    pub(crate) router: Router,
    /// The instance for names in no group.
    pub(crate) default: usize,
    /// The instance for `/v1/files` and `/v1/batches`: the file's `files_provider`, or with no
    /// file the environment's instance when it is OpenAI-compatible.
    pub(crate) files: Option<usize>,
    /// Attempts in all for a request to a group (across its deployments and fallbacks).
    pub(crate) attempts: u32,
}

/// A file's instance: the environment's settings with what the file says on top.
fn file_settings(base: &UpstreamSettings, p: &ProviderSpec) -> UpstreamSettings {
    let mut s = base.clone();
    s.name = p.name.clone();
    s.provider = p.kind;
    let base = p.base_url.as_deref().unwrap_or(p.kind.default_base_url());
    s.base_url = base.trim_end_matches('/').to_owned();
    if p.kind.uses_cookies() {
        s.api_keys = Vec::new();
        s.scira.cookies = p.api_keys.clone();
    } else {
        s.api_keys = p.api_keys.clone();
    }
    if let Some(t) = p.timeout {
        s.client_timeout = t;
    }
    if let Some(t) = p.connect_timeout {
        s.connect_timeout = t;
    }
    if let Some(n) = p.retry {
        s.retry.attempts = n;
    }
    if let Some(proxy) = &p.proxy {
        s.proxy = proxy.clone();
    }
    if !p.extra_roots.is_empty() {
        s.extra_roots = p.extra_roots.clone();
    }
    // Like the base URL and the keys, this describes the instance itself (not inherited from
    // the environment's); only an OpenAI-compatible upstream may speak the Responses API.
    s.responses_native = p.kind.may_speak_responses() && p.responses_native.unwrap_or(false);
    s.headers = p.headers.clone();
    s
}

pub(crate) fn build(config: &Config) -> Instances {
    let base = config.upstream.clone();
    let Some(file) = &config.file else {
        return Instances {
            upstreams: vec![Arc::new(UpstreamConfig::new(base.clone()))],
            names: vec![Arc::from(base.name.as_str())],
            router: Router::default(),
            default: 0,
            files: base.provider.serves_openai_endpoints().then_some(0),
            attempts: config.upstream.retry.attempts,
        };
    };
    from_file(config, base, file)
}

fn from_file(config: &Config, base: UpstreamSettings, file: &FileConfig) -> Instances {
    // The environment's instance stays first (it serves names in no group unless the file
    // names another default); the file's follow in order.
    let mut settings = vec![UpstreamSettings {
        name: "default".to_owned(),
        ..base.clone()
    }];
    settings.extend(file.providers.iter().map(|p| file_settings(&base, p)));
    let index = |name: &str| settings.iter().position(|s| s.name == name);
    let groups = file
        .groups
        .iter()
        .map(|g| Group {
            name: g.name.clone(),
            deployments: g
                .deployments
                .iter()
                .filter_map(|d| {
                    let i = index(&d.provider)?;
                    let mut dep = Deployment::new(i, &settings[i].name, &d.model);
                    dep.weight = d.weight;
                    dep.order = d.order;
                    dep.rpm = d.rpm;
                    dep.tpm = d.tpm;
                    Some(Arc::new(dep))
                })
                .collect(),
            fallbacks: g.fallbacks.clone(),
        })
        .collect();
    let strategy = match file.router.strategy.as_deref() {
        Some("least-busy") => Strategy::LeastBusy,
        _ => Strategy::SimpleShuffle,
    };
    let defaults = CooldownPolicy::default();
    let policy = CooldownPolicy {
        allowed_fails: file.router.allowed_fails.unwrap_or(defaults.allowed_fails),
        cooldown: file.router.cooldown.unwrap_or(defaults.cooldown),
    };
    let default = file
        .default_provider
        .as_deref()
        .and_then(index)
        .unwrap_or(0);
    let files = file.files_provider.as_deref().and_then(index);
    let attempts = file
        .router
        .num_retries
        .map_or(config.upstream.retry.attempts, |n| n + 1);
    Instances {
        names: settings
            .iter()
            .map(|s| Arc::from(s.name.as_str()))
            .collect(),
        upstreams: settings
            .into_iter()
            .map(|s| Arc::new(UpstreamConfig::new(s)))
            .collect(),
        router: Router::new(groups, strategy, policy),
        default,
        files,
        attempts,
    }
}
