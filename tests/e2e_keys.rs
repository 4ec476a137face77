//! Per-key policies from the config file: a key with its own request limit (`rpm`, `burst`),
//! a key with a token budget (`tpm`: reserved at admission, settled with the real usage, a cut
//! stream with what it produced), a key with a model list (other models: 404 `model_not_found` before any upstream call, on
//! every API; `/v1/models` shows only its models), while `APIKEY` keys and plain file keys keep
//! the defaults.

mod common;

use common::*;

const CONFIG: &str = "providers:
  - {name: up, base_url: \"BASE\"}
models:
  - name: g1
    deployments: [{provider: up, model: m1}]
  - name: g2
    deployments: [{provider: up, model: m2}]
  - name: gpt-x
    deployments: [{provider: up, model: m3}]
keys:
  - sk-plain
  - {key: sk-rpm, name: batch-jobs, rpm: 3}
  - {key: os.environ/MODELS_KEY, name: team-a, models: [g1, \"gpt-*\"]}
  - {key: sk-tpm, name: tokens, tpm: 300}
  - {key: sk-tpm-stream, tpm: 300}
";

fn start(extra: &[(&str, &str)]) -> (Gateway, MockServer) {
    let mock = MockServer::start().unwrap();
    let dir = std::env::temp_dir().join(format!("scira2api-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = mock.url().rsplit(':').next().unwrap_or("0").to_owned();
    let path = dir.join(format!("keys-{port}.yaml"));
    std::fs::write(&path, CONFIG.replace("BASE", &mock.url())).unwrap();
    let path = path.display().to_string();
    let mut env = vec![
        ("CONFIG_FILE", path.as_str()),
        ("APIKEY", "sk-env"),
        ("MODELS_KEY", "sk-models"),
    ];
    env.extend_from_slice(extra);
    (Gateway::start(&env), mock)
}

async fn call(gw: &Gateway, key: &str, path: &str, body: &str) -> Reply {
    send(
        client()
            .post(format!("{}{path}", gw.url))
            .insert_header(("authorization", format!("Bearer {key}")))
            .insert_header(("content-type", "application/json")),
        Some(body),
    )
    .await
}

async fn chat(gw: &Gateway, key: &str, model: &str) -> Reply {
    call(
        gw,
        key,
        "/v1/chat/completions",
        &format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#),
    )
    .await
}

async fn models(gw: &Gateway, key: Option<&str>) -> Vec<String> {
    let mut req = client().get(format!("{}/v1/models", gw.url));
    if let Some(k) = key {
        req = req.insert_header(("authorization", format!("Bearer {k}")));
    }
    let list = send(req, None).await.json();
    model_ids(&list).into_iter().map(str::to_owned).collect()
}

#[actix_rt::test]
async fn a_key_with_its_own_limit_is_limited_and_the_others_are_not() {
    // Rate limiting is off for everyone else (the harness's default here).
    let (gw, _mock) = start(&[]);
    for i in 0..3 {
        let r = chat(&gw, "sk-rpm", "g1").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.header("x-ratelimit-limit-requests").as_deref(), Some("3"));
        assert_eq!(
            r.header("x-ratelimit-remaining-requests").as_deref(),
            Some(["2", "1", "0"][i])
        );
    }
    let refused = chat(&gw, "sk-rpm", "g1").await;
    refused.assert_error(429, Some("rate_limit_exceeded"));
    let wait: f64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1.0..=21.0).contains(&wait), "one token per 20 s: {wait}");
    for key in ["sk-plain", "sk-env", "sk-models"] {
        for _ in 0..6 {
            let r = chat(&gw, key, "g1").await;
            assert_eq!(r.status, 200, "{key}: {}", r.text());
            assert_eq!(
                r.header("x-ratelimit-limit-requests"),
                None,
                "{key} is not limited"
            );
        }
    }
}

#[actix_rt::test]
async fn the_global_limit_stays_for_keys_without_a_policy() {
    let (gw, _mock) = start(&[
        ("RATE_LIMIT_ENABLED", "true"),
        ("REQUESTS_PER_SECOND", "0.001"),
        ("BURST", "5"),
    ]);
    let statuses = |v: Vec<Reply>| v.iter().map(|r| r.status).collect::<Vec<_>>();
    let mut env = Vec::new();
    let mut own = Vec::new();
    for _ in 0..6 {
        env.push(chat(&gw, "sk-env", "g1").await);
        own.push(chat(&gw, "sk-rpm", "g1").await);
    }
    assert_eq!(statuses(env), [200, 200, 200, 200, 200, 429], "BURST=5");
    assert_eq!(
        statuses(own),
        [200, 200, 200, 429, 429, 429],
        "its own rpm: 3"
    );
}

#[actix_rt::test]
async fn a_key_with_a_model_list_uses_and_sees_only_those_models() {
    let (gw, mock) = start(&[]);
    // Its models, exact and by prefix.
    assert_eq!(chat(&gw, "sk-models", "g1").await.status, 200);
    assert_eq!(chat(&gw, "sk-models", "gpt-x").await.status, 200);
    let before = chat_requests(&mock);
    // Any other model, on every API: 404 before any upstream call.
    let e = chat(&gw, "sk-models", "g2")
        .await
        .assert_error(404, Some("model_not_found"));
    assert!(e["message"].as_str().unwrap().contains("g2"), "{e}");
    call(
        &gw,
        "sk-models",
        "/v1/responses",
        r#"{"model":"g2","input":"hi"}"#,
    )
    .await
    .assert_error(404, Some("model_not_found"));
    call(
        &gw,
        "sk-models",
        "/v1/embeddings",
        r#"{"model":"g2","input":"hi"}"#,
    )
    .await
    .assert_error(404, Some("model_not_found"));
    let m = call(
        &gw,
        "sk-models",
        "/v1/messages",
        r#"{"model":"g2","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(m.status, 404, "{}", m.text());
    assert_eq!(m.json()["type"], "error", "Anthropic's shape: {}", m.text());
    assert_eq!(m.json()["error"]["type"], "not_found_error", "{}", m.text());
    assert_eq!(
        chat_requests(&mock),
        before,
        "no upstream call for a refused model: {:?}",
        mock.requests()
            .iter()
            .map(|r| (
                r.path.clone(),
                String::from_utf8_lossy(&r.body).into_owned()
            ))
            .collect::<Vec<_>>()
    );
    assert!(mock.requests().iter().all(|r| r.path != "/v1/embeddings"));

    // The model list: only its models; other keys (and no key) see them all.
    let mine = models(&gw, Some("sk-models")).await;
    assert!(
        mine.contains(&"g1".to_owned()) && mine.contains(&"gpt-x".to_owned()),
        "{mine:?}"
    );
    assert!(!mine.contains(&"g2".to_owned()), "{mine:?}");
    for key in [Some("sk-plain"), Some("sk-env"), None] {
        assert!(models(&gw, key).await.contains(&"g2".to_owned()), "{key:?}");
    }
    let one = send(
        client()
            .get(format!("{}/v1/models/g2", gw.url))
            .insert_header(("authorization", "Bearer sk-models")),
        None,
    )
    .await;
    one.assert_error(404, Some("model_not_found"));
    // Plain keys are unaffected.
    assert_eq!(chat(&gw, "sk-plain", "g2").await.status, 200);
    assert_eq!(chat(&gw, "sk-env", "g2").await.status, 200);
    // The access log names the key's policy, never the key.
    assert!(
        gw.log().contains("model=g2 ") && gw.log().contains("key=team-a"),
        "{}",
        gw.log()
    );
    assert!(!gw.log().contains("sk-models") && !gw.log().contains("sk-rpm"));
}

/// The `usage.total_tokens` of a JSON answer.
fn total_tokens(r: &Reply) -> u64 {
    r.json()["usage"]["total_tokens"].as_u64().unwrap()
}

fn header_u64(r: &Reply, name: &str) -> u64 {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name}: {}", r.text()))
        .parse()
        .unwrap()
}

#[actix_rt::test]
async fn a_keys_token_budget_holds_a_burst_and_is_settled_with_the_real_usage() {
    let (gw, _mock) = start(&[]);
    let body = |max: u32, extra: &str| {
        format!(
            r#"{{"model":"g1","max_tokens":{max},"messages":[{{"role":"user","content":"hi"}}]{extra}}}"#
        )
    };
    // Five at once, each reserving its prompt + 100 of a 300-token budget while the upstream
    // takes 500 ms to answer: two pass, three are refused at once.
    let slow = body(100, r#","mock":{"latency_ms":500}"#);
    let replies = futures_util::future::join_all(
        (0..5).map(|_| call(&gw, "sk-tpm", "/v1/chat/completions", &slow)),
    )
    .await;
    let (ok, refused): (Vec<&Reply>, Vec<&Reply>) = replies.iter().partition(|r| r.status == 200);
    assert_eq!(
        ok.len(),
        2,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &refused {
        let e = r.assert_error(429, Some("rate_limit_exceeded"));
        assert!(e["message"].as_str().unwrap().contains("tokens"), "{e}");
        assert!(r.header("retry-after").is_some());
    }
    for r in &ok {
        assert_eq!(header_u64(r, "x-ratelimit-limit-tokens"), 300);
        assert!(r.header("x-ratelimit-reset-tokens").is_some());
    }
    let used: u64 = ok.iter().map(|r| total_tokens(r)).sum();
    assert!(used < 100, "the mock's answers are short: {used}");
    // Settled: the two gave back what they did not use, so a third reservation of about 110
    // fits (without settlement 2 x 110 + 110 > 300 would be refused).
    let third = call(&gw, "sk-tpm", "/v1/chat/completions", &body(100, "")).await;
    assert_eq!(third.status, 200, "{}", third.text());
    let left = header_u64(&third, "x-ratelimit-remaining-tokens");
    // 300 - what the two used - this reservation (prompt + 100), plus a few seconds of refill.
    let expected = 300 - used - 100;
    assert!(
        left + 30 >= expected && left <= expected + 30,
        "{left} tokens left, about {expected} expected"
    );
    // Keys without a budget get no token headers.
    let plain = chat(&gw, "sk-plain", "g1").await;
    assert_eq!(plain.header("x-ratelimit-limit-tokens"), None);
}

#[actix_rt::test]
async fn a_cut_stream_settles_what_it_produced() {
    let (gw, mock) = start(&[]);
    mock.push_fault(Fault::CutAfter(2));
    let stream = r#"{"model":"g1","stream":true,"max_tokens":200,"messages":[{"role":"user","content":"hi"}],"mock":{"chunks":8,"delay_ms":20}}"#;
    let r = call(&gw, "sk-tpm-stream", "/v1/chat/completions", stream).await;
    assert_eq!(r.status, 200);
    assert_eq!(header_u64(&r, "x-ratelimit-limit-tokens"), 300);
    let frames = sse_json(&r.body);
    assert!(
        frames.last().unwrap()["error"].is_object(),
        "cut: {}",
        r.text()
    );
    // Its reservation (prompt + 200) is settled with an estimate of the few chunks it wrote,
    // in the background: then a reservation of prompt + 250 fits (it would not beside 200).
    let big = r#"{"model":"g1","max_tokens":250,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut passed = None;
    for _ in 0..20 {
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
        let r = call(&gw, "sk-tpm-stream", "/v1/chat/completions", big).await;
        if r.status == 200 {
            passed = Some(r);
            break;
        }
        r.assert_error(429, Some("rate_limit_exceeded"));
    }
    let r = passed.expect("the cut stream's reservation was never settled");
    assert!(header_u64(&r, "x-ratelimit-remaining-tokens") < 50);
}
