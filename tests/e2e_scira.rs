//! End to end: the real server binary with `PROVIDER=scira` against the mock serving Scira's
//! protocol — every shared fixture (AI SDK 4, 5 and 6 bodies produced by the real `ai`
//! packages) must become exactly its `.expected.json`, streamed and not streamed.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/scira")
}

fn scira(mock: &MockServer, extra: &[(&str, &str)]) -> Gateway {
    let base = mock.url();
    let mut env = vec![
        ("BASE_URL", base.as_str()),
        ("PROVIDER", "scira"),
        ("RETRY", "1"),
    ];
    env.extend_from_slice(extra);
    Gateway::start(&env)
}

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

/// What a streamed answer amounted to, in the fixtures' expected.json shape.
fn summarize_stream(body: &[u8]) -> Value {
    let frames = sse_frames(body);
    assert_eq!(
        frames.last().map(String::as_str),
        Some("[DONE]"),
        "ends with [DONE]"
    );
    let mut content = String::new();
    let mut reasoning: Option<String> = None;
    let mut finish = Value::Null;
    let mut usage = Value::Null;
    let mut error = Value::Null;
    let chunks = &frames[..frames.len() - 1];
    for (i, f) in chunks.iter().enumerate() {
        let v: Value = serde_json::from_str(f).unwrap();
        if let Some(e) = v.get("error") {
            assert_eq!(
                i,
                chunks.len() - 1,
                "the error event is the last frame before [DONE]"
            );
            error = e["message"].clone();
            continue;
        }
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["model"], "gpt-4o", "the name the client asked for");
        let choices = v["choices"].as_array().unwrap();
        if choices.is_empty() {
            usage = v["usage"].clone();
            continue;
        }
        if i == 0 {
            assert_eq!(
                choices[0]["delta"]["role"], "assistant",
                "role in the first chunk"
            );
        }
        assert!(finish.is_null(), "no choice chunk after the finish: {f}");
        finish = choices[0]["finish_reason"].clone();
        let d = &choices[0]["delta"];
        if let Some(t) = d["content"].as_str() {
            content.push_str(t);
        }
        if let Some(t) = d["reasoning_content"].as_str() {
            reasoning.get_or_insert_with(String::new).push_str(t);
        }
    }
    json!({"content": content, "reasoning_content": reasoning, "finish_reason": finish, "usage": usage, "error": error})
}

fn check_error(got: &Value, expected: &Value, ctx: &str) {
    match expected.as_str() {
        None => assert!(got.is_null(), "{ctx}: unexpected error {got}"),
        Some(text) => {
            let msg = got
                .as_str()
                .unwrap_or_else(|| panic!("{ctx}: expected an error, got {got}"));
            assert!(msg.contains(text), "{ctx}: `{msg}` should contain `{text}`");
        }
    }
}

#[actix_rt::test]
async fn every_fixture_streamed_and_not_streamed() {
    let mut checked = 0;
    for version in ["v4", "v5", "v6"] {
        let dir = fixtures_dir().join(version);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("fixtures at {}: {e}", dir.display()))
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .into_string()
                    .ok()?
                    .strip_suffix(".stream")
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        assert!(names.len() >= 5, "{version}: {names:?}");
        let mock = MockServer::start().unwrap();
        let gw = scira(&mock, &[]);
        for name in names {
            let ctx = format!("{version}/{name}");
            let body = std::fs::read(dir.join(format!("{name}.stream"))).unwrap();
            let expected: Value = serde_json::from_slice(
                &std::fs::read(dir.join(format!("{name}.expected.json"))).unwrap(),
            )
            .unwrap();
            mock.options(|o| o.scira_body = Some(Bytes::from(body)));

            // Streamed.
            let r = post(&gw, "/v1/chat/completions", STREAM).await;
            assert_eq!(r.status, 200, "{ctx}: {}", r.text());
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("text/event-stream")
            );
            let got = summarize_stream(&r.body);
            assert_eq!(got["content"], expected["content"], "{ctx} content");
            assert_eq!(
                got["reasoning_content"], expected["reasoning_content"],
                "{ctx} reasoning"
            );
            assert_eq!(
                got["finish_reason"], expected["finish_reason"],
                "{ctx} finish_reason"
            );
            assert_eq!(got["usage"], expected["usage"], "{ctx} usage");
            check_error(&got["error"], &expected["error"], &ctx);

            // Not streamed.
            let r = post(&gw, "/v1/chat/completions", CHAT).await;
            if expected["error"].is_null() {
                assert_eq!(r.status, 200, "{ctx}: {}", r.text());
                let v = r.json();
                assert_eq!(v["object"], "chat.completion");
                assert_eq!(v["model"], "gpt-4o");
                let m = &v["choices"][0]["message"];
                assert_eq!(m["role"], "assistant");
                assert_eq!(m["content"], expected["content"], "{ctx} content");
                assert_eq!(
                    m.get("reasoning_content").cloned().unwrap_or(Value::Null),
                    expected["reasoning_content"],
                    "{ctx} reasoning"
                );
                assert_eq!(
                    v["choices"][0]["finish_reason"], expected["finish_reason"],
                    "{ctx}"
                );
                assert_eq!(v["usage"], expected["usage"], "{ctx} usage");
            } else {
                let e = r.assert_error(502, Some("upstream_error"));
                check_error(&e["message"], &expected["error"], &ctx);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 15);
}

