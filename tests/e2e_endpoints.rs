//! OpenAI's endpoints beside chat through the gateway, end to end against the mock: embeddings
//! (routed by model with fallback, `model` rewritten both ways, the rest byte for byte, usage
//! recorded or estimated and marked), legacy completions (JSON, and streams byte for byte with
//! the forced usage chunk dropped again), moderations, image generation, speech (binary, with
//! its content type), and the 400 for a provider kind that cannot serve them. (The OpenAI SDKs
//! against these endpoints are in `tests/sdk/`, run by `.ci/run`.)

mod common;

use bytes::Bytes;
use common::*;
use serde_json::{Value, json};

/// Writes `text` as a config file and starts the gateway with it.
fn with_config(name: &str, text: &str) -> Gateway {
    let dir = std::env::temp_dir().join(format!("scira2api-endpoints-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let path = path.display().to_string();
    Gateway::start(&[("CONFIG_FILE", path.as_str()), ("RETRY_BASE_DELAY", "5ms")])
}

/// The same request straight to the mock, for byte comparisons.
async fn direct(mock: &MockServer, path: &str, body: &str) -> Reply {
    send(
        client()
            .post(format!("{}{path}", mock.url()))
            .insert_header(("content-type", "application/json")),
        Some(body),
    )
    .await
}

fn requests_to(mock: &MockServer, path: &str) -> Vec<scira2api_mock::Recorded> {
    mock.requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

#[actix_rt::test]
async fn embeddings_rewrite_the_model_and_forward_the_rest() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(
        &mock,
        &[("MODEL_MAPPINGS", "embed-small:text-embedding-3-small")],
    );
    let body = r#"{"model":"embed-small","input":["alpha beta","gamma"],"dimensions":4,"user":"u1","x_vendor":{"k":1}}"#;
    let r = post(&gw, "/v1/embeddings", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["model"], "embed-small", "the client's name comes back");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(v["usage"]["prompt_tokens"], 3, "the upstream's usage: {v}");
    assert_eq!(r.header("x-usage-source").as_deref(), Some("upstream"));
    let sent = requests_to(&mock, "/v1/embeddings");
    assert_eq!(sent.len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&sent[0].body),
        body.replace("embed-small", "text-embedding-3-small"),
        "only model is replaced; unknown fields go on as they were"
    );
    // Identical input embeds identically, and base64 comes back as it was sent.
    let again = post(&gw, "/v1/embeddings", body).await.json();
    assert_eq!(again["data"], v["data"]);
    let b64 = post(
        &gw,
        "/v1/embeddings",
        r#"{"model":"embed-small","input":[1,2,3],"encoding_format":"base64"}"#,
    )
    .await;
    assert_eq!(b64.status, 200, "{}", b64.text());
    assert!(b64.json()["data"][0]["embedding"].is_string());
    // The usage reaches the token metrics.
    let metrics = get(&gw, "/metrics/prometheus").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("model=\"embed-small\"") && l.contains("prompt")),
        "{metrics}"
    );
}

#[actix_rt::test]
async fn usage_the_upstream_omits_is_estimated_and_marked() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[]);
    let r = post(
        &gw,
        "/v1/embeddings",
        r#"{"model":"e","input":"the quick brown fox","mock":{"no_usage":true}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 4, "{v}");
    assert_eq!(v["usage_source"], "estimated");
    assert_eq!(r.header("x-usage-source").as_deref(), Some("estimated"));
    let r = post(
        &gw,
        "/v1/completions",
        r#"{"model":"c","prompt":"say this","mock":{"no_usage":true}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(
        v["usage"]["total_tokens"].as_u64(),
        Some(
            v["usage"]["prompt_tokens"].as_u64().unwrap()
                + v["usage"]["completion_tokens"].as_u64().unwrap()
        )
    );
    assert_eq!(r.header("x-usage-source").as_deref(), Some("estimated"));
}

