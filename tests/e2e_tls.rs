//! End to end: an HTTPS upstream signed by a private CA, trusted through `UPSTREAM_CA_FILE`,
//! directly and through an HTTP CONNECT tunnel (TLS runs inside it).

mod common;

use common::proxies::{free_port, tinyproxy};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::PathBuf;

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

/// A private CA (PEM written to a file) and a mock serving HTTPS for `localhost` signed by it.
fn tls_mock() -> (MockServer, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "scira2api-tls-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (MockServer::start_tls(chain, key).unwrap(), ca_file)
}

#[actix_rt::test]
async fn https_upstream_with_a_private_ca() {
    let (mock, ca_file) = tls_mock();
    let base = format!("https://localhost:{}", mock.addr().port());
    let ca = ca_file.to_string_lossy().into_owned();
    let gw = Gateway::start(&[
        ("BASE_URL", &base),
        ("UPSTREAM_CA_FILE", &ca),
        ("RETRY", "1"),
    ]);
    assert_chat_and_stream_complete(&gw).await;
    assert_eq!(mock.requests().len(), 2);

    // Without the CA the certificate is not trusted: a clean 502, nothing sent.
    let gw = Gateway::start(&[("BASE_URL", &base), ("RETRY", "1")]);
    let e = post(&gw, "/v1/chat/completions", CHAT)
        .await
        .assert_error(502, Some("upstream_error"));
    assert!(e["message"].as_str().unwrap().contains("connect"), "{e}");
    assert_eq!(mock.requests().len(), 2);
}

#[test]
fn a_bad_ca_file_stops_startup() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scira2api-server"))
        .env_clear()
        .env("UPSTREAM_CA_FILE", "/nonexistent/ca.pem")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UPSTREAM_CA_FILE"));
}

#[actix_rt::test]
async fn https_through_an_http_connect_tunnel() {
    let Some(proxy) = tinyproxy() else { return };
    let (mock, ca_file) = tls_mock();
    let base = format!("https://localhost:{}", mock.addr().port());
    let ca = ca_file.to_string_lossy().into_owned();
    let url = format!("http://proxyuser:s3cret-pass@127.0.0.1:{}", proxy.port);
    let gw = Gateway::start(&[
        ("BASE_URL", &base),
        ("UPSTREAM_CA_FILE", &ca),
        ("HTTP_PROXY", &url),
        ("RETRY", "1"),
    ]);
    let r = post(&gw, "/v1/chat/completions", CHAT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let target = format!("CONNECT localhost:{}", mock.addr().port());
    assert!(
        proxy.log().contains(&target),
        "tinyproxy saw no `{target}`: {}",
        proxy.log()
    );
}
