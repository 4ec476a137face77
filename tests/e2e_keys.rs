//! Per-key policies from the config file: a key with its own request limit (`rpm`, `burst`),
//! a key with a model list (other models: 404 `model_not_found` before any upstream call, on
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