#[actix_rt::test]
async fn embeddings_route_by_model_and_fall_back() {
    let (a, b) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let cfg = format!(
        "providers:\n  - {{name: a, kind: openai, base_url: {}}}\n  - {{name: b, kind: openai, base_url: {}}}\nmodels:\n  - name: embed\n    deployments:\n      - {{provider: a, model: ea, order: 0}}\n      - {{provider: b, model: eb, order: 1}}\nrouter: {{allowed_fails: 100}}\n",
        a.url(),
        b.url()
    );
    let gw = with_config("embed.yaml", &cfg);
    let body = r#"{"model":"embed","input":"x"}"#;
    let r = post(&gw, "/v1/embeddings", body).await;
    assert_eq!(r.header("x-gateway-provider").as_deref(), Some("a"));
    assert_eq!(requests_to(&a, "/v1/embeddings")[0].json()["model"], "ea");
    a.push_fault(Fault::Status {
        status: 503,
        headers: vec![],
        body: Bytes::from_static(
            br#"{"error":{"message":"busy","type":"server_error","param":null,"code":null}}"#,
        ),
    });
    let r = post(&gw, "/v1/embeddings", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-provider").as_deref(), Some("b"));
    assert_eq!(r.json()["model"], "embed");
    assert_eq!(requests_to(&b, "/v1/embeddings")[0].json()["model"], "eb");
    // The upstream's own 400 comes back as it said it, and is not retried elsewhere.
    let before = requests_to(&b, "/v1/embeddings").len();
    let r = post(
        &gw,
        "/v1/embeddings",
        r#"{"model":"embed","input":{"no":1}}"#,
    )
    .await;
    let e = r.assert_error(400, None);
    assert_eq!(e["param"], "input", "{e}");
    assert_eq!(requests_to(&b, "/v1/embeddings").len(), before);
}

#[actix_rt::test]
async fn a_completions_stream_passes_through_byte_for_byte() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[]);
    for body in [
        r#"{"model":"davinci","prompt":"one two three","stream":true,"stream_options":{"include_usage":true}}"#,
        r#"{"model":"davinci","prompt":"one two three","stream":true}"#,
    ] {
        let r = post(&gw, "/v1/completions", body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("text/event-stream")
        );
        let upstream = direct(&mock, "/v1/completions", body).await;
        assert_eq!(
            r.text(),
            upstream.text(),
            "the client gets what the upstream would have sent it"
        );
        assert!(r.text().ends_with("data: [DONE]\n\n"));
        // The gateway always asks for the usage chunk (to count it).
        let sent = requests_to(&mock, "/v1/completions");
        let sent = sent[sent.len() - 2].json();
        assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
    }
    let text: String = sse_json(
        post(
            &gw,
            "/v1/completions",
            r#"{"model":"davinci","prompt":"hi","stream":true}"#,
        )
        .await
        .body
        .as_ref(),
    )
    .iter()
    .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
    .collect();
    assert_eq!(text, " and then the mock completed: hi");
    let metrics = get(&gw, "/metrics/prometheus").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("model=\"davinci\"") && l.contains("completion")),
        "the streamed usage is counted: {metrics}"
    );
}

#[actix_rt::test]
async fn a_completions_stream_cut_after_the_first_byte_ends_with_an_error_event() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[]);
    // Paced, so that the answer has reached the client when the upstream breaks off.
    mock.options(|o| o.chunk_delay = std::time::Duration::from_millis(20));
    mock.push_fault(Fault::CutAfter(2));
    let r = post(
        &gw,
        "/v1/completions",
        r#"{"model":"davinci","prompt":"a b c d e f","stream":true}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let frames = sse_frames(&r.body);
    assert_eq!(
        frames.last().map(String::as_str),
        Some("[DONE]"),
        "{frames:?}"
    );
    let error: Value = serde_json::from_str(&frames[frames.len() - 2]).unwrap();
    assert!(error["error"]["message"].is_string(), "{frames:?}");
    assert_eq!(
        requests_to(&mock, "/v1/completions").len(),
        1,
        "no retry after the first byte"
    );
}

