//! The operator's status page (`GET /status`) and the data it reads: a gateway with two mock
//! upstreams, one failing into a cool-down, opened in a real headless Chromium (Debian's
//! package; .ci/run installs it) whose rendered DOM must show the resting deployment as
//! resting with a countdown, the healthy one as healthy, and charts with data; with
//! `ADMIN_KEY` the page asks for the key and shows nothing, and the metrics take that key only.
//! A screenshot is kept under `target/tmp/` as a CI artifact.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHAT: &str = r#"{"model":"g","messages":[{"role":"user","content":"hi"}]}"#;

/// Two providers for model group `g`: `bad` first (it fails, then rests a minute), `good` as
/// its fallback.
fn start(extra: &[(&str, &str)]) -> (Gateway, MockServer, MockServer) {
    let (bad, good) = (MockServer::start().unwrap(), MockServer::start().unwrap());
    let cfg = format!(
        "providers:\n  - {{name: bad, base_url: \"{}\", api_keys: [sk-upstream-secret-1]}}\n  - {{name: good, base_url: \"{}\", api_keys: [sk-upstream-secret-2]}}\nmodels:\n  - name: g\n    deployments:\n      - {{provider: bad, model: m}}\n      - {{provider: good, model: m, order: 1}}\nrouter: {{allowed_fails: 0, cooldown_time: 90s}}\n",
        bad.url(),
        good.url()
    );
    let dir = std::env::temp_dir().join(format!("scira2api-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One file per test: named by the mock's port.
    let port = bad.url().rsplit(':').next().unwrap_or("0").to_owned();
    let path = dir.join(format!("status-{port}.yaml"));
    std::fs::write(&path, cfg).unwrap();
    let path = path.display().to_string();
    let mut env = vec![
        ("CONFIG_FILE", path.as_str()),
        ("RETRY_BASE_DELAY", "5ms"),
        ("STATUS_SAMPLE_INTERVAL", "300ms"),
    ];
    env.extend_from_slice(extra);
    let gw = Gateway::start(&env);
    (gw, bad, good)
}

/// Makes `bad` fail once (so it rests) and sends some traffic through `good`.
async fn traffic(gw: &Gateway, bad: &MockServer, key: Option<&str>) {
    bad.push_fault(Fault::Status {
        status: 500,
        headers: vec![],
        body: Bytes::from_static(
            br#"{"error":{"message":"mock 500","type":"server_error","param":null,"code":null}}"#,
        ),
    });
    for _ in 0..6 {
        let mut req = client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .insert_header(("content-type", "application/json"));
        if let Some(k) = key {
            req = req.insert_header(("authorization", format!("Bearer {k}")));
        }
        let r = send(req, Some(CHAT)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-gateway-provider").as_deref(), Some("good"));
    }
}

async fn metrics(gw: &Gateway, key: Option<&str>) -> Reply {
    let mut req = client().get(format!("{}/metrics?history=1", gw.url));
    if let Some(k) = key {
        req = req.insert_header(("authorization", format!("Bearer {k}")));
    }
    send(req, None).await
}

/// Runs headless Chromium on `url` and returns the DOM after the page's scripts ran (and
/// writes a screenshot to `shot` when given). `None` when Chromium is not installed (outside
/// CI only).
fn chromium(url: &str, shot: Option<&PathBuf>) -> Option<String> {
    let bin = common::proxies::tool("chromium")?;
    let profile = std::env::temp_dir().join(format!(
        "scira2api-chromium-{}-{}",
        std::process::id(),
        shot.is_some()
    ));
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--no-first-run".to_owned(),
        "--hide-scrollbars".to_owned(),
        format!("--user-data-dir={}", profile.display()),
        // Lets the page's fetch and timers run before the DOM is read.
        "--virtual-time-budget=4000".to_owned(),
    ];
    match shot {
        Some(p) => {
            args.push("--window-size=1280,1700".to_owned());
            args.push(format!("--screenshot={}", p.display()));
        }
        None => args.push("--dump-dom".to_owned()),
    }
    args.push(url.to_owned());
    let mut child = Command::new(bin)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&profile);
    Some(reader.join().unwrap())
}

/// The element whose start tag contains `attr` (a whole `name="value"`), as its start tag and
/// everything up to its closing `</tag>`.
fn element<'a>(dom: &'a str, tag: &str, attr: &str) -> Option<(&'a str, &'a str)> {
    let mut from = 0;
    while let Some(i) = dom[from..].find(&format!("<{tag} ")) {
        let start = from + i;
        let end = start + dom[start..].find('>')?;
        let head = &dom[start..=end];
        if head.contains(attr) {
            let close = format!("</{tag}>");
            let body_end = end + dom[end..].find(&close)?;
            return Some((head, &dom[end + 1..body_end]));
        }
        from = end;
    }
    None
}

