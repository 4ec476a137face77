//! Scira's official API as the upstream (`PROVIDER=scira-api`) end to end against the mock's
//! imitation of it: the four models and their endpoints, the folded history, the key as
//! `x-api-key`, sources as citations, the finished answer as a stream, the daily quota and a
//! rejected key.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

fn scira_api(mock: &MockServer, keys: &str) -> Gateway {
    let base = mock.url();
    Gateway::start(&[
        ("BASE_URL", base.as_str()),
        ("PROVIDER", "scira-api"),
        ("UPSTREAM_API_KEY", keys),
    ])
}

#[actix_rt::test]
async fn the_four_models_reach_their_endpoints() {
    let mock = MockServer::start().unwrap();
    let gw = scira_api(&mock, "sk-scira-1");
    let ids: Vec<String> = model_ids(&get(&gw, "/v1/models").await.json())
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        ids,
        ["scira-search", "scira-x", "scira-reddit", "scira-people"]
    );

    let body = json!({"model": "scira-search", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who made Scira?"},
        {"role": "assistant", "content": "Zaid Mukaddam."},
        {"role": "user", "content": "Where is its code?"}
    ]});
    let r = post(&gw, "/v1/chat/completions", &body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-usage-source").as_deref(), Some("estimated"));
    let c = r.json();
    assert_eq!(c["model"], "scira-search");
    let msg = &c["choices"][0]["message"];
    assert!(
        msg["content"]
            .as_str()
            .unwrap()
            .contains("Where is its code?"),
        "{msg}"
    );
    let anns = msg["annotations"].as_array().unwrap();
    assert_eq!(anns[0]["url_citation"]["url"], "https://scira.ai/");
    assert_eq!(
        anns[1]["url_citation"]["url"],
        "https://github.com/zaidmukaddam/scira"
    );
    assert!(c["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.path, "/api/search");
    assert_eq!(sent.header("x-api-key"), Some("sk-scira-1"));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(
        sent.json(),
        json!({"messages": [{"role": "user", "content": "Be brief.\n\nConversation so far:\nUser: Who made Scira?\nAssistant: Zaid Mukaddam.\n\nWhere is its code?"}]})
    );

    for (model, path, extra) in [
        (
            "scira-x",
            "/api/xsearch",
            json!({"username": "zaidmukaddam"}),
        ),
        ("scira-reddit", "/api/reddit", json!({})),
        ("scira-people", "/api/people", json!({})),
    ] {
        let mut body = json!({"model": model, "messages": [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "the query"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = post(&gw, "/v1/chat/completions", &body.to_string()).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        assert!(r.header("x-dropped-params").is_none(), "{model}");
        let sent = mock.last_request().unwrap();
        assert_eq!(sent.path, path);
        assert_eq!(
            sent.json()["query"],
            "the query",
            "{model}: the last user message"
        );
        let text = r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        if model == "scira-x" {
            assert_eq!(sent.json()["username"], "zaidmukaddam");
        }
        if model == "scira-people" {
            assert!(text.starts_with("**Mock Person**"), "{text}");
            let anns = r.json()["choices"][0]["message"]["annotations"].clone();
            assert_eq!(anns[0]["url_citation"]["url"], "https://x.com/mock");
        }
    }
    let r = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    r.assert_error(404, Some("model_not_found"));
}

#[actix_rt::test]
async fn a_stream_is_the_finished_answer_and_the_responses_api_cites_too() {
    let mock = MockServer::start().unwrap();
    let gw = scira_api(&mock, "k");
    let body = r#"{"model":"scira-search","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"stream it"}]}"#;
    let r = post(&gw, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let chunks = sse_json(&r.body);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(text.contains("stream it"), "{text}");
    assert!(
        chunks
            .iter()
            .filter(|c| c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty()))
            .count()
            > 1
    );
    let finish = chunks
        .iter()
        .find(|c| c["choices"][0]["finish_reason"] == "stop")
        .unwrap();
    assert_eq!(
        finish["choices"][0]["delta"]["annotations"][0]["type"],
        "url_citation"
    );
    let last = chunks.last().unwrap();
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        last["usage_source"], "estimated",
        "Scira reports no usage: estimated, marked"
    );

    let r = post(
        &gw,
        "/v1/responses",
        r#"{"model":"scira-search","input":"cite it","tools":[{"type":"web_search"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("x-dropped-params").is_none(),
        "a search engine honours web_search"
    );
    let out = r.json()["output"].clone();
    let part = &out
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "message")
        .unwrap()["content"][0];
    assert_eq!(part["annotations"][0]["type"], "url_citation");
    assert_eq!(part["annotations"][0]["url"], "https://scira.ai/");
}

#[actix_rt::test]
async fn the_daily_quota_and_a_rejected_key() {
    let mock = MockServer::start().unwrap();
    let gw = scira_api(&mock, "sk-scira-only");
    mock.push_fault(Fault::Status {
        status: 429,
        headers: vec![],
        body: Bytes::from_static(br#"{"error":"Daily request limit reached"}"#),
    });
    let before = mock.requests().len();
    let r = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"scira-search","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    let e = r.assert_error(429, Some("insufficient_quota"));
    assert_eq!(e["type"], "insufficient_quota");
    assert!(e["message"].as_str().unwrap().contains("00:00 UTC"), "{e}");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&wait), "until midnight UTC: {wait}");
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    assert_eq!(mock.requests().len(), before + 1, "one key: not retried");

    // With a second key the request moves on to it at once.
    let gw2 = scira_api(&mock, "sk-a,sk-b");
    mock.push_fault(Fault::Status {
        status: 429,
        headers: vec![],
        body: Bytes::from_static(br#"{"error":"Daily request limit reached"}"#),
    });
    let started = std::time::Instant::now();
    let r = post(
        &gw2,
        "/v1/chat/completions",
        r#"{"model":"scira-search","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(2));
    let keys: Vec<String> = mock
        .requests()
        .iter()
        .rev()
        .take(2)
        .map(|r| r.header("x-api-key").unwrap().to_owned())
        .collect();
    assert_ne!(keys[0], keys[1], "the other key");

    mock.push_fault(Fault::Status {
        status: 401,
        headers: vec![],
        body: Bytes::from_static(br#"{"error":"Invalid API key"}"#),
    });
    let r = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"scira-search","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    let e = r.assert_error(403, Some("upstream_unauthorized"));
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("provider instance `scira-api`"),
        "{e}"
    );
    assert!(!r.text().contains("sk-scira-only"));

    // What the API cannot do is refused before any call.
    let before = mock.requests().len();
    let e = post(&gw, "/v1/chat/completions", r#"{"model":"scira-search","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#)
        .await
        .assert_error(400, Some("unsupported_parameter"));
    assert_eq!(e["param"], "response_format");
    assert_eq!(mock.requests().len(), before);
    let v: Value = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"scira-search","messages":[{"role":"user","content":"x"}],"temperature":1}"#,
    )
    .await
    .json();
    assert_eq!(v["object"], "chat.completion");
}