#[actix_rt::test]
async fn request_is_translated_for_scira_with_browser_headers_and_cookie() {
    let mock = MockServer::start().unwrap();
    let cookie = "__Secure-better-auth.session_token=tok123.sig";
    let gw = scira(
        &mock,
        &[
            ("SCIRA_COOKIE", cookie),
            ("SCIRA_GROUP", "web"),
            ("SCIRA_TIMEZONE", "Europe/Paris"),
        ],
    );
    let body = json!({
        "model": "gpt-4o", "temperature": 0.3,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "https://img.example/cat.png"}}]},
            {"role": "assistant", "content": "a cat"},
            {"role": "user", "content": "thanks"}
        ]
    });
    let r = post(&gw, "/v1/chat/completions", &body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("thanks")
    );
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.path, "/api/search");
    assert_eq!(seen.header("cookie"), Some(cookie));
    assert_eq!(seen.header("origin"), Some(mock.url().as_str()));
    assert_eq!(
        seen.header("referer"),
        Some(format!("{}/", mock.url()).as_str())
    );
    assert!(seen.header("user-agent").unwrap().contains("Mozilla/5.0"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    let b = seen.json();
    assert_eq!(b["model"], "scira-default");
    assert_eq!(b["group"], "web");
    assert_eq!(b["timezone"], "Europe/Paris");
    assert_eq!(b["isTemporaryChat"], true);
    assert_eq!(b["id"].as_str().unwrap().len(), 36, "a uuid chat id");
    let msgs = b["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4, "the whole history, system included");
    assert_eq!(msgs[0]["role"], "system");
    assert_eq!(
        msgs[1]["parts"],
        json!([{"type":"text","text":"what is this?"},{"type":"file","url":"https://img.example/cat.png","mediaType":"image/png"}])
    );
    assert_eq!(msgs[2]["role"], "assistant");
    assert!(
        msgs.iter()
            .all(|m| m["id"].is_string() && m["parts"].is_array())
    );
    // A second request gets a fresh chat id.
    post(&gw, "/v1/chat/completions", CHAT).await;
    assert_ne!(mock.last_request().unwrap().json()["id"], b["id"]);
    assert!(!gw.log().contains("tok123"), "cookie in the log");
}

#[actix_rt::test]
async fn v4_body_for_older_deployments() {
    let mock = MockServer::start().unwrap();
    mock.options(|o| o.scira_format = scira2api_mock::SciraFormat::V4);
    let gw = scira(
        &mock,
        &[("SCIRA_BODY", "v4"), ("SCIRA_USER_IDS", "user-a,user-b")],
    );
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    post(&gw, "/v1/chat/completions", CHAT).await;
    let reqs = mock.requests();
    let b0 = reqs[0].json();
    assert_eq!(b0["messages"][0]["content"], "hi");
    assert_eq!(b0["messages"][0]["parts"][0]["text"], "hi");
    let ids: Vec<Value> = reqs.iter().map(|r| r.json()["user_id"].clone()).collect();
    assert_eq!(ids, [json!("user-a"), json!("user-b")]);
}

#[actix_rt::test]
async fn cookies_rotate_and_a_refused_one_is_rested() {
    let mock = MockServer::start().unwrap();
    let gw = scira(&mock, &[("SCIRA_COOKIE", "s=A|s=B")]);
    assert_eq!(post(&gw, "/v1/chat/completions", CHAT).await.status, 200);
    assert_eq!(post(&gw, "/v1/chat/completions", CHAT).await.status, 200);
    let used: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.header("cookie").unwrap().to_owned())
        .collect();
    assert_eq!(used, ["s=A", "s=B"]);
    // A is refused with 401: it is rested, the following requests use B only.
    mock.push_fault(Fault::Status {
        status: 401,
        headers: vec![],
        body: Bytes::from_static(br#"{"code":"unauthorized:auth","message":"You need to sign in","cause":"session expired"}"#),
    });
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    let e = r.assert_error(403, Some("upstream_unauthorized"));
    assert!(
        e["message"].as_str().unwrap().contains("SCIRA_COOKIE"),
        "{e}"
    );
    for _ in 0..4 {
        assert_eq!(post(&gw, "/v1/chat/completions", CHAT).await.status, 200);
    }
    let used: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.header("cookie").unwrap().to_owned())
        .collect();
    assert_eq!(&used[2..], ["s=A", "s=B", "s=B", "s=B", "s=B"]);
}

#[actix_rt::test]
async fn scira_errors_before_the_stream_become_openai_errors() {
    let mock = MockServer::start().unwrap();
    let gw = scira(&mock, &[]);
    let dir = fixtures_dir().join("errors");
    let fault = |name: &str, headers: Vec<(String, String)>| {
        let status: u16 = std::fs::read_to_string(dir.join(format!("{name}.status")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Fault::Status {
            status,
            headers,
            body: Bytes::from(std::fs::read(dir.join(format!("{name}.json"))).unwrap()),
        }
    };
    mock.push_fault(fault(
        "rate_limit_429",
        vec![("retry-after".into(), "30".into())],
    ));
    let r = post(&gw, "/v1/chat/completions", STREAM).await;
    let e = r.assert_error(429, Some("rate_limit_exceeded"));
    assert!(
        e["message"].as_str().unwrap().contains("daily free limit"),
        "{e}"
    );
    assert_eq!(r.header("retry-after").as_deref(), Some("30"));
    assert_eq!(r.header("retry-after-ms").as_deref(), Some("30000"));

    mock.push_fault(fault("upgrade_required_402", vec![]));
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    let e = r.assert_error(402, Some("upgrade_required"));
    assert_eq!(e["type"], "insufficient_quota");
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));

    mock.push_fault(fault("bad_request_400", vec![]));
    post(&gw, "/v1/chat/completions", CHAT)
        .await
        .assert_error(400, Some("bad_request"));

    mock.push_fault(Fault::Status {
        status: 403,
        headers: vec![],
        body: Bytes::from_static(b"<!DOCTYPE html><html><body>Forbidden</body></html>"),
    });
    let e = post(&gw, "/v1/chat/completions", STREAM)
        .await
        .assert_error(502, Some("upstream_blocked"));
    assert!(e["message"].as_str().unwrap().contains("HTML"), "{e}");

    // A bare 500 (Scira's answer to its own limits and failures): said what it most likely
    // is, and retried once at most although RETRY allows three attempts.
    let gw = scira(&mock, &[("RETRY", "3"), ("RETRY_BASE_DELAY", "10ms")]);
    for _ in 0..2 {
        mock.push_fault(Fault::Status {
            status: 500,
            headers: vec![],
            body: Bytes::new(),
        });
    }
    let before = mock.requests().len();
    let e = post(&gw, "/v1/chat/completions", CHAT)
        .await
        .assert_error(502, Some("scira_server_error"));
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("100 messages a day"),
        "{e}"
    );
    assert_eq!(mock.requests().len(), before + 2, "one retry, no more");

    // The hosting platform's challenge: never retried, told apart from Scira's own 429.
    mock.push_fault(Fault::Status {
        status: 429,
        headers: vec![("x-vercel-mitigated".into(), "challenge".into())],
        body: Bytes::from_static(
            b"<!DOCTYPE html><html><title>Vercel Security Checkpoint</title></html>",
        ),
    });
    let before = mock.requests().len();
    let e = post(&gw, "/v1/chat/completions", CHAT)
        .await
        .assert_error(502, Some("upstream_blocked"));
    assert!(e["message"].as_str().unwrap().contains("challenge"), "{e}");
    assert_eq!(mock.requests().len(), before + 1, "never retried");
}

