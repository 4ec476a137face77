//! The lean client against scripted upstreams on 127.0.0.1: framing, reuse, and every way an
//! answer can go wrong.

use super::*;
use crate::errors::retryable_send_error;
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

fn settings() -> H1Settings {
    H1Settings {
        keep_alive: true,
        max_conns: 4,
        idle_timeout: Duration::from_secs(90),
        lifetime: Duration::from_secs(300),
        connect_timeout: Duration::from_secs(1),
    }
}

/// An upstream that hands each accepted connection to `script` (with its index).
async fn upstream<F, Fut>(script: F) -> (H1Client, Arc<ConnStats>)
where
    F: Fn(usize, tokio::net::TcpStream) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_rt::spawn(async move {
        let mut n = 0;
        while let Ok((s, _)) = listener.accept().await {
            actix_rt::spawn(script(n, s));
            n += 1;
        }
    });
    let stats = Arc::new(ConnStats::default());
    let uri: Uri = format!("http://{addr}/v1").parse().unwrap();
    let client = H1Client::for_uri(&uri, settings(), stats.clone()).unwrap();
    (client, stats)
}

/// Reads one request (head and `Content-Length` body) from `s`; `None` at end of stream.
async fn read_request(s: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    Some(head + std::str::from_utf8(&body).unwrap())
}

async fn write(s: &mut tokio::net::TcpStream, bytes: &[u8]) {
    s.write_all(bytes).await.unwrap();
    s.flush().await.unwrap();
}

async fn post(client: &H1Client, body: &'static str) -> Result<H1Response, SendRequestError> {
    let uri: Uri = format!("http://{}/v1/chat/completions", client.pool.authority)
        .parse()
        .unwrap();
    let headers = [
        (
            awc::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (
            awc::http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer k"),
        ),
    ];
    let body = Bytes::from_static(body.as_bytes());
    client
        .send(&Method::POST, &uri, &headers, &body, Duration::from_secs(2))
        .await
}

async fn text(resp: H1Response) -> Result<String, PayloadError> {
    let body = resp.body.collect(1 << 20).await?;
    Ok(String::from_utf8(body.to_vec()).unwrap())
}

const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

#[actix_rt::test]
async fn writes_one_request_and_reuses_the_connection() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    let (client, stats) = upstream(move |_, mut s| {
        let log = log.clone();
        async move {
            while let Some(req) = read_request(&mut s).await {
                log.borrow_mut().push(req);
                write(&mut s, OK).await;
            }
        }
    })
    .await;
    for _ in 0..3 {
        let resp = post(&client, r#"{"model":"m"}"#).await.unwrap();
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(
            resp.headers().get("content-type").unwrap(),
            "application/json"
        );
        assert_eq!(text(resp).await.unwrap(), "{}");
    }
    assert_eq!(
        stats.opened.load(Ordering::Relaxed),
        1,
        "one connection for three requests"
    );
    let seen = seen.borrow();
    assert_eq!(seen.len(), 3);
    let port = client.pool.port;
    // The request line and `Host` first, the framing last; the headers in the order set between.
    let req = &seen[0];
    let start = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n");
    assert!(req.starts_with(&start), "{req}");
    assert!(
        req.ends_with("\r\ncontent-length: 13\r\n\r\n{\"model\":\"m\"}"),
        "{req}"
    );
    let lines: Vec<&str> = req.split("\r\n").collect();
    assert_eq!(lines.len(), 7, "{req}");
    assert!(lines.contains(&"content-type: application/json"));
    assert!(lines.contains(&"authorization: Bearer k"));
}

#[actix_rt::test]
async fn decodes_chunked_bodies_sent_in_pieces_and_reuses_after_them() {
    let (client, stats) = upstream(|_, mut s| async move {
        while read_request(&mut s).await.is_some() {
            write(
                &mut s,
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhel",
            )
            .await;
            actix_rt::time::sleep(Duration::from_millis(20)).await;
            write(&mut s, b"lo\r\n").await;
            write(&mut s, b"6\r\n world\r\n0\r\nx-trailer: t\r\n").await;
            actix_rt::time::sleep(Duration::from_millis(20)).await;
            write(&mut s, b"\r\n").await;
        }
    })
    .await;
    for _ in 0..2 {
        let resp = post(&client, "{}").await.unwrap();
        assert!(resp.headers().get("content-length").is_none());
        assert_eq!(text(resp).await.unwrap(), "hello world");
    }
    assert_eq!(stats.opened.load(Ordering::Relaxed), 1);
}

#[actix_rt::test]
async fn streams_chunks_as_they_come() {
    let (client, _) = upstream(|_, mut s| async move {
        read_request(&mut s).await;
        write(
            &mut s,
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\ndata:1\r\n",
        )
        .await;
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        write(&mut s, b"6\r\ndata:2\r\n0\r\n\r\n").await;
    })
    .await;
    let mut body = post(&client, "{}").await.unwrap().body;
    assert_eq!(body.next().await.unwrap().unwrap(), "data:1");
    assert_eq!(body.next().await.unwrap().unwrap(), "data:2");
    assert!(body.next().await.is_none());
}

#[actix_rt::test]
async fn a_body_that_runs_to_the_close_is_read_whole_and_its_connection_not_reused() {
    let (client, stats) = upstream(|_, mut s| async move {
        read_request(&mut s).await;
        write(&mut s, b"HTTP/1.1 200 OK\r\n\r\nuntil ").await;
        write(&mut s, b"the end").await;
    })
    .await;
    assert_eq!(
        text(post(&client, "{}").await.unwrap()).await.unwrap(),
        "until the end"
    );
    assert_eq!(
        text(post(&client, "{}").await.unwrap()).await.unwrap(),
        "until the end"
    );
    assert_eq!(stats.opened.load(Ordering::Relaxed), 2);
}

#[actix_rt::test]
async fn connection_close_and_http_1_0_are_not_reused() {
    let (client, stats) = upstream(|n, mut s| async move {
        while read_request(&mut s).await.is_some() {
            if n == 0 {
                write(
                    &mut s,
                    b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}",
                )
                .await;
            } else {
                write(&mut s, b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
            }
        }
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            text(post(&client, "{}").await.unwrap()).await.unwrap(),
            "{}"
        );
    }
    assert_eq!(stats.opened.load(Ordering::Relaxed), 3);
}

#[actix_rt::test]
async fn skips_interim_answers() {
    let (client, _) = upstream(|_, mut s| async move {
        read_request(&mut s).await;
        write(
            &mut s,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        )
        .await;
    })
    .await;
    let resp = post(&client, "{}").await.unwrap();
    assert_eq!(resp.status.as_u16(), 201);
    assert_eq!(resp.headers().len(), 1, "the final answer's headers only");
    assert_eq!(resp.headers().get("content-length").unwrap(), "2");
    assert_eq!(text(resp).await.unwrap(), "ok");
}

#[actix_rt::test]
async fn an_idle_connection_the_upstream_closed_is_replaced_before_use() {
    let (client, stats) = upstream(|_, mut s| async move {
        read_request(&mut s).await;
        write(&mut s, OK).await;
        // Closes the kept-alive connection, as an upstream's idle timeout does.
    })
    .await;
    assert_eq!(
        text(post(&client, "{}").await.unwrap()).await.unwrap(),
        "{}"
    );
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        text(post(&client, "{}").await.unwrap()).await.unwrap(),
        "{}"
    );
    assert_eq!(stats.opened.load(Ordering::Relaxed), 2);
    assert!(stats.open.load(Ordering::Relaxed) <= 1);
}

