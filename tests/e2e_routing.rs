//! Several upstreams through one gateway (`CONFIG_FILE`): routing by model, weights, orders,
//! fallbacks (500, 429, connection refused), no fallback after the first byte, cool-downs with
//! a half-open probe, rpm and tpm skipping (tpm reserved at admission: a burst cannot overshoot
//! it), the 503 when everything rests, a LiteLLM `config.yaml` with
//! `os.environ/` keys, and startup errors naming the file and the key.

mod common;

use bytes::Bytes;
use common::*;
use std::time::Duration;

const CHAT: &str = r#"{"model":"MODEL","messages":[{"role":"user","content":"hi"}]}"#;

fn chat(model: &str) -> String {
    CHAT.replace("MODEL", model)
}

fn calls(mock: &MockServer) -> usize {
    chat_requests(mock)
}

/// A chat request with the file's master key.
async fn post_master(gw: &Gateway, model: &str) -> Reply {
    send(
        client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .insert_header(("authorization", "Bearer sk-master"))
            .insert_header(("content-type", "application/json")),
        Some(&chat(model)),
    )
    .await
}

fn fail(mock: &MockServer, status: u16, n: usize) {
    for _ in 0..n {
        mock.push_fault(Fault::Status {
            status,
            headers: vec![],
            body: Bytes::from(format!(
                r#"{{"error":{{"message":"mock {status}","type":"server_error","param":null,"code":null}}}}"#
            )),
        });
    }
}