#[actix_rt::test]
async fn a_200_that_is_not_a_scira_stream_is_a_clean_error() {
    let mock = MockServer::start().unwrap();
    mock.options(|o| {
        o.scira_body = Some(Bytes::from_static(
            b"<!DOCTYPE html><html>challenge</html>\n",
        ))
    });
    let gw = scira(&mock, &[]);
    let e = post(&gw, "/v1/chat/completions", STREAM)
        .await
        .assert_error(502, Some("upstream_blocked"));
    assert!(e["message"].as_str().unwrap().contains("HTML"), "{e}");
    post(&gw, "/v1/chat/completions", CHAT)
        .await
        .assert_error(502, Some("upstream_blocked"));
}

#[actix_rt::test]
async fn cut_stream_is_an_error_not_a_success() {
    let mock = MockServer::start().unwrap();
    mock.options(|o| {
        o.chunks = 8;
        o.chunk_delay = Duration::from_millis(20);
    });
    let gw = scira(&mock, &[]);
    mock.push_fault(Fault::CutAfter(5));
    let r = post(&gw, "/v1/chat/completions", STREAM).await;
    assert_eq!(r.status, 200);
    let got = summarize_stream(&r.body);
    assert!(got["finish_reason"].is_null(), "{got}");
    assert!(got["error"].is_string(), "{got}");
    assert!(
        !got["content"].as_str().unwrap().is_empty(),
        "text before the cut is kept: {got}"
    );
    mock.push_fault(Fault::CutAfter(5));
    post(&gw, "/v1/chat/completions", CHAT)
        .await
        .assert_error(502, Some("upstream_error"));
}

