//! The Grafana dashboard (`docker/grafana/scira2api-dashboard.json`) against what the gateway
//! really exports: every metric a panel queries, and every label it matches or groups by, must
//! be in the live `/metrics/prometheus` of a gateway with model groups, a shared store and some
//! traffic (errors and a cut stream included); and every query must be valid PromQL
//! (`promtool check rules`, with Grafana's variables replaced as Grafana would).

mod common;

use bytes::Bytes;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const DASHBOARD: &str = include_str!("../docker/grafana/scira2api-dashboard.json");

/// The labels Prometheus itself adds, and the histogram bucket label.
const ADDED_LABELS: [&str; 3] = ["instance", "job", "le"];

/// Every `expr` of every panel target, rows' collapsed panels included.
fn exprs(dashboard: &Value) -> Vec<String> {
    fn walk(panels: &Value, out: &mut Vec<String>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push(e.to_owned());
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// What Grafana puts in place of its variables before a query reaches Prometheus.
fn substituted(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$instance", ".*")
}

/// Metric families of a text exposition: name -> (type, label names seen on its samples).
fn families(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                out.entry(name.to_owned()).or_default().0 = kind.to_owned();
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let sample = &line[..name_end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                sample.strip_suffix(s).filter(|f| {
                    out.get(*f)
                        .is_some_and(|t| t.0 == "histogram" || t.0 == "summary")
                })
            })
            .unwrap_or(sample);
        let labels: BTreeSet<String> = line[name_end..]
            .strip_prefix('{')
            .and_then(|l| l.split_once('}'))
            .map(|(l, _)| {
                l.split(',')
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        out.entry(family.to_owned()).or_default().1.extend(labels);
    }
    out
}

/// Identifiers of an expr that name scira2api metrics.
fn metric_names(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("scira2api_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        out.push(expr[start..end].to_owned());
        i = end;
    }
    out
}

/// Label names an expr uses: in matchers (`{a="x", b=~"y"}`) and in `by (...)` / `without
/// (...)` / `on (...)` / `ignoring (...)` clauses.
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| {
        s.trim()
            .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .to_owned()
    };
    // Matchers: text between `{` and `}`, split on commas outside quotes.
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let inside = &rest[open + 1..open + close];
        let mut in_quote = false;
        let mut part = String::new();
        for c in inside.chars().chain([',']) {
            match c {
                '"' => {
                    in_quote = !in_quote;
                    part.push(c);
                }
                ',' if !in_quote => {
                    if let Some(name) = part.split(['=', '!']).next() {
                        let name = ident(name);
                        if !name.is_empty() {
                            out.insert(name);
                        }
                    }
                    part.clear();
                }
                c => part.push(c),
            }
        }
        rest = &rest[open + close + 1..];
    }
    for kw in ["by", "without", "on", "ignoring"] {
        let mut rest = expr;
        while let Some(at) = rest.find(kw) {
            let before_ok = at == 0
                || !rest.as_bytes()[at - 1].is_ascii_alphanumeric()
                    && rest.as_bytes()[at - 1] != b'_';
            let after = rest[at + kw.len()..].trim_start();
            if before_ok && after.starts_with('(') {
                if let Some(close) = after.find(')') {
                    out.extend(
                        after[1..close]
                            .split(',')
                            .map(ident)
                            .filter(|s| !s.is_empty()),
                    );
                }
            }
            rest = &rest[at + kw.len()..];
        }
    }
    out
}