/// Writes `text` as a config file and starts the gateway with it.
fn with_config(name: &str, text: &str, env: &[(&str, &str)]) -> Gateway {
    let dir = std::env::temp_dir().join(format!("scira2api-routing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let path = path.display().to_string();
    let mut all = vec![("CONFIG_FILE", path.as_str()), ("RETRY_BASE_DELAY", "5ms")];
    all.extend_from_slice(env);
    Gateway::start(&all)
}

fn providers(mocks: &[(&str, &MockServer)]) -> String {
    let mut out = String::from("providers:\n");
    for (name, m) in mocks {
        out.push_str(&format!(
            "  - name: {name}\n    kind: openai\n    base_url: {}\n",
            m.url()
        ));
    }
    out
}

#[actix_rt::test]
async fn weights_split_a_group_and_names_route_by_model() {
    let (a, b) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let cfg = format!(
        "{}models:\n  - name: split\n    deployments:\n      - {{provider: a, model: ma, weight: 1}}\n      - {{provider: b, model: mb, weight: 3}}\n  - name: only-b\n    deployments:\n      - {{provider: b, model: mb}}\n",
        providers(&[("a", &a), ("b", &b)])
    );
    let base = a.url();
    let gw = with_config("weights.yaml", &cfg, &[("BASE_URL", base.as_str())]);
    for _ in 0..200 {
        let r = post(&gw, "/v1/chat/completions", &chat("split")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["model"], "split", "the client's name comes back");
    }
    let (na, nb) = (calls(&a), calls(&b));
    assert_eq!(na + nb, 200);
    assert!((25..=75).contains(&na), "a got {na} of 200 (weight 1 of 4)");
    let before = calls(&a);
    let r = post(&gw, "/v1/chat/completions", &chat("only-b")).await;
    assert_eq!(r.header("x-gateway-provider").as_deref(), Some("b"));
    assert_eq!(calls(&a), before);
    assert_eq!(
        b.last_request().unwrap().json()["model"],
        "mb",
        "the deployment's model upstream"
    );
    // A name in no group goes to the default provider (the environment's, here none set up),
    // and /v1/models lists the groups.
    let models = get(&gw, "/v1/models").await;
    let ids = model_ids(&models.json())
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert!(
        ids.starts_with(&["split".to_owned(), "only-b".to_owned()]),
        "{ids:?}"
    );
}

#[actix_rt::test]
async fn lower_orders_serve_first_and_failures_fall_back() {
    let (a, b) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let cfg = format!(
        "{}models:\n  - name: g\n    deployments:\n      - {{provider: a, model: m, order: 0}}\n      - {{provider: b, model: m, order: 1}}\nrouter: {{allowed_fails: 100}}\n",
        providers(&[("a", &a), ("b", &b)])
    );
    let gw = with_config("order.yaml", &cfg, &[("RETRY", "3")]);
    for _ in 0..5 {
        post(&gw, "/v1/chat/completions", &chat("g")).await;
    }
    assert_eq!(
        (calls(&a), calls(&b)),
        (5, 0),
        "order 0 takes everything while healthy"
    );
    for status in [500, 429] {
        fail(&a, status, 1);
        let r = post(&gw, "/v1/chat/completions", &chat("g")).await;
        assert_eq!(r.status, 200, "{status}: {}", r.text());
        assert_eq!(
            r.header("x-gateway-provider").as_deref(),
            Some("b"),
            "{status}"
        );
    }
}

#[actix_rt::test]
async fn a_refused_connection_falls_back_and_rests_the_deployment() {
    let b = MockServer::start().unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let cfg = format!(
        "providers:\n  - {{name: dead, base_url: \"http://127.0.0.1:{port}\"}}\n  - {{name: b, base_url: \"{}\"}}\nmodels:\n  - name: g\n    deployments:\n      - {{provider: dead, model: m}}\n      - {{provider: b, model: m, order: 1}}\nrouter: {{allowed_fails: 0, cooldown_time: 30s}}\n",
        b.url()
    );
    let gw = with_config("refused.yaml", &cfg, &[]);
    let r = post(&gw, "/v1/chat/completions", &chat("g")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-provider").as_deref(), Some("b"));
    let m = send(client().get(format!("{}/metrics", gw.url)), None)
        .await
        .json();
    let dead = m["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["provider"] == "dead")
        .unwrap()
        .clone();
    assert_eq!(dead["state"], "resting", "{dead}");
    let health = get(&gw, "/health").await;
    assert_eq!(health.status, 200, "b can still serve");
    let p = health.json()["providers"].clone();
    assert!(
        p.as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "dead" && x["state"] == "resting"),
        "{p}"
    );
}

#[actix_rt::test]
async fn no_fallback_after_the_first_byte() {
    let (a, b) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let cfg = format!(
        "{}models:\n  - name: g\n    deployments:\n      - {{provider: a, model: m}}\n      - {{provider: b, model: m, order: 1}}\n",
        providers(&[("a", &a), ("b", &b)])
    );
    let gw = with_config("cut.yaml", &cfg, &[]);
    a.push_fault(Fault::CutAfter(2));
    let body = r#"{"model":"g","stream":true,"messages":[{"role":"user","content":"hi"}],"mock":{"chunks":8,"delay_ms":20}}"#;
    let r = post(&gw, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 200);
    let frames = sse_json(&r.body);
    assert!(frames.last().unwrap()["error"].is_object(), "{}", r.text());
    assert_eq!(
        calls(&b),
        0,
        "a second answer after the first byte is never written"
    );
}

#[actix_rt::test]
async fn a_resting_deployment_gets_one_probe_then_traffic() {
    let (a, b) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let cfg = format!(
        "{}models:\n  - name: g\n    deployments:\n      - {{provider: a, model: m}}\n      - {{provider: b, model: m, order: 1}}\nrouter: {{allowed_fails: 0, cooldown_time: 1s}}\n",
        providers(&[("a", &a), ("b", &b)])
    );
    let gw = with_config("probe.yaml", &cfg, &[]);
    fail(&a, 500, 1);
    assert_eq!(
        post(&gw, "/v1/chat/completions", &chat("g")).await.status,
        200
    );
    assert_eq!(calls(&a), 1);
    for _ in 0..3 {
        let r = post(&gw, "/v1/chat/completions", &chat("g")).await;
        assert_eq!(r.header("x-gateway-provider").as_deref(), Some("b"));
    }
    assert_eq!(calls(&a), 1, "a rests: not called");
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    let r = post(&gw, "/v1/chat/completions", &chat("g")).await;
    assert_eq!(
        r.header("x-gateway-provider").as_deref(),
        Some("a"),
        "the probe"
    );
    let r = post(&gw, "/v1/chat/completions", &chat("g")).await;
    assert_eq!(
        r.header("x-gateway-provider").as_deref(),
        Some("a"),
        "healthy again"
    );
}

#[actix_rt::test]
async fn everything_resting_is_a_503_with_retry_after() {
    let a = MockServer::start().unwrap();
    let cfg = format!(
        "{}models:\n  - name: g\n    deployments:\n      - {{provider: a, model: m}}\nrouter: {{allowed_fails: 0, cooldown_time: 30s, num_retries: 0}}\n",
        providers(&[("a", &a)])
    );
    let gw = with_config("resting.yaml", &cfg, &[]);
    fail(&a, 503, 1);
    let first = post(&gw, "/v1/chat/completions", &chat("g")).await;
    assert_eq!(first.status, 503, "{}", first.text());
    let r = post(&gw, "/v1/chat/completions", &chat("g")).await;
    let e = r.assert_error(503, Some("no_deployment_available"));
    assert!(e["message"].as_str().unwrap().contains("`g`"), "{e}");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((25..=30).contains(&wait), "{wait}");
    assert_eq!(calls(&a), 1);
    assert_eq!(
        get(&gw, "/health").await.status,
        200,
        "the default provider can serve"
    );
}

#[actix_rt::test]
async fn a_deployment_over_its_rpm_is_skipped() {
    let (a, b) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let cfg = format!(
        "{}models:\n  - name: g\n    deployments:\n      - {{provider: a, model: m, rpm: 2}}\n      - {{provider: b, model: m, order: 1}}\n",
        providers(&[("a", &a), ("b", &b)])
    );
    let gw = with_config("rpm.yaml", &cfg, &[]);
    for _ in 0..5 {
        assert_eq!(
            post(&gw, "/v1/chat/completions", &chat("g")).await.status,
            200
        );
    }
    assert_eq!((calls(&a), calls(&b)), (2, 3));
}

#[actix_rt::test]
async fn a_litellm_config_works_as_it_is() {
    let (a, b) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let cfg = format!(
        r#"model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/mock-gpt
      api_base: {}/v1
      api_key: os.environ/TEST_KEY_A
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/mock-mini
      api_base: {}
      api_key: sk-literal-b
      rpm: 100
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 2
  fallbacks: [{{"gpt-4o": ["gpt-4o-mini"]}}]
  allowed_fails: 1
  cooldown_time: 30
  redis_host: localhost
general_settings:
  master_key: sk-master
litellm_settings:
  drop_params: true
"#,
        a.url(),
        b.url()
    );
    let gw = with_config("litellm.yaml", &cfg, &[("TEST_KEY_A", "sk-from-env")]);
    let r = post_master(&gw, "gpt-4o").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = a.last_request().unwrap();
    assert_eq!(sent.header("authorization"), Some("Bearer sk-from-env"));
    assert_eq!(sent.json()["model"], "mock-gpt");
    // The master key is a client key: without it, 401.
    assert_eq!(
        post(&gw, "/v1/chat/completions", &chat("gpt-4o"))
            .await
            .status,
        401
    );
    // A failure falls back to the other group.
    fail(&a, 500, 3);
    let r = post_master(&gw, "gpt-4o").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        b.last_request().unwrap().header("authorization"),
        Some("Bearer sk-literal-b")
    );
    wait_for(Duration::from_millis(200), || false);
    let log = gw.log();
    assert!(
        log.contains("not used by scira2api")
            && log.contains("redis_host")
            && log.contains("litellm_settings"),
        "{log}"
    );
    assert!(
        !log.contains("sk-from-env") && !log.contains("sk-literal-b"),
        "secrets in the log"
    );
}

fn exit_of(text: &str, name: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("scira2api-routing-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    if !text.is_empty() {
        std::fs::write(&path, text).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scira2api-server"))
        .env_clear()
        .env("CONFIG_FILE", &path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_files_stop_startup_with_one_line() {
    for (text, name, want) in [
        ("model_list: [unclosed\n", "broken.yaml", "valid YAML"),
        (
            "model_list:\n  - model_name: g\n    litellm_params: {model: openai/x, api_key: os.environ/SURELY_UNSET_VAR}\n",
            "env.yaml",
            "SURELY_UNSET_VAR is not set",
        ),
        (
            "models:\n  - name: g\n    deployments: []\n",
            "empty.yaml",
            "at least one deployment",
        ),
        (
            "providers:\n  - {name: a}\nmodels:\n  - name: g\n    deployments: [{provider: a, model: m}]\n    fallbacks: [nowhere]\n",
            "fallback.yaml",
            "nowhere",
        ),
    ] {
        let (code, stderr) = exit_of(text, name, &[]);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.contains(name) && stderr.contains(want),
            "{name}: {stderr}"
        );
    }
    let (code, stderr) = exit_of("", "missing-dir/none.yaml", &[]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[actix_rt::test]
async fn per_deployment_series_are_valid_prometheus() {
    let (a, b) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let cfg = format!(
        "{}models:\n  - name: \"g \\\"quoted\\\"\"\n    deployments:\n      - {{provider: a, model: m}}\n      - {{provider: b, model: m}}\n",
        providers(&[("a", &a), ("b", &b)])
    );
    let gw = with_config("prom.yaml", &cfg, &[]);
    post(&gw, "/v1/chat/completions", &chat("g \\\"quoted\\\"")).await;
    let text = get(&gw, "/metrics/prometheus").await.text();
    assert!(
        text.contains(
            "scira2api_deployment_state{group=\"g \\\"quoted\\\"\",provider=\"a\",model=\"m\"} 0"
        ),
        "{text}"
    );
    assert!(text.contains("# TYPE scira2api_deployment_requests_total counter"));
    assert!(text.contains("# TYPE scira2api_deployment_latency_seconds summary"));
    let count = "scira2api_deployment_latency_seconds_count{group=\"g \\\"quoted\\\"\",provider=\"";
    let timed: f64 = text
        .lines()
        .filter(|l| l.starts_with(count))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(timed, 1.0, "{text}");
    let json = get(&gw, "/metrics").await.json();
    let deps = json["deployments"].as_array().unwrap();
    assert!(
        deps.iter()
            .any(|d| d["latency_ms_avg"].as_f64().unwrap() > 0.0),
        "{json}"
    );
    assert_promtool_accepts(&text);
}

#[actix_rt::test]
async fn a_deployment_over_its_tpm_is_skipped() {
    let (a, b) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let cfg = format!(
        "{}models:\n  - name: g\n    deployments:\n      - {{provider: a, model: m, tpm: 5}}\n      - {{provider: b, model: m, order: 1}}\n",
        providers(&[("a", &a), ("b", &b)])
    );
    let gw = with_config("tpm.yaml", &cfg, &[]);
    // Each mock answer reports well over 5 tokens: the first spends a's minute.
    let first = post(&gw, "/v1/chat/completions", &chat("g")).await;
    assert!(first.json()["usage"]["total_tokens"].as_u64().unwrap() > 5);
    assert_eq!(first.header("x-gateway-provider").as_deref(), Some("a"));
    for _ in 0..2 {
        let r = post(&gw, "/v1/chat/completions", &chat("g")).await;
        assert_eq!(
            r.header("x-gateway-provider").as_deref(),
            Some("b"),
            "over its tpm"
        );
    }
    // Streams are charged when they end.
    let (c, d) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let cfg = format!(
        "{}models:\n  - name: s\n    deployments:\n      - {{provider: c, model: m, tpm: 5}}\n      - {{provider: d, model: m, order: 1}}\n",
        providers(&[("c", &c), ("d", &d)])
    );
    let gw = with_config("tpm-stream.yaml", &cfg, &[]);
    let body = r#"{"model":"s","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = post(&gw, "/v1/chat/completions", body).await;
    assert_eq!(r.header("x-gateway-provider").as_deref(), Some("c"));
    sse_json(&r.body);
    let r = post(&gw, "/v1/chat/completions", &chat("s")).await;
    assert_eq!(r.header("x-gateway-provider").as_deref(), Some("d"));
}

#[actix_rt::test]
async fn the_model_list_names_the_instance_of_each_upstream_entry() {
    let a = MockServer::start().unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://127.0.0.1:{}", dead.local_addr().unwrap().port());
    drop(dead);
    let cfg = format!(
        "{}models:\n  - name: g\n    deployments:\n      - {{provider: a, model: m}}\n",
        providers(&[("a", &a)])
    );
    // The environment's (default) instance is down: its list is empty, a's is listed as a's.
    let gw = with_config("lists.yaml", &cfg, &[("BASE_URL", base.as_str())]);
    let list = get(&gw, "/v1/models").await.json();
    let data = list["data"].as_array().unwrap();
    assert_eq!(data[0]["id"], "g");
    let mock = data
        .iter()
        .find(|m| m["id"] == "mock-gpt")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(mock["owned_by"], "a");
}

#[actix_rt::test]
async fn a_burst_cannot_overshoot_a_deployments_tpm() {
    let (a, b) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let cfg = format!(
        "{}models:\n  - name: g\n    deployments:\n      - {{provider: a, model: m, tpm: 250}}\n      - {{provider: b, model: m, order: 1}}\n",
        providers(&[("a", &a), ("b", &b)])
    );
    let gw = with_config("tpm-burst.yaml", &cfg, &[]);
    // Four at once, each reserving its prompt + 100 while `a` takes 400 ms to answer: two fit
    // in a's budget; the others go to `b` (counted after the answers, all four would reach a).
    let slow = r#"{"model":"g","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"mock":{"latency_ms":400}}"#;
    let replies =
        futures_util::future::join_all((0..4).map(|_| post(&gw, "/v1/chat/completions", slow)))
            .await;
    assert!(replies.iter().all(|r| r.status == 200));
    assert_eq!(calls(&a), 2, "reserved at admission");
    assert_eq!(calls(&b), 2);
    // Settled with the real usage: a takes requests again.
    let small = r#"{"model":"g","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = post(&gw, "/v1/chat/completions", small).await;
    assert_eq!(r.header("x-gateway-provider").as_deref(), Some("a"));
}