#[actix_rt::test]
async fn silent_upstream_gets_keep_alive_comments() {
    let mock = MockServer::start().unwrap();
    mock.options(|o| {
        o.chunks = 2;
        o.chunk_delay = Duration::from_millis(400);
    });
    let gw = scira(&mock, &[("HEARTBEAT_INTERVAL", "100ms")]);
    let r = post(&gw, "/v1/chat/completions", STREAM).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.matches(": keep-alive\n\n").count() >= 3, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    let got = summarize_stream(&r.body);
    assert_eq!(got["finish_reason"], "stop");
}

#[actix_rt::test]
async fn models_list_the_scira_table_and_extra_ids() {
    let mock = MockServer::start().unwrap();
    let gw = scira(
        &mock,
        &[
            ("SCIRA_MODELS", "scira-grok-4,scira-custom"),
            ("SCIRA_COOKIE", "session=signed-in"),
        ],
    );
    let v = get(&gw, "/v1/models").await.json();
    let ids = model_ids(&v);
    assert_eq!(ids[0], "gpt-4o");
    assert!(
        ids.contains(&"scira-custom") && ids.contains(&"qwen3-32b"),
        "{ids:?}"
    );
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["owned_by"] == "scira")
    );
    // Raw Scira ids pass through unmapped.
    let r = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"scira-custom","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.json()["model"], "scira-custom");
    assert_eq!(mock.last_request().unwrap().json()["model"], "scira-custom");
}