#[actix_rt::test]
async fn moderations_images_and_speech() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("MODEL_MAPPINGS", "voice:tts-1-hd")]);
    // A moderation may name no model: the upstream picks its default.
    let r = post(&gw, "/v1/moderations", r#"{"input":["fine","kill it"]}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["results"][1]["flagged"], true);
    assert_eq!(v["model"], "omni-moderation-latest");
    assert!(
        requests_to(&mock, "/v1/moderations")[0]
            .json()
            .get("model")
            .is_none()
            || requests_to(&mock, "/v1/moderations")[0].json()["model"].is_null()
    );
    let r = post(
        &gw,
        "/v1/images/generations",
        r#"{"model":"gpt-image-1","prompt":"a dot","n":2,"size":"1024x1024"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    let body = r#"{"model":"voice","input":"hello there","voice":"alloy","response_format":"wav"}"#;
    let r = post(&gw, "/v1/audio/speech", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some("audio/wav"));
    let upstream = direct(&mock, "/v1/audio/speech", body).await;
    assert_eq!(
        r.body, upstream.body,
        "the audio streamed through as it was"
    );
    assert_eq!(
        requests_to(&mock, "/v1/audio/speech")[0].json()["model"],
        "tts-1-hd"
    );
    // A missing model is the client's 400, before any upstream call.
    let before = mock.requests().len();
    let r = post(&gw, "/v1/embeddings", r#"{"input":"x"}"#).await;
    assert_eq!(r.assert_error(400, None)["param"], "model");
    let r = post(&gw, "/v1/embeddings", "not json").await;
    r.assert_error(400, None);
    assert_eq!(mock.requests().len(), before);
}

#[actix_rt::test]
async fn providers_that_cannot_serve_an_endpoint_say_so_before_any_call() {
    let mock = MockServer::start().unwrap();
    let base = mock.url();
    for (kind, instance) in [
        ("scira", "scira"),
        ("anthropic", "anthropic"),
        ("scira-api", "scira-api"),
    ] {
        let gw = Gateway::start(&[
            ("BASE_URL", base.as_str()),
            ("PROVIDER", kind),
            ("UPSTREAM_API_KEY", "k"),
        ]);
        for (path, body) in [
            ("/v1/embeddings", r#"{"model":"m","input":"x"}"#),
            ("/v1/completions", r#"{"model":"m","prompt":"x"}"#),
            (
                "/v1/audio/speech",
                r#"{"model":"m","input":"x","voice":"alloy"}"#,
            ),
            ("/v1/images/generations", r#"{"model":"m","prompt":"x"}"#),
            ("/v1/moderations", r#"{"input":"x"}"#),
        ] {
            let r = post(&gw, path, body).await;
            let e = r.assert_error(400, Some("unsupported_endpoint"));
            let msg = e["message"].as_str().unwrap();
            assert!(
                msg.contains(instance) && msg.contains(path),
                "{kind} {path}: {msg}"
            );
        }
    }
    assert_eq!(mock.requests().len(), 0, "nothing reached the upstream");
    // In a config file, a group with an instance of another kind is refused the same way.
    let cfg = format!(
        "providers:\n  - {{name: oa, kind: openai, base_url: {base}}}\n  - {{name: sc, kind: scira, base_url: {base}}}\nmodels:\n  - name: mixed\n    deployments:\n      - {{provider: oa, model: a}}\n      - {{provider: sc, model: b}}\n  - name: plain\n    deployments:\n      - {{provider: oa, model: a}}\n"
    );
    let gw = with_config("mixed.yaml", &cfg);
    let r = post(&gw, "/v1/embeddings", r#"{"model":"mixed","input":"x"}"#).await;
    assert!(
        r.assert_error(400, Some("unsupported_endpoint"))["message"]
            .as_str()
            .unwrap()
            .contains("`sc`")
    );
    let r = post(&gw, "/v1/embeddings", r#"{"model":"plain","input":"x"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let _ = json!(null);
}

/// The gateway's peak resident memory in KiB.
fn peak_kib(gw: &Gateway) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", gw.pid()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

const BOUNDARY: &str = "----scira2apiTestBoundary7MA4YWxk";

/// A multipart part's opening (delimiter and headers).
fn part_head(name: &str, filename: Option<&str>) -> String {
    match filename {
        Some(f) => format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ),
        None => format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"),
    }
}

/// A whole multipart body of text fields and one file.
fn multipart(fields: &[(&str, &str)], file: (&str, &str, &[u8]), file_first: bool) -> Vec<u8> {
    let mut text = Vec::new();
    for (k, v) in fields {
        text.extend_from_slice(part_head(k, None).as_bytes());
        text.extend_from_slice(v.as_bytes());
        text.extend_from_slice(b"\r\n");
    }
    let mut f = part_head(file.0, Some(file.1)).into_bytes();
    f.extend_from_slice(file.2);
    f.extend_from_slice(b"\r\n");
    let mut out = if file_first {
        [f, text].concat()
    } else {
        [text, f].concat()
    };
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

async fn post_multipart(gw: &Gateway, path: &str, body: Vec<u8>) -> Reply {
    let mut resp = client()
        .post(format!("{}{path}", gw.url))
        .insert_header((
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        ))
        .send_body(body)
        .await
        .expect("request failed");
    let body = resp.body().limit(64 << 20).await.expect("body");
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body,
    }
}

#[actix_rt::test]
async fn transcriptions_route_by_the_model_field_and_keep_their_formats() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("MODEL_MAPPINGS", "stt:whisper-1")]);
    let audio = b"ID3 fake audio \r\n-- not a delimiter";
    for (format, content_type, file_first) in [
        ("json", "application/json", false),
        ("text", "text/plain; charset=utf-8", true),
        ("srt", "text/plain; charset=utf-8", false),
        ("vtt", "text/vtt; charset=utf-8", true),
    ] {
        let body = multipart(
            &[
                ("model", "stt"),
                ("response_format", format),
                ("language", "en"),
            ],
            ("file", "a.mp3", audio),
            file_first,
        );
        for path in ["/v1/audio/transcriptions", "/v1/audio/translations"] {
            let r = post_multipart(&gw, path, body.clone()).await;
            assert_eq!(r.status, 200, "{format} {path}: {}", r.text());
            assert_eq!(
                r.header("content-type").as_deref(),
                Some(content_type),
                "{format}"
            );
            let expected = format!(
                "mock transcript by whisper-1 of a.mp3 ({} bytes, digest {})",
                audio.len(),
                scira2api_mock::digest(audio)
            );
            assert!(r.text().contains(&expected), "{format}: {}", r.text());
            let sent = mock.last_request().unwrap();
            assert_eq!(
                sent.body.len(),
                body.len() - "stt".len() + "whisper-1".len(),
                "only the model field changed"
            );
        }
    }
    let r = post_multipart(
        &gw,
        "/v1/images/edits",
        multipart(
            &[("model", "gpt-image-1"), ("prompt", "a hat")],
            ("image", "i.png", b"\x89PNG"),
            true,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["data"][0]["revised_prompt"],
        "a hat (edited 4 bytes)"
    );
    // No model, no boundary, the upstream's own 400: each an OpenAI error.
    let r = post_multipart(
        &gw,
        "/v1/audio/transcriptions",
        multipart(&[], ("file", "a.mp3", b"x"), true),
    )
    .await;
    assert_eq!(r.assert_error(400, None)["param"], "model");
    let r = post(&gw, "/v1/audio/transcriptions", r#"{"model":"stt"}"#).await;
    r.assert_error(400, None);
    let r = post_multipart(
        &gw,
        "/v1/audio/transcriptions",
        multipart(
            &[("model", "stt"), ("response_format", "mp4")],
            ("file", "a.mp3", b"x"),
            false,
        ),
    )
    .await;
    assert_eq!(r.assert_error(400, None)["param"], "response_format");
}

#[actix_rt::test]
async fn a_30_mb_upload_streams_through_without_growing_the_gateway() {
    use futures_util::stream;
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("MODEL_MAPPINGS", "stt:whisper-1")]);
    // Warm the gateway up (workers, pools) before its peak memory is read.
    let small = multipart(&[("model", "stt")], ("file", "a.mp3", b"x"), false);
    assert_eq!(
        post_multipart(&gw, "/v1/audio/transcriptions", small)
            .await
            .status,
        200
    );
    const MIB: usize = 1024 * 1024;
    let chunk: Vec<u8> = (0..MIB).map(|i| (i * 7 % 251) as u8).collect();
    let file: Vec<u8> = chunk.repeat(30);
    // The model before the file (Python's SDK) and after it (Node's SDK, curl's examples).
    for model_last in [false, true] {
        let before = peak_kib(&gw);
        let model = format!("{}stt\r\n", part_head("model", None));
        let (head, tail) = if model_last {
            (
                part_head("file", Some("big.wav")),
                format!("\r\n{model}--{BOUNDARY}--\r\n"),
            )
        } else {
            (
                format!("{model}{}", part_head("file", Some("big.wav"))),
                format!("\r\n--{BOUNDARY}--\r\n"),
            )
        };
        let mut pieces = vec![Bytes::from(head)];
        pieces.extend((0..30).map(|_| Bytes::from(chunk.clone())));
        pieces.push(Bytes::from(tail));
        let body = stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
        let mut resp = client()
            .post(format!("{}/v1/audio/transcriptions", gw.url))
            .insert_header((
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            ))
            .timeout(std::time::Duration::from_secs(60))
            .send_stream(body)
            .await
            .expect("upload");
        let text = resp.body().limit(1 << 20).await.unwrap();
        assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(&text));
        let v: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(
            v["text"],
            format!(
                "mock transcript by whisper-1 of big.wav ({} bytes, digest {})",
                file.len(),
                scira2api_mock::digest(&file)
            ),
            "every byte arrived, in order"
        );
        let grew = peak_kib(&gw).saturating_sub(before);
        assert!(
            grew < 12 * 1024,
            "model last {model_last}: the gateway's peak memory grew by {grew} KiB for a 30 MiB upload"
        );
    }
    // Over MAX_UPLOAD_BYTES: a 413 before anything is sent.
    let gw = Gateway::openai(&mock, &[("MAX_UPLOAD_BYTES", "4096")]);
    let before = mock.requests().len();
    let big = multipart(&[("model", "stt")], ("file", "a.mp3", &[b'a'; 8192]), false);
    post_multipart(&gw, "/v1/audio/transcriptions", big)
        .await
        .assert_error(413, None);
    assert_eq!(mock.requests().len(), before);
}

#[actix_rt::test]
async fn files_and_batches_go_to_the_configured_instance() {
    let (a, b) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let cfg = format!(
        "providers:\n  - {{name: a, kind: openai, base_url: {}}}\n  - {{name: store, kind: openai, base_url: {}}}\nfiles_provider: store\n",
        a.url(),
        b.url()
    );
    let gw = with_config("files.yaml", &cfg);
    let data =
        b"{\"custom_id\":\"1\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{}}\n";
    let up = post_multipart(
        &gw,
        "/v1/files",
        multipart(&[("purpose", "batch")], ("file", "in.jsonl", data), false),
    )
    .await;
    assert_eq!(up.status, 200, "{}", up.text());
    assert_eq!(up.header("x-gateway-provider").as_deref(), Some("store"));
    let id = up.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(up.json()["bytes"], data.len());
    let list = get(&gw, "/v1/files?purpose=batch&limit=10").await;
    assert_eq!(list.json()["data"][0]["id"], id.as_str());
    assert_eq!(
        b.requests()
            .iter()
            .find(|r| r.method == "GET")
            .unwrap()
            .path,
        "/v1/files?purpose=batch&limit=10",
        "the query goes on as it was"
    );
    let content = get(&gw, &format!("/v1/files/{id}/content")).await;
    assert_eq!(&content.body[..], data);
    assert_eq!(
        content.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    let batch = post(
        &gw,
        "/v1/batches",
        &format!(r#"{{"input_file_id":"{id}","endpoint":"/v1/chat/completions","completion_window":"24h"}}"#),
    )
    .await;
    assert_eq!(batch.status, 200, "{}", batch.text());
    let bid = batch.json()["id"].as_str().unwrap().to_owned();
    let cancel = post(&gw, &format!("/v1/batches/{bid}/cancel"), "").await;
    assert_eq!(cancel.json()["status"], "cancelling");
    assert_eq!(
        get(&gw, &format!("/v1/batches/{bid}")).await.json()["status"],
        "cancelling"
    );
    let del = send(client().delete(format!("{}/v1/files/{id}", gw.url)), None).await;
    assert_eq!(del.json()["deleted"], true);
    // The upstream's 404 is an OpenAI error.
    get(&gw, &format!("/v1/files/{id}"))
        .await
        .assert_error(404, None);
    assert!(
        a.requests().is_empty(),
        "nothing went to the other instance"
    );
    // Without files_provider (and no OpenAI-compatible environment instance): a 404 saying so.
    let cfg = format!(
        "providers:\n  - {{name: a, kind: openai, base_url: {}}}\n",
        a.url()
    );
    let dir = std::env::temp_dir().join(format!("scira2api-endpoints-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("nofiles.yaml"), cfg).unwrap();
    let path = dir.join("nofiles.yaml").display().to_string();
    let gw = Gateway::start(&[("CONFIG_FILE", path.as_str()), ("PROVIDER", "scira")]);
    let e = get(&gw, "/v1/files").await.assert_error(404, None);
    assert!(
        e["message"].as_str().unwrap().contains("files_provider"),
        "{e}"
    );
    // With the environment's OpenAI-compatible instance alone, it serves them.
    let gw = Gateway::openai(&a, &[]);
    assert_eq!(get(&gw, "/v1/batches").await.status, 200);
}

#[actix_rt::test]
async fn identical_embeddings_and_completions_are_served_from_the_cache() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(&mock, &[("CACHE_ENABLED", "true")]);
    for (path, body) in [
        (
            "/v1/embeddings",
            r#"{"model":"e","input":["a","b"],"dimensions":3}"#,
        ),
        (
            "/v1/completions",
            r#"{"model":"c","prompt":"x","mock":{"no_usage":true}}"#,
        ),
    ] {
        let first = post(&gw, path, body).await;
        assert_eq!(first.header("x-cache").as_deref(), Some("MISS"), "{path}");
        let again = post(&gw, path, body).await;
        assert_eq!(again.header("x-cache").as_deref(), Some("HIT"), "{path}");
        assert_eq!(
            again.body, first.body,
            "{path}: the same answer, byte for byte"
        );
        assert_eq!(
            again.header("x-usage-source"),
            first.header("x-usage-source"),
            "{path}"
        );
        assert_eq!(requests_to(&mock, path).len(), 1, "{path}");
        // Another input is another entry; no-store skips the cache.
        let other = post(
            &gw,
            path,
            &body.replace("\"x\"", "\"y\"").replace("\"b\"", "\"c\""),
        )
        .await;
        assert_eq!(other.header("x-cache").as_deref(), Some("MISS"));
    }
    // A streamed completion and speech are not cached.
    let stream = r#"{"model":"c","prompt":"x","stream":true}"#;
    post(&gw, "/v1/completions", stream).await;
    let r = post(&gw, "/v1/completions", stream).await;
    assert_eq!(r.header("x-cache").as_deref(), Some("BYPASS"));
}