/// The text of some HTML (tags removed).
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn attr_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!("{name}=\"");
    let i = head.find(&pat)? + pat.len();
    Some(&head[i..i + head[i..].find('"')?])
}

#[actix_rt::test]
async fn the_page_shows_a_resting_deployment_with_its_countdown_and_charts_with_data() {
    let (gw, bad, _good) = start(&[]);
    traffic(&gw, &bad, None).await;
    // A few samples of the ring (one per 300 ms) cover the traffic.
    let ok = wait_metrics(&gw, |m| {
        m["history"]["samples"]
            .as_array()
            .is_some_and(|s| s.len() >= 3 && s.iter().any(|x| x["rps"].as_f64() > Some(0.0)))
    })
    .await;
    assert!(ok.is_some(), "the history never showed the traffic");
    let m = metrics(&gw, None).await;
    assert_eq!(m.status, 200);
    let m = m.json();
    let deps = m["deployments"].as_array().unwrap();
    let state_of = |p: &str| deps.iter().find(|d| d["provider"] == p).unwrap().clone();
    assert_eq!(state_of("bad")["state"], "resting");
    assert!(state_of("bad")["resting_for_s"].as_f64().unwrap() > 60.0);
    assert_eq!(state_of("good")["state"], "healthy");
    let providers = m["providers"].as_array().unwrap();
    let good = providers.iter().find(|p| p["name"] == "good").unwrap();
    assert_eq!(good["requests"], 6, "{good}");
    assert_eq!(
        providers.iter().find(|p| p["name"] == "bad").unwrap()["state"],
        "resting"
    );
    assert_eq!(m["history"]["interval_s"], 0.3);
    let all = m.to_string();
    assert!(
        !all.contains("sk-upstream-secret"),
        "no upstream key in the metrics"
    );

    let Some(dom) = chromium(&format!("{}/status", gw.url), None) else {
        return;
    };
    let (head, row) = element(&dom, "tr", r#"data-deployment="g|bad|m""#)
        .unwrap_or_else(|| panic!("no row for the resting deployment in:\n{dom}"));
    assert_eq!(attr_value(head, "data-state"), Some("resting"), "{head}");
    let row = text(row);
    let left: u32 = row
        .split("resting, ")
        .nth(1)
        .and_then(|r| r.split(" s left").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no countdown in the resting row: {row}"));
    assert!((30..=90).contains(&left), "{left} s left: {row}");
    let (head, row) = element(&dom, "tr", r#"data-deployment="g|good|m""#).unwrap();
    assert_eq!(attr_value(head, "data-state"), Some("healthy"));
    assert!(text(row).contains("healthy"), "{row}");
    let (head, _) = element(&dom, "tr", r#"data-provider="bad""#).unwrap();
    assert_eq!(attr_value(head, "data-state"), Some("resting"));
    for chart in ["rps", "errors", "latency", "cpu", "rss"] {
        let (head, _) = element(&dom, "svg", &format!(r#"data-chart="{chart}""#))
            .unwrap_or_else(|| panic!("no {chart} chart"));
        let points: usize = attr_value(head, "data-points").unwrap().parse().unwrap();
        // Latency has a point only for the intervals that had requests (the traffic above).
        let least = if chart == "latency" { 1 } else { 3 };
        assert!(points >= least, "the {chart} chart drew {points} points");
    }
    assert!(!dom.contains("sk-upstream-secret"));
    let login = element(&dom, "form", r#"id="login""#).unwrap().0;
    assert!(login.contains("hidden"), "no key needed here: {login}");

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&format!("{}/status", gw.url), Some(&shot));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}

#[actix_rt::test]
async fn with_an_admin_key_the_page_asks_for_it_and_the_metrics_take_only_it() {
    let (gw, bad, _good) = start(&[("APIKEY", "sk-client"), ("ADMIN_KEY", "adm-secret-9")]);
    traffic(&gw, &bad, Some("sk-client")).await;
    // The metrics: the admin key only (not a client key, not nothing), on every metrics path.
    for path in ["/metrics", "/metrics?history=1", "/metrics/prometheus"] {
        for key in [None, Some("sk-client"), Some("wrong")] {
            let mut req = client().get(format!("{}{path}", gw.url));
            if let Some(k) = key {
                req = req.insert_header(("authorization", format!("Bearer {k}")));
            }
            let r = send(req, None).await;
            let e = r.assert_error(401, Some("invalid_api_key"));
            assert!(e["message"].as_str().unwrap().contains("admin key"), "{e}");
        }
        let r = send(
            client()
                .get(format!("{}{path}", gw.url))
                .insert_header(("authorization", "Bearer adm-secret-9")),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(!r.text().contains("adm-secret-9") && !r.text().contains("sk-client"));
    }
    // The admin key is not a client key.
    let r = send(
        client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .insert_header(("authorization", "Bearer adm-secret-9"))
            .insert_header(("content-type", "application/json")),
        Some(CHAT),
    )
    .await;
    r.assert_error(401, Some("invalid_api_key"));
    // The page itself needs no key and carries no data.
    let page = get(&gw, "/status").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options").as_deref(), Some("DENY"));
    let html = page.text();
    // Nothing from elsewhere: the only absolute URL is SVG's namespace name.
    let html_without_ns = html.replace("http://www.w3.org/2000/svg", "");
    assert!(
        !html_without_ns.contains("http://") && !html_without_ns.contains("https://"),
        "nothing from elsewhere"
    );
    assert_eq!(get(&gw, "/health").await.status, 200, "health stays public");

    let Some(dom) = chromium(&format!("{}/status", gw.url), None) else {
        return;
    };
    let (login, form) = element(&dom, "form", r#"id="login""#).expect("a login form");
    assert!(!login.contains("hidden"), "the form is shown: {login}");
    assert!(form.contains(r#"id="admin-key""#) && form.contains(r#"type="password""#));
    assert!(
        !dom.contains("data-deployment=\"g|"),
        "no deployment before the key"
    );
    assert!(
        !dom.contains("data-provider=\"good\""),
        "no provider before the key"
    );
    let (dash, body) = element(&dom, "div", r#"id="dashboard""#)
        .or_else(|| element(&dom, "section", r#"id="dashboard""#))
        .or_else(|| element(&dom, "main", r#"id="dashboard""#))
        .expect("a dashboard element");
    assert!(dash.contains("hidden"), "the dashboard is hidden: {dash}");
    assert!(
        !text(body).contains("good"),
        "no data in the dashboard: {}",
        text(body)
    );
}

#[actix_rt::test]
async fn the_history_ring_keeps_a_fixed_number_of_samples() {
    let mock = MockServer::start().unwrap();
    let gw = Gateway::openai(
        &mock,
        &[
            ("STATUS_SAMPLE_INTERVAL", "200ms"),
            ("STATUS_HISTORY", "1s"),
        ],
    );
    let ok = wait_metrics(&gw, |m| {
        m["history"]["samples"]
            .as_array()
            .is_some_and(|s| s.len() == 5)
    })
    .await;
    assert!(ok.is_some(), "the ring filled up");
    actix_rt::time::sleep(Duration::from_millis(1200)).await;
    let m = metrics(&gw, None).await.json();
    assert_eq!(m["history"]["capacity"], 5);
    let samples = m["history"]["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 5, "never more than the capacity");
    let t: Vec<f64> = samples.iter().map(|s| s["t"].as_f64().unwrap()).collect();
    assert!(t.windows(2).all(|w| w[0] < w[1]), "oldest first: {t:?}");
    assert!(
        samples
            .iter()
            .all(|s| s["rss_bytes"].as_u64() > Some(1_000_000))
    );
    // Without a config file the one instance carries the gateway's own counters.
    let p = &m["providers"][0];
    assert_eq!(p["state"], "healthy", "{p}");
    assert_eq!(p["deployments"], 0);
    // Without ADMIN_KEY or APIKEY the metrics are open, as before.
    assert_eq!(get(&gw, "/metrics").await.status, 200);
}

/// Polls `/metrics?history=1` until `cond` holds (the metrics then), or 10 s pass (`None`).
async fn wait_metrics(gw: &Gateway, cond: impl Fn(&Value) -> bool) -> Option<Value> {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let m = metrics(gw, None).await.json();
        if cond(&m) {
            return Some(m);
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
