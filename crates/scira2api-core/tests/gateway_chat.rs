//! `Gateway::chat` called directly (as an embedder would), against the mock upstream.

use bytes::Bytes;
use scira2api_core::{
    CacheStatus, ChatContext, ChatReply, ChatRequest, Config, Gateway, GatewayState, UsageSource,
};
use scira2api_mock::{Fault, MockServer};
use std::collections::HashMap;

fn config(vars: &[(&str, String)]) -> Config {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Config::from_vars(vars).expect("config")
}

fn request(model: &str) -> ChatRequest {
    ChatRequest::parse(Bytes::from(format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello"}}]}}"#
    )))
    .unwrap()
}

fn json(reply: &ChatReply) -> serde_json::Value {
    match reply {
        ChatReply::Json(b) => serde_json::from_slice(b).unwrap(),
        ChatReply::Stream(_) => panic!("expected JSON"),
    }
}

#[actix_rt::test]
async fn answers_maps_the_model_and_serves_the_second_from_the_cache() {
    let mock = MockServer::start().unwrap();
    let state = GatewayState::new(config(&[
        ("BASE_URL", mock.url()),
        ("MODEL_MAPPINGS", "gpt-4o:mock-gpt".into()),
        ("CACHE_ENABLED", "true".into()),
    ]));
    let gw = Gateway::new(state);
    let first = gw
        .chat(&request("gpt-4o"), ChatContext::default())
        .await
        .unwrap();
    assert_eq!(first.cache, CacheStatus::Miss);
    assert_eq!(&*first.provider, "openai");
    let v = json(&first.reply);
    assert_eq!(v["model"], "gpt-4o", "the client's name comes back");
    assert_eq!(mock.last_request().unwrap().json()["model"], "mock-gpt");
    assert_eq!(first.usage.unwrap().1, UsageSource::Upstream);
    let second = gw
        .chat(&request("gpt-4o"), ChatContext::default())
        .await
        .unwrap();
    assert_eq!(second.cache, CacheStatus::Hit);
    assert_eq!(&*second.provider, "cache");
    assert_eq!(json(&second.reply)["usage"], v["usage"]);
}

#[actix_rt::test]
async fn reads_the_upstreams_usage_wherever_the_answer_puts_it() {
    let mock = MockServer::start().unwrap();
    // As OpenAI writes an answer: `usage`, then more fields after it.
    mock.push_fault(Fault::Status {
        status: 200,
        headers: vec![],
        body: Bytes::from_static(
            br#"{"id":"c1","object":"chat.completion","created":1,"model":"mock-gpt","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9},"service_tier":"default","system_fingerprint":"fp_1"}"#,
        ),
    });
    let gw = Gateway::new(GatewayState::new(config(&[
        ("BASE_URL", mock.url()),
        ("MODEL_MAPPINGS", "gpt-4o:mock-gpt".into()),
    ])));
    let out = gw
        .chat(&request("gpt-4o"), ChatContext::default())
        .await
        .unwrap();
    let (usage, source) = out.usage.unwrap();
    assert_eq!(source, UsageSource::Upstream);
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (7, 2, 9)
    );
    let v = json(&out.reply);
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["usage"]["total_tokens"], 9, "the body is left as it came");
    assert_eq!(v["system_fingerprint"], "fp_1");
}

#[actix_rt::test]
async fn a_group_falls_back_to_its_next_deployment() {
    let (a, b) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    a.push_fault(Fault::Status {
        status: 503,
        headers: vec![],
        body: Bytes::from_static(
            br#"{"error":{"message":"busy","type":"server_error","param":null,"code":null}}"#,
        ),
    });
    let dir = std::env::temp_dir().join(format!("scira2api-gw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.yaml");
    std::fs::write(
        &file,
        format!(
            "providers:\n  - {{name: a, base_url: \"{}\"}}\n  - {{name: b, base_url: \"{}\"}}\nmodels:\n  - name: g\n    deployments:\n      - {{provider: a, model: ma}}\n      - {{provider: b, model: mb, order: 1}}\n",
            a.url(),
            b.url()
        ),
    )
    .unwrap();
    let state = GatewayState::new(config(&[
        ("BASE_URL", a.url()),
        ("CONFIG_FILE", file.display().to_string()),
        ("CACHE_ENABLED", "false".into()),
        ("RETRY_BASE_DELAY", "1ms".into()),
    ]));
    let gw = Gateway::new(state);
    let out = gw
        .chat(&request("g"), ChatContext::default())
        .await
        .unwrap();
    assert_eq!(&*out.provider, "b");
    assert_eq!(out.retries, 1, "one move to the next deployment");
    assert_eq!(json(&out.reply)["model"], "g");
    assert_eq!(b.last_request().unwrap().json()["model"], "mb");
    // A name in no group goes to the default instance, unchanged.
    let plain = gw
        .chat(&request("other"), ChatContext::default())
        .await
        .unwrap();
    assert_eq!(&*plain.provider, "default");
    assert_eq!(a.last_request().unwrap().json()["model"], "other");
}