/// A web search asked for — chat's `web_search_options`, or a Responses `web_search` tool,
/// offered or forced — selects Scira's `web` group; otherwise `SCIRA_GROUP` (default `chat`).
#[actix_rt::test]
async fn a_web_search_request_selects_the_web_group() {
    let mock = MockServer::start().unwrap();
    let gw = scira(&mock, &[]);
    let group = |mock: &MockServer| mock.last_request().unwrap().json()["group"].clone();
    post(&gw, "/v1/chat/completions", CHAT).await;
    assert_eq!(group(&mock), "chat");
    let body = r#"{"model":"gpt-4o","web_search_options":{},"messages":[{"role":"user","content":"news?"}]}"#;
    assert_eq!(post(&gw, "/v1/chat/completions", body).await.status, 200);
    assert_eq!(group(&mock), "web");
    for body in [
        r#"{"model":"gpt-4o","input":"news?","tools":[{"type":"web_search"}]}"#,
        r#"{"model":"gpt-4o","input":"news?","tools":[{"type":"web_search_preview"}],"tool_choice":{"type":"web_search_preview"}}"#,
    ] {
        let r = post(&gw, "/v1/responses", body).await;
        assert_eq!(r.status, 200, "{body}: {}", r.text());
        assert!(
            r.header("x-dropped-params").is_none(),
            "{body}: honoured, not dropped"
        );
        assert_eq!(group(&mock), "web", "{body}");
        let tools = r.json()["tools"].clone();
        assert!(
            tools[0]["type"].as_str().unwrap().starts_with("web_search"),
            "{tools}"
        );
    }
    post(
        &gw,
        "/v1/responses",
        r#"{"model":"gpt-4o","input":"no search"}"#,
    )
    .await;
    assert_eq!(group(&mock), "chat");
}

/// Scira's sources as OpenAI `url_citation` annotations: on the message, on the stream's
/// finish chunk, on the Responses API's `output_text`; from a generated web search and from
/// the recorded `tool_step` fixture (a `web_search` result list and a `source-url` part).
#[actix_rt::test]
async fn sources_become_url_citation_annotations() {
    let mock = MockServer::start().unwrap();
    let gw = scira(&mock, &[]);
    let body = r#"{"model":"gpt-4o","web_search_options":{},"messages":[{"role":"user","content":"what is scira?"}]}"#;
    let c = post(&gw, "/v1/chat/completions", body).await.json();
    let msg = &c["choices"][0]["message"];
    let anns = msg["annotations"].as_array().expect("annotations");
    assert_eq!(anns.len(), 2, "{msg}");
    assert_eq!(anns[0]["type"], "url_citation");
    let first = &anns[0]["url_citation"];
    assert_eq!(
        (first["url"].as_str(), first["title"].as_str()),
        (Some("https://scira.ai/"), Some("Scira AI"))
    );
    let text: Vec<char> = msg["content"].as_str().unwrap().chars().collect();
    let (s, e) = (
        first["start_index"].as_u64().unwrap() as usize,
        first["end_index"].as_u64().unwrap() as usize,
    );
    assert_eq!(
        text[s..e].iter().collect::<String>(),
        "[scira.ai](https://scira.ai/)"
    );
    assert_eq!(
        anns[1]["url_citation"]["end_index"],
        text.len(),
        "unmarked: the whole text"
    );

    // Streamed: on the finish chunk.
    let stream = r#"{"model":"gpt-4o","stream":true,"web_search_options":{},"messages":[{"role":"user","content":"what is scira?"}]}"#;
    let chunks = sse_json(&post(&gw, "/v1/chat/completions", stream).await.body);
    let finish = chunks
        .iter()
        .find(|c| c["choices"][0]["finish_reason"] == "stop")
        .unwrap();
    assert_eq!(
        finish["choices"][0]["delta"]["annotations"],
        msg["annotations"]
    );

    // The Responses API: on output_text, in its own shape.
    for stream in [false, true] {
        let body = json!({"model": "gpt-4o", "input": "what is scira?", "tools": [{"type": "web_search"}], "stream": stream});
        let r = post(&gw, "/v1/responses", &body.to_string()).await;
        let response = if stream {
            let text = r.text();
            let done = text
                .split("\n\n")
                .find(|e| e.starts_with("event: response.completed"))
                .unwrap()
                .split_once("data: ")
                .unwrap()
                .1
                .to_owned();
            serde_json::from_str::<Value>(&done).unwrap()["response"].clone()
        } else {
            r.json()
        };
        let part = &response["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "message")
            .unwrap()["content"][0];
        assert_eq!(part["type"], "output_text");
        let a = &part["annotations"][0];
        assert_eq!(
            (a["type"].as_str(), a["url"].as_str()),
            (Some("url_citation"), Some("https://scira.ai/")),
            "stream={stream}: {part}"
        );
        assert_eq!(a["start_index"], first["start_index"]);
    }

    // The recorded fixture: three distinct sources, the linked one spanning its link.
    let fixture = std::fs::read(fixtures_dir().join("v6/tool_step.stream")).unwrap();
    let replay = MockServer::start().unwrap();
    replay.options(|o| o.scira_body = Some(fixture.into()));
    let gw = scira(&replay, &[]);
    let c = post(&gw, "/v1/chat/completions", CHAT).await.json();
    let urls: Vec<&str> = c["choices"][0]["message"]["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["url_citation"]["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            "https://scira.ai/",
            "https://github.com/zaidmukaddam/scira",
            "https://scira.ai/about"
        ]
    );

    // Turned off.
    let gw = scira(&replay, &[("SCIRA_CITATIONS", "false")]);
    let c = post(&gw, "/v1/chat/completions", CHAT).await.json();
    assert!(
        c["choices"][0]["message"].get("annotations").is_none(),
        "{c}"
    );
}

