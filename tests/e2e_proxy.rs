//! End to end: upstream traffic through real proxy servers — tinyproxy (HTTP CONNECT with basic
//! auth) and microsocks (SOCKS5 with username/password), both from Debian's packages; `.ci/run`
//! installs them. Outside CI a machine without them skips these tests with a message; in CI a
//! missing proxy binary fails them.

mod common;

use common::proxies::*;
use common::*;
use std::time::Duration;

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

#[actix_rt::test]
async fn http_connect_proxy_carries_the_traffic_and_failures_never_go_direct() {
    let Some(proxy) = tinyproxy() else { return };
    let mock = MockServer::start().unwrap();
    let good = format!("http://proxyuser:s3cret-pass@127.0.0.1:{}", proxy.port);
    let gw = Gateway::openai(&mock, &[("HTTP_PROXY", &good), ("RETRY", "1")]);
    assert_chat_and_stream_complete(&gw).await;
    let target = format!("CONNECT {}", mock.addr());
    assert!(
        proxy.log().contains(&target),
        "tinyproxy saw no `{target}`:\n{}",
        proxy.log()
    );
    assert!(
        !gw.log().contains("s3cret-pass"),
        "proxy password in the log"
    );

    // Wrong password: 502 proxy_error naming the proxy, and nothing reached the upstream directly.
    let before = mock.requests().len();
    let bad = format!("http://proxyuser:wrong@127.0.0.1:{}", proxy.port);
    let gw_bad = Gateway::openai(&mock, &[("HTTP_PROXY", &bad), ("RETRY", "1")]);
    let e = post(&gw_bad, "/v1/chat/completions", CHAT)
        .await
        .assert_error(502, Some("proxy_error"));
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(&format!("127.0.0.1:{}", proxy.port)), "{msg}");
    assert!(!msg.contains("wrong"), "{msg}");
    assert_eq!(mock.requests().len(), before, "no direct fallback");

    // Proxy gone: still never direct.
    let port = proxy.port;
    drop(proxy);
    let e = post(&gw, "/v1/chat/completions", CHAT)
        .await
        .assert_error(502, Some("proxy_error"));
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{e}"
    );
    assert_eq!(mock.requests().len(), before);
}

#[actix_rt::test]
async fn socks5_proxy_with_password_and_remote_dns() {
    let Some(proxy) = microsocks() else { return };
    let mock = MockServer::start().unwrap();
    // socks5h: the proxy resolves `localhost` itself.
    let base = format!("http://localhost:{}", mock.addr().port());
    let url = format!("socks5h://sockuser:s0cks-pass@127.0.0.1:{}", proxy.port);
    let gw = Gateway::start(&[("BASE_URL", &base), ("SOCKS5_PROXY", &url), ("RETRY", "1")]);
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let connected = format!("connected to localhost:{}", mock.addr().port());
    assert!(
        wait_for(Duration::from_secs(2), || proxy.log().contains(&connected)),
        "microsocks: {}",
        proxy.log()
    );

    // socks5 (local DNS) with a wrong password: proxy_error, no direct connection.
    let before = mock.requests().len();
    let bad = format!("socks5://sockuser:nope@127.0.0.1:{}", proxy.port);
    let gw_bad = Gateway::start(&[("BASE_URL", &base), ("SOCKS5_PROXY", &bad), ("RETRY", "1")]);
    post(&gw_bad, "/v1/chat/completions", CHAT)
        .await
        .assert_error(502, Some("proxy_error"));
    assert_eq!(mock.requests().len(), before);
    assert!(
        !gw.log().contains("s0cks-pass") && !gw_bad.log().contains("nope@"),
        "proxy password in the log"
    );
}

#[actix_rt::test]
async fn no_proxy_hosts_go_direct() {
    let mock = MockServer::start().unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = Gateway::openai(
        &mock,
        &[
            ("HTTP_PROXY", &dead),
            ("NO_PROXY", "localhost,127.0.0.1"),
            ("RETRY", "1"),
        ],
    );
    assert_eq!(post(&gw, "/v1/chat/completions", CHAT).await.status, 200);
    let gw = Gateway::openai(&mock, &[("HTTP_PROXY", &dead), ("RETRY", "1")]);
    post(&gw, "/v1/chat/completions", CHAT)
        .await
        .assert_error(502, Some("proxy_error"));
}

/// Config-file instances choose their own proxy: one through tinyproxy (its password from
/// `os.environ/`), one `proxy: none` although the environment's `HTTP_PROXY` is dead.
#[actix_rt::test]
async fn config_file_instances_have_their_own_proxy() {
    let Some(proxy) = tinyproxy() else { return };
    let (via, direct) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let dead = format!("http://127.0.0.1:{}", free_port());
    let file = format!(
        "providers:\n  - name: via\n    base_url: {}\n    proxy: os.environ/VIA_PROXY\n  - name: direct\n    base_url: {}\n    proxy: none\nmodels:\n  - name: a\n    deployments: [{{provider: via, model: m}}]\n  - name: b\n    deployments: [{{provider: direct, model: m}}]\n",
        via.url(),
        direct.url()
    );
    let dir = std::env::temp_dir().join(format!("scira2api-proxyfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proxies.yaml");
    std::fs::write(&path, file).unwrap();
    let via_url = format!("http://proxyuser:s3cret-pass@127.0.0.1:{}", proxy.port);
    let gw = Gateway::start(&[
        ("CONFIG_FILE", &path.display().to_string()),
        ("VIA_PROXY", &via_url),
        ("HTTP_PROXY", &dead),
        ("RETRY", "1"),
    ]);
    for model in ["a", "b"] {
        let body =
            format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
        let r = post(&gw, "/v1/chat/completions", &body).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
    }
    assert!(proxy.log().contains(&format!("CONNECT {}", via.addr())));
    assert!(!proxy.log().contains(&format!("CONNECT {}", direct.addr())));
    assert_eq!((via.requests().len(), direct.requests().len()), (1, 1));
    // The default instance keeps the environment's (dead) proxy.
    post(&gw, "/v1/chat/completions", CHAT)
        .await
        .assert_error(502, Some("proxy_error"));
    assert!(
        !gw.log().contains("s3cret-pass"),
        "proxy password in the log"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