#[actix_rt::test]
async fn a_close_without_an_answer_is_a_retryable_send_failure() {
    let (client, _) = upstream(|_, mut s| async move {
        read_request(&mut s).await;
    })
    .await;
    let err = post(&client, "{}").await.err().unwrap();
    assert!(matches!(err, SendRequestError::Send(_)), "{err:?}");
    assert!(retryable_send_error(&err));
}

#[actix_rt::test]
async fn no_answer_head_in_time_is_a_timeout() {
    let (client, _) = upstream(|_, mut s| async move {
        read_request(&mut s).await;
        actix_rt::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let uri: Uri = format!("http://{}/x", client.pool.authority)
        .parse()
        .unwrap();
    let started = Instant::now();
    let err = client
        .send(
            &Method::GET,
            &uri,
            &[],
            &Bytes::new(),
            Duration::from_millis(200),
        )
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SendRequestError::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// `GET /x` on `client` with its own `timeout`.
async fn get_within(client: &H1Client, timeout: Duration) -> Result<H1Response, SendRequestError> {
    let uri: Uri = format!("http://{}/x", client.pool.authority)
        .parse()
        .unwrap();
    client
        .send(&Method::GET, &uri, &[], &Bytes::new(), timeout)
        .await
}

/// `GET /x` with `timeout` fails with a timeout, and soon.
async fn assert_times_out(client: &H1Client, timeout: Duration) {
    let started = Instant::now();
    let err = get_within(client, timeout).await.err().unwrap();
    assert!(matches!(err, SendRequestError::Timeout), "{err:?}");
    assert!(started.elapsed() < timeout + Duration::from_secs(2));
}

#[actix_rt::test]
async fn a_reused_connection_keeps_each_requests_own_deadline() {
    // One connection: answers at once, then after 400 ms, then never.
    let (client, stats) = upstream(|_, mut s| async move {
        read_request(&mut s).await;
        write(&mut s, OK).await;
        read_request(&mut s).await;
        actix_rt::time::sleep(Duration::from_millis(400)).await;
        write(&mut s, OK).await;
        read_request(&mut s).await;
        actix_rt::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let resp = get_within(&client, Duration::from_millis(200))
        .await
        .unwrap();
    text(resp).await.unwrap();
    // The connection's timer, last set 200 ms out, is moved to this request's deadline: the
    // first request's deadline passes while this one waits, and does not cut it.
    let resp = get_within(&client, Duration::from_secs(5)).await.unwrap();
    text(resp).await.unwrap();
    // A shorter deadline than the one the timer holds is kept too.
    assert_times_out(&client, Duration::from_millis(200)).await;
    assert_eq!(stats.opened.load(Ordering::Relaxed), 1, "one connection");
}

#[actix_rt::test]
async fn a_refused_connection_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let uri: Uri = format!("http://{addr}").parse().unwrap();
    let client = H1Client::for_uri(&uri, settings(), Arc::default()).unwrap();
    let err = post(&client, "{}").await.err().unwrap();
    assert!(
        matches!(err, SendRequestError::Connect(ConnectError::Io(_))),
        "{err:?}"
    );
}

/// One answer per case, each on a fresh connection: what goes wrong, and how it is reported.
#[actix_rt::test]
async fn garbled_or_cut_off_answers_are_errors() {
    const CASES: &[&[u8]] = &[
        // 0: cut off inside the body
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{\"a\"",
        // 1: a chunk without its CRLF
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n",
        // 2: a chunk size that is not hex
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        // 3: two different lengths
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
        // 4: not HTTP
        b"SSH-2.0-OpenSSH\r\n\r\n",
        // 5: cut off inside the head
        b"HTTP/1.1 200 OK\r\ncontent-le",
    ];
    let (client, _) = upstream(|n, mut s| async move {
        read_request(&mut s).await;
        write(&mut s, CASES[n]).await;
    })
    .await;
    for n in 0..3 {
        let resp = post(&client, "{}").await.unwrap();
        let err = text(resp)
            .await
            .err()
            .unwrap_or_else(|| panic!("case {n} read"));
        match n {
            0 => assert!(matches!(err, PayloadError::Incomplete(_)), "{err:?}"),
            _ => assert!(
                matches!(err, PayloadError::EncodingCorrupted),
                "{n}: {err:?}"
            ),
        }
    }
    for n in 3..6 {
        let err = post(&client, "{}").await.err().unwrap();
        assert!(matches!(err, SendRequestError::Response(_)), "{n}: {err:?}");
        assert!(retryable_send_error(&err));
    }
}

#[actix_rt::test]
async fn bodies_and_heads_are_bounded() {
    let (client, _) = upstream(|n, mut s| async move {
        read_request(&mut s).await;
        match n {
            0 => {
                write(
                    &mut s,
                    b"HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n",
                )
                .await
            }
            1 => {
                write(
                    &mut s,
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                )
                .await;
                for _ in 0..40 {
                    write(&mut s, b"800\r\n").await;
                    write(&mut s, &[b'x'; 0x800]).await;
                    write(&mut s, b"\r\n").await;
                }
            }
            _ => {
                write(&mut s, b"HTTP/1.1 200 OK\r\n").await;
                for i in 0..2000 {
                    write(&mut s, format!("x-h{i}: {}\r\n", "v".repeat(60)).as_bytes()).await;
                }
            }
        }
    })
    .await;
    for _ in 0..2 {
        let resp = post(&client, "{}").await.unwrap();
        let err = resp.body.collect(64 * 1024).await.err().unwrap();
        assert!(matches!(err, PayloadError::Overflow), "{err:?}");
    }
    let err = post(&client, "{}").await.err().unwrap();
    assert!(
        matches!(err, SendRequestError::Response(ParseError::TooLarge)),
        "{err:?}"
    );
}

#[actix_rt::test]
async fn a_body_dropped_unread_closes_its_connection() {
    let (client, stats) = upstream(|_, mut s| async move {
        while read_request(&mut s).await.is_some() {
            write(&mut s, b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab").await;
        }
    })
    .await;
    for _ in 0..2 {
        let mut body = post(&client, "{}").await.unwrap().body;
        assert_eq!(body.next().await.unwrap().unwrap(), "ab");
    }
    assert_eq!(stats.opened.load(Ordering::Relaxed), 2);
    assert_eq!(stats.open.load(Ordering::Relaxed), 0);
}

#[actix_rt::test]
async fn without_keep_alive_it_asks_for_close() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_rt::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            if let Some(req) = read_request(&mut s).await {
                log.borrow_mut().push(req);
                write(&mut s, OK).await;
            }
        }
    });
    let uri: Uri = format!("http://{addr}").parse().unwrap();
    let s = H1Settings {
        keep_alive: false,
        ..settings()
    };
    let client = H1Client::for_uri(&uri, s, Arc::default()).unwrap();
    let get: Uri = format!("http://{addr}/v1/models").parse().unwrap();
    let resp = client
        .send(
            &Method::GET,
            &get,
            &[],
            &Bytes::new(),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(text(resp).await.unwrap(), "{}");
    assert_eq!(
        seen.borrow()[0],
        format!("GET /v1/models HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n")
    );
}

#[test]
fn serves_only_its_own_plain_http_authority() {
    let uri: Uri = "http://127.0.0.1:8000/v1".parse().unwrap();
    let c = H1Client::for_uri(&uri, settings(), Arc::default()).unwrap();
    assert!(c.serves(&"http://127.0.0.1:8000/v1/chat/completions".parse().unwrap()));
    assert!(!c.serves(&"http://127.0.0.1:8001/v1/chat/completions".parse().unwrap()));
    assert!(!c.serves(&"https://127.0.0.1:8000/v1".parse().unwrap()));
    assert!(
        H1Client::for_uri(
            &"https://api.openai.com".parse().unwrap(),
            settings(),
            Arc::default()
        )
        .is_none()
    );
    let plain = H1Client::for_uri(
        &"http://backend".parse().unwrap(),
        settings(),
        Arc::default(),
    )
    .unwrap();
    assert_eq!(plain.pool.port, 80);
    assert_eq!(&plain.pool.host_header[..], b"backend");
}

proptest::proptest! {
    /// A chunked body cut anywhere into reads decodes to what was sent.
    #[test]
    fn chunked_decoding_survives_any_split(
        chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..300), 0..8),
        cuts in proptest::collection::vec(1usize..64, 1..40),
    ) {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for c in &chunks {
            wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
            want.extend_from_slice(c);
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let mut framing = Framing::Chunked(Chunked::Size);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut rest = &wire[..];
        let mut ended = false;
        let mut i = 0;
        while !ended {
            match framing.step(&mut buf).unwrap() {
                Step::Data(b) => got.extend_from_slice(&b),
                Step::End => ended = true,
                Step::More => {
                    proptest::prop_assert!(!rest.is_empty(), "wants more after the end");
                    let n = cuts[i % cuts.len()].min(rest.len());
                    i += 1;
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
        proptest::prop_assert_eq!(got, want);
        proptest::prop_assert!(rest.is_empty() && buf.is_empty());
    }
}

#[actix_rt::test]
async fn a_body_that_came_with_its_head_is_taken_at_once() {
    let (client, stats) = upstream(|_, mut s| async move {
        while read_request(&mut s).await.is_some() {
            write(&mut s, OK).await;
        }
    })
    .await;
    for _ in 0..2 {
        let mut resp = post(&client, "{}").await.unwrap();
        assert_eq!(resp.body.already_read(1024).unwrap().unwrap(), "{}");
        assert!(resp.body.next().await.is_none());
    }
    assert_eq!(
        stats.opened.load(Ordering::Relaxed),
        1,
        "released for reuse"
    );
    let mut resp = post(&client, "{}").await.unwrap();
    let err = resp.body.already_read(1).unwrap().err().unwrap();
    assert!(matches!(err, PayloadError::Overflow), "{err:?}");
}

#[actix_rt::test]
async fn at_the_limit_a_request_waits_for_a_free_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_rt::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            actix_rt::spawn(async move {
                while read_request(&mut s).await.is_some() {
                    write(&mut s, OK).await;
                }
            });
        }
    });
    let uri: Uri = format!("http://{addr}").parse().unwrap();
    let one = H1Settings {
        max_conns: 1,
        ..settings()
    };
    let stats = Arc::new(ConnStats::default());
    let client = Rc::new(H1Client::for_uri(&uri, one, stats.clone()).unwrap());
    let held = post(&client, "{}").await.unwrap();
    let second = actix_rt::spawn({
        let client = client.clone();
        async move { text(post(&client, "{}").await.unwrap()).await.unwrap() }
    });
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !second.is_finished(),
        "waits while the only connection is in use"
    );
    assert_eq!(text(held).await.unwrap(), "{}");
    assert_eq!(second.await.unwrap(), "{}");
    assert_eq!(stats.opened.load(Ordering::Relaxed), 1);
    // The wait for a slot counts against the request's deadline.
    let held = post(&client, "{}").await.unwrap();
    assert_times_out(&client, Duration::from_millis(200)).await;
    assert_eq!(text(held).await.unwrap(), "{}");
}