/// What a client requires and Scira cannot do is a 400 naming the param and the provider,
/// before anything is sent; what it only hints is dropped and named in `x-dropped-params`.
#[actix_rt::test]
async fn scira_refuses_requirements_and_names_what_it_drops() {
    let mock = MockServer::start().unwrap();
    let gw = scira(&mock, &[]);
    let tools = r#""tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]"#;
    for (extra, param) in [
        (format!(r#",{tools},"tool_choice":"required""#), "tool_choice"),
        (format!(r#",{tools},"tool_choice":{{"type":"function","function":{{"name":"get_weather"}}}}"#), "tool_choice"),
        (r#","response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object"}}}"#.to_owned(), "response_format"),
        (r#","response_format":{"type":"json_object"}"#.to_owned(), "response_format"),
    ] {
        let body = format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"x"}}]{extra}}}"#);
        let e = post(&gw, "/v1/chat/completions", &body)
            .await
            .assert_error(400, Some("unsupported_parameter"));
        assert_eq!(e["param"], param, "{e}");
        assert!(e["message"].as_str().unwrap().contains("provider `scira`"), "{e}");
    }
    assert!(mock.requests().is_empty(), "nothing reached Scira");
    let body = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"x"}}],"temperature":0.3,{tools},"tool_choice":"auto","max_tokens":50}}"#
    );
    let r = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-dropped-params").as_deref(),
        Some("temperature, tools, tool_choice, max_tokens")
    );
    // The server's stderr reaches the test through a reader thread: wait for the line.
    assert!(wait_for(Duration::from_secs(2), || gw.log().contains(
        "accepted without effect: temperature, tools, tool_choice, max_tokens"
    )));
    // Streams name them too.
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"x"}],"top_p":0.5}"#;
    let r = post(&gw, "/v1/chat/completions", body).await;
    assert_eq!(r.header("x-dropped-params").as_deref(), Some("top_p"));
}

/// Scira counts every anonymous request against the IP's quota, even those it then rejects:
/// without a session, a model or group that needs one is refused before anything is sent.
#[actix_rt::test]
async fn anonymous_requests_are_checked_before_anything_is_sent() {
    let mock = MockServer::start().unwrap();
    let gw = scira(&mock, &[]);
    let body = r#"{"model":"grok-4","messages":[{"role":"user","content":"x"}]}"#;
    let e = post(&gw, "/v1/chat/completions", body)
        .await
        .assert_error(403, Some("scira_sign_in_required"));
    assert!(
        e["message"].as_str().unwrap().contains("SCIRA_COOKIE"),
        "{e}"
    );
    assert!(mock.requests().is_empty());
    let gw = scira(&mock, &[("SCIRA_COOKIE", "session=1")]);
    assert_eq!(post(&gw, "/v1/chat/completions", body).await.status, 200);
    assert_eq!(mock.last_request().unwrap().json()["model"], "scira-grok-4");
    // An unknown group is refused at startup: it would get Scira's 200 with an error inside.
    let base = mock.url();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scira2api-server"))
        .env_clear()
        .env("PROVIDER", "scira")
        .env("BASE_URL", &base)
        .env("SCIRA_GROUP", "websearch")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SCIRA_GROUP"));
}