#[actix_rt::test]
async fn every_dashboard_query_names_metrics_and_labels_the_gateway_exports() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "scira2api");
    let queries = exprs(&dashboard);
    assert!(queries.len() >= 30, "{} queries", queries.len());

    // A gateway exporting everything it can: model groups (deployment series), a shared store
    // (REDIS_URL; unreachable here, which still exports its series), limits and cache on.
    let (a, b) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let dir = std::env::temp_dir().join(format!("scira2api-grafana-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("groups.yaml");
    std::fs::write(
        &cfg,
        format!(
            "providers:\n  - {{name: a, base_url: \"{}\"}}\n  - {{name: b, base_url: \"{}\"}}\nmodels:\n  - name: g\n    deployments:\n      - {{provider: a, model: m}}\n      - {{provider: b, model: m, order: 1}}\nrouter: {{allowed_fails: 0, cooldown_time: 1s}}\n",
            a.url(),
            b.url()
        ),
    )
    .unwrap();
    let dead = common::proxies::free_port();
    let redis = format!("redis://127.0.0.1:{dead}");
    let cfg = cfg.display().to_string();
    let gw = Gateway::start(&[
        ("CONFIG_FILE", cfg.as_str()),
        ("RETRY_BASE_DELAY", "5ms"),
        ("REDIS_URL", redis.as_str()),
        ("RATE_LIMIT_ENABLED", "true"),
        ("CACHE_ENABLED", "true"),
    ]);
    // Traffic: an answer (tokens, usage), an upstream error with a fallback, a cut stream.
    a.push_fault(Fault::Status {
        status: 500,
        headers: vec![],
        body: Bytes::from_static(
            br#"{"error":{"message":"mock","type":"server_error","param":null,"code":null}}"#,
        ),
    });
    let chat = r#"{"model":"g","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(post(&gw, "/v1/chat/completions", chat).await.status, 200);
    assert_eq!(post(&gw, "/v1/chat/completions", chat).await.status, 200);
    b.push_fault(Fault::CutAfter(2));
    a.push_fault(Fault::CutAfter(2));
    let stream = r#"{"model":"g","stream":true,"messages":[{"role":"user","content":"cut"}],"mock":{"chunks":8,"delay_ms":20}}"#;
    let r = post(&gw, "/v1/chat/completions", stream).await;
    assert_eq!(r.status, 200);
    let exposition = get(&gw, "/metrics/prometheus").await.text();
    let exported = families(&exposition);

    let mut problems = Vec::new();
    for q in &queries {
        let names = metric_names(q);
        if names.is_empty() {
            problems.push(format!("names no scira2api metric: {q}"));
        }
        let mut labels: BTreeSet<String> = ADDED_LABELS.iter().map(|s| s.to_string()).collect();
        for n in &names {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).filter(|f| exported.contains_key(*f)))
                .unwrap_or(n);
            match exported.get(family) {
                Some((kind, l)) => {
                    if n != family && kind != "histogram" && kind != "summary" {
                        problems.push(format!("{n}: {family} is a {kind}, not a histogram"));
                    }
                    if n.ends_with("_bucket") && kind != "histogram" {
                        problems.push(format!("{n}: {family} has no buckets ({kind})"));
                    }
                    labels.extend(l.iter().cloned());
                }
                None => problems.push(format!("{n} is not exported (query: {q})")),
            }
        }
        for l in label_names(q) {
            if !labels.contains(&l) {
                problems.push(format!("label `{l}` is on none of {names:?} (query: {q})"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nexported: {:?}",
        problems.join("\n"),
        exported.keys()
    );

    // Valid PromQL: every query as a recording rule, checked by promtool.
    let Some(promtool) = common::proxies::tool("promtool") else {
        return;
    };
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&substituted(q)).unwrap()
        ));
    }
    let file = dir.join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = std::process::Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_checks_themselves_catch_what_they_should() {
    assert_eq!(
        metric_names("sum(rate(scira2api_a_total[5m])) / scira2api_b"),
        ["scira2api_a_total", "scira2api_b"]
    );
    let l = label_names(
        r#"sum by (route, le) (rate(x{instance=~"$instance", status=~"5..", a!="b,c"}[5m]))"#,
    );
    assert_eq!(
        l.into_iter().collect::<Vec<_>>(),
        ["a", "instance", "le", "route", "status"]
    );
    assert!(
        label_names("rate(standby[5m])").is_empty(),
        "`by` inside a word is no clause"
    );
    let f = families(
        "# TYPE scira2api_x histogram\nscira2api_x_bucket{le=\"1\",route=\"/v1\"} 1\nscira2api_x_sum 1\n# TYPE scira2api_y counter\nscira2api_y{model=\"m\"} 2\n",
    );
    assert_eq!(
        f["scira2api_x"].1.iter().collect::<Vec<_>>(),
        ["le", "route"]
    );
    assert_eq!(f["scira2api_y"].0, "counter");
    assert!(!f.contains_key("scira2api_x_bucket"));
}
