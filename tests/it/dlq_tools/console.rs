//! `fanout-bridge console`: the JSON API and its security against the built
//! binary and the real broker, and the page itself in a real Chromium.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use lapin::{
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties,
};
use reqwest::{header, Client, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

// === fixtures ===

/// A console process on a free loopback port (or `listen`).
struct Console {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Console {
    async fn start(broker: &Broker, token: Option<&str>) -> Console {
        let port = free_port();
        let log = std::env::temp_dir().join(format!(
            "fanout-bridge-console-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let mut cmd = Command::new(bin());
        cmd.args(["console", "--listen", &format!("127.0.0.1:{port}")])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(broker.vars())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(t) = token {
            cmd.env("BRIDGE_CONSOLE_TOKEN", t);
        }
        let console = Console {
            child: cmd.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let url = format!("{}/app.css", console.base);
        wait_until("the console answers", Duration::from_secs(20), || async {
            reqwest::get(&url).await.is_ok()
        })
        .await;
        console
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = client().get(self.url(path)).send().await.unwrap();
        status_json(r).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = client()
            .post(self.url(path))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        status_json(r).await
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn status_json(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

const LOGGING_503: &str = "api_failed · logging: HTTP 503";
const USERS_400: &str = "api_failed · user-management: HTTP 400";

/// m-0..m-4: logging 503 (m-2's body holds markup); u-0, u-1: user-management
/// 400; bad-0: not JSON.
async fn dlq(broker: &Broker) {
    broker.declare().await;
    for i in 0..5 {
        let body = if i == 2 {
            r#"{"x":"<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"}"#
                .to_owned()
        } else {
            format!("{{\"customer\":\"c-{i}\"}}")
        };
        let at = format!("2026-12-0{}T10:00:00Z", 1 + i % 3);
        let f = api_failed_fields("logging", "logging: HTTP 503 after 3 attempts", &at);
        put_dead_letter(broker, &format!("m-{i}"), &body, &f, 0).await;
    }
    for i in 0..2 {
        let f = api_failed_fields(
            "user-management",
            "user-management: HTTP 400 after 1 attempt",
            "2026-12-02T12:00:00Z",
        );
        put_dead_letter(broker, &format!("u-{i}"), "{\"customer\":\"bad\"}", &f, 0).await;
    }
    let f = [
        ("x-bridge-reason", "invalid_payload"),
        ("x-bridge-failed-targets", ""),
        ("x-bridge-done-targets", ""),
        (
            "x-bridge-error",
            "body is not valid JSON: EOF while parsing an object at line 1 column 5",
        ),
        ("x-bridge-dead-lettered-at", "2026-12-03T10:00:00Z"),
    ];
    put_dead_letter(broker, "bad-0", "{\"a\":", &f, 0).await;
}

fn group<'a>(g: &'a Value, label: &str) -> &'a Value {
    g["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["label"] == label)
        .unwrap_or_else(|| panic!("no group {label}: {g}"))
}

fn ids(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_owned())
        .collect()
}

fn dlq_ids(deliveries: &[lapin::message::Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d.properties.message_id().as_ref().unwrap().to_string())
        .collect()
}

// === the API ===

#[tokio::test]
async fn groups_messages_and_one_message_as_json() {
    let broker = Broker::new("console-read").await;
    dlq(&broker).await;
    let console = Console::start(&broker, None).await;

    let (status, g) = console.get("/api/groups").await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["dlq"], broker.dlq.as_str());
    assert_eq!(g["depth"], 8);
    assert_eq!(g["groups"].as_array().unwrap().len(), 3, "{g}");
    let logging = group(&g, LOGGING_503);
    assert_eq!(logging["count"], 5);
    assert_eq!(logging["reason"], "api_failed");
    assert_eq!(logging["targets"], json!(["logging"]));
    assert_eq!(logging["first"], "2026-12-01T10:00:00Z");
    assert_eq!(logging["last"], "2026-12-03T10:00:00Z");
    assert_eq!(logging["replayed"], 0);
    assert!(logging["id"].as_str().unwrap().len() == 8);
    assert!(g["read_at"].is_string());
    // The same JSON as `dlq groups` (the read kept; no second pass needed).
    let (code, stdout, stderr) =
        run_bin(&["dlq", "groups", "--format", "json"], &broker.vars(), b"").await;
    assert_eq!(code, 0, "{stderr}");
    let cli: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(cli["groups"], g["groups"]);
    let id = logging["id"].as_str().unwrap().to_owned();

    // Paging: a page and the total, in DLQ order.
    let (status, page) = console
        .get(&format!("/api/messages?group={id}&limit=2"))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 5);
    assert_eq!(page["offset"], 0);
    assert_eq!(ids(&page), ["m-0", "m-1"]);
    let (_, page) = console
        .get(&format!("/api/messages?group={id}&offset=4&limit=2"))
        .await;
    assert_eq!(
        (page["total"].clone(), ids(&page)),
        (json!(5), vec!["m-4".to_owned()])
    );
    // Each message is an export record.
    let m = &page["messages"][0];
    assert_eq!(m["reason"], "api_failed");
    assert_eq!(m["group"], id.as_str());
    assert_eq!(m["body"], "{\"customer\":\"c-4\"}");
    assert_eq!(m["headers"]["tenant"], "acme");
    assert_eq!(m["properties"]["message_id"], "m-4");
    // Filters as the CLI's.
    let (_, page) = console.get("/api/messages").await;
    assert_eq!(page["total"], 8);
    let (_, page) = console.get("/api/messages?reason=invalid_payload").await;
    assert_eq!(ids(&page), ["bad-0"]);
    let (_, page) = console.get("/api/messages?target=user-management").await;
    assert_eq!(ids(&page), ["u-0", "u-1"]);
    let (_, page) = console.get("/api/messages?id=m-3&id=u-1").await;
    assert_eq!(ids(&page), ["m-3", "u-1"]);
    let (_, page) = console
        .get("/api/messages?since=2026-12-02T11:00:00Z&until=2026-12-02T13:00:00Z")
        .await;
    assert_eq!(ids(&page), ["u-0", "u-1"]);
    let (_, page) = console.get("/api/messages?grep=c-3").await;
    assert_eq!(ids(&page), ["m-3"]);
    let (status, e) = console.get("/api/messages?grup=x").await;
    assert_eq!(status, 400, "{e}");
    let (status, e) = console.get("/api/messages?since=tomorrow").await;
    assert_eq!(status, 400, "{e}");

    // One message, whole.
    let (status, m) = console.get("/api/messages/m-2").await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["message_id"], "m-2");
    assert!(m["body"].as_str().unwrap().contains("<script>"));
    assert_eq!(
        m["headers"]["x-bridge-error"],
        "logging: HTTP 503 after 3 attempts"
    );
    let (status, _) = console.get("/api/messages/nope").await;
    assert_eq!(status, 404);

    // Depth: no pass, no lock.
    let (status, d) = console.get("/api/depth").await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["depth"], 8);
    assert!(d["history"].is_array());

    // Reading left every message, in order.
    assert_eq!(
        dlq_ids(&broker.drain(&broker.dlq).await),
        ["m-0", "m-1", "m-2", "m-3", "m-4", "u-0", "u-1", "bad-0"]
    );
}

#[tokio::test]
async fn replay_a_group_purge_with_and_without_all_and_export() {
    let broker = Broker::new("console-act").await;
    dlq(&broker).await;
    let console = Console::start(&broker, None).await;
    let (_, g) = console.get("/api/groups").await;
    let users = group(&g, USERS_400)["id"].as_str().unwrap().to_owned();

    // Replay a group: its messages go to the inbound queue, the others stay.
    let (status, r) = console
        .post("/api/replay", json!({"group": users, "rate": 50}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["matched"].clone(), r["moved"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(broker.depth(&broker.queue).await, 2);
    let (_, g) = console.get("/api/groups").await;
    assert_eq!(g["stale"], true, "{g}");

    // Export: a download of export lines.
    let r = client()
        .get(console.url("/api/export?reason=api_failed&id=m-1&id=m-3"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let disposition = r.headers()[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    assert!(disposition.contains(".jsonl"), "{disposition}");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["message_id"], "m-1");
    assert_eq!(lines[1]["body"], "{\"customer\":\"c-3\"}");
    assert_eq!(lines[1]["headers"]["tenant"], "acme");

    // Purge: an empty filter is refused unless "all".
    let (status, e) = console.post("/api/purge", json!({})).await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("all"), "{e}");
    assert_eq!(broker.depth(&broker.dlq).await, 6);
    let (status, r) = console
        .post("/api/purge", json!({"id": ["m-0", "m-4"]}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["removed"], 2);
    assert_eq!(
        dlq_ids(&broker.drain(&broker.dlq).await),
        ["m-1", "m-2", "m-3", "bad-0"]
    );
    put_dead_letter(
        &broker,
        "late",
        "{}",
        &api_failed_fields("logging", "logging: timed out", "2026-12-04T00:00:00Z"),
        0,
    )
    .await;
    let (status, r) = console.post("/api/purge", json!({"all": true})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["removed"], 1);
    assert_eq!(broker.depth(&broker.dlq).await, 0);
}

#[tokio::test]
async fn another_dlq_operation_holding_the_lock_is_a_409() {
    let broker = Broker::new("console-lock").await;
    dlq(&broker).await;
    let console = Console::start(&broker, None).await;
    let (status, _) = console.get("/api/groups").await;
    assert_eq!(status, 200);
    broker
        .channel
        .queue_declare(
            format!("{}.lock", broker.dlq).as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for (status, e) in [
        console
            .post("/api/replay", json!({"reason": "api_failed"}))
            .await,
        console.post("/api/purge", json!({"all": true})).await,
        console.get("/api/messages").await,
        console.get("/api/groups?fresh=1").await,
    ] {
        assert_eq!(status, 409, "{e}");
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .starts_with("another DLQ operation is running"),
            "{e}"
        );
    }
    // The latest read is still shown, and the depth needs no lock.
    assert_eq!(console.get("/api/groups").await.0, 200);
    assert_eq!(console.get("/api/depth").await.0, 200);
    assert_eq!(broker.depth(&broker.dlq).await, 8);
    assert_eq!(broker.depth(&broker.queue).await, 0);
}

#[tokio::test]
async fn token_login_cookie_csrf_host_and_headers() {
    let broker = Broker::new("console-auth").await;
    dlq(&broker).await;
    let token = "s3cret-console-token";
    let console = Console::start(&broker, Some(token)).await;
    let bearer = format!("Bearer {token}");

    // Every response carries the CSP and friends, refusals included.
    let r = client()
        .get(console.url("/api/depth"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    for path in ["/", "/api/groups", "/app.js"] {
        let r = client().get(console.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = client()
        .get(console.url("/api/depth"))
        .header(header::AUTHORIZATION, "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(console.url("/api/depth"))
        .header(header::AUTHORIZATION, &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The login form sets an HttpOnly, SameSite=Strict cookie.
    let r = client()
        .post(console.url("/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("token=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    let r = client()
        .post(console.url("/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains(token),
        "the cookie must not hold the token"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let page = client()
        .get(console.url("/"))
        .header(header::COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(csrf.len(), 64, "{html}");

    // CSRF: a browser's state-changing request (it has an Origin).
    let own = console.base.clone();
    let purge = |origin: Option<&str>, csrf: Option<&str>| {
        let mut rq = client()
            .post(console.url("/api/purge"))
            .header(header::COOKIE, &pair)
            .header(header::CONTENT_TYPE, "application/json")
            .body(r#"{"id":"none-such"}"#);
        if let Some(o) = origin {
            rq = rq.header(header::ORIGIN, o);
        }
        if let Some(c) = csrf {
            rq = rq.header("X-CSRF-Token", c);
        }
        rq.send()
    };
    let r = purge(Some("http://evil.example"), Some(&csrf))
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "another site's Origin");
    let r = purge(Some(&own), None).await.unwrap();
    assert_eq!(r.status(), 403, "own Origin without the CSRF token");
    let r = purge(Some(&own), Some("0123")).await.unwrap();
    assert_eq!(r.status(), 403, "own Origin with a wrong CSRF token");
    let r = purge(Some(&own), Some(&csrf)).await.unwrap();
    assert_eq!(r.status(), 200, "own Origin with the CSRF token");
    // A script: no Origin, the bearer token, no CSRF token.
    let r = client()
        .post(console.url("/api/purge"))
        .header(header::AUTHORIZATION, &bearer)
        .body(r#"{"id":"none-such"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A cross-site login attempt is refused too.
    let r = client()
        .post(console.url("/login"))
        .header(header::ORIGIN, "http://evil.example")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // DNS rebinding: another Host is refused, token or not.
    let r = client()
        .get(console.url("/api/groups"))
        .header(header::HOST, "evil.example")
        .header(header::AUTHORIZATION, &bearer)
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 403 | 421), "{}", r.status());
    let port = console.base.rsplit(':').next().unwrap().to_owned();
    let r = client()
        .get(console.url("/api/depth"))
        .header(header::HOST, format!("localhost:{port}"))
        .header(header::AUTHORIZATION, &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!console.log_text().contains(token), "the token was logged");
    assert_eq!(broker.depth(&broker.dlq).await, 8);
}

#[tokio::test]
async fn off_loopback_without_a_token_is_exit_2_naming_the_variable() {
    let broker = Broker::new("console-config").await;
    let (code, _, stderr) = run_bin(
        &["console", "--listen", &format!("0.0.0.0:{}", free_port())],
        &broker.vars(),
        b"",
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("BRIDGE_CONSOLE_TOKEN"), "{stderr}");
}

// === the page, in Chromium ===

const CHROMIUM: &str = "/usr/bin/chromium";

/// Polls a JavaScript condition in the page.
fn wait_js(tab: &headless_chrome::Tab, what: &str, js: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = tab.evaluate(js, false).ok().and_then(|r| r.value);
        if v == Some(Value::Bool(true)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not show {what} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn js_text(tab: &headless_chrome::Tab, js: &str) -> String {
    match tab.evaluate(js, false).unwrap().value {
        Some(Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn the_page_in_a_real_browser() {
    let chromium = std::env::var("BRIDGE_TEST_CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "the console's browser test needs Chromium at {chromium} (apt-get install chromium; \
         .ci/run installs it), or BRIDGE_TEST_CHROMIUM set to one"
    );
    let started = Instant::now();
    let broker = Broker::new("console-browser").await;
    dlq(&broker).await;
    let console = Console::start(&broker, None).await;
    let base = console.base.clone();
    let (_, g) = console.get("/api/groups").await;
    let users = group(&g, USERS_400)["id"].as_str().unwrap().to_owned();
    let logging = group(&g, LOGGING_503)["id"].as_str().unwrap().to_owned();
    let screenshot = std::env::var("BRIDGE_CONSOLE_SCREENSHOT").ok();

    let browsing = tokio::task::spawn_blocking(move || {
        use headless_chrome::{
            protocol::cdp::Page::CaptureScreenshotFormatOption, Browser, LaunchOptions,
        };
        use std::ffi::OsStr;
        let profile = std::env::temp_dir().join(format!(
            "fanout-bridge-chromium-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let browser = Browser::new(
            LaunchOptions::default_builder()
                .path(Some(chromium.into()))
                .sandbox(false)
                .headless(true)
                .window_size(Some((1440, 900)))
                .user_data_dir(Some(profile.clone()))
                .idle_browser_timeout(Duration::from_secs(120))
                .args(
                    [
                        "--disable-gpu",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--no-first-run",
                        "--disable-quic",
                    ]
                    .iter()
                    .map(OsStr::new)
                    .collect(),
                )
                .build()
                .unwrap(),
        )
        .expect("Chromium starts");
        let tab = browser.new_tab().unwrap();

        // Overview: the groups with their labels and counts.
        tab.navigate_to(&format!("{base}/")).unwrap();
        tab.wait_until_navigated().unwrap();
        wait_js(
            &tab,
            "the groups table",
            "!!document.querySelector('#groups tbody tr')",
        );
        let groups = js_text(&tab, "document.querySelector('#groups').innerText");
        for want in [LOGGING_503, USERS_400, "invalid_payload"] {
            assert!(groups.contains(want), "{groups}");
        }
        let row = js_text(
            &tab,
            &format!("document.querySelector('tr[data-group=\"{logging}\"]').innerText"),
        );
        assert!(row.contains('5'), "{row}");
        wait_js(
            &tab,
            "the depth",
            "document.getElementById('depth-now').textContent === '8'",
        );
        if let Some(path) = &screenshot {
            let png = tab
                .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
                .unwrap();
            std::fs::write(path, png).unwrap();
        }

        // A group: its messages.
        tab.find_element(&format!("tr[data-group=\"{logging}\"] th a"))
            .unwrap()
            .click()
            .unwrap();
        wait_js(
            &tab,
            "the group's messages",
            "document.querySelectorAll('#messages tbody tr').length === 5",
        );
        let list = js_text(&tab, "document.querySelector('#messages').innerText");
        assert!(
            list.contains("m-0") && list.contains("m-4") && !list.contains("u-0"),
            "{list}"
        );
        assert!(
            list.contains("logging: HTTP 503 after 3 attempts"),
            "{list}"
        );

        // A message whose body holds markup: shown as text, nothing runs.
        tab.find_element("a[href=\"#/message/m-2\"]")
            .unwrap()
            .click()
            .unwrap();
        wait_js(&tab, "the body", "!!document.getElementById('body')");
        let body = js_text(&tab, "document.getElementById('body').textContent");
        assert!(body.contains("<script>window.__pwned=1</script>"), "{body}");
        assert!(
            body.contains("<img src=x onerror=window.__pwned=2>"),
            "{body}"
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(js_text(&tab, "typeof window.__pwned"), "undefined");
        assert_eq!(
            js_text(
                &tab,
                "String(document.querySelectorAll('main script, main img').length)"
            ),
            "0"
        );
        let headers = js_text(&tab, "document.querySelector('#headers').innerText");
        assert!(
            headers.contains("x-bridge-error") && headers.contains("tenant"),
            "{headers}"
        );
        tab.find_element("#raw-toggle").unwrap().click().unwrap();
        wait_js(
            &tab,
            "the raw body",
            "document.getElementById('body').textContent.startsWith('{\"x\"')",
        );

        // Replay a group from the overview: the confirmation states the count.
        tab.find_element("a[href=\"#/\"]").unwrap().click().unwrap();
        wait_js(
            &tab,
            "the groups table",
            "!!document.querySelector('#groups tbody tr')",
        );
        tab.find_element(&format!("tr[data-group=\"{users}\"] button.replay"))
            .unwrap()
            .click()
            .unwrap();
        wait_js(
            &tab,
            "the confirmation",
            "document.getElementById('confirm').open",
        );
        let question = js_text(&tab, "document.getElementById('confirm-text').textContent");
        assert!(question.contains("2 messages"), "{question}");
        tab.find_element("#confirm-ok").unwrap().click().unwrap();
        wait_js(
            &tab,
            "the replay's result",
            "document.getElementById('status').textContent.includes('Replayed 2 messages')",
        );
        drop(browser);
        let _ = std::fs::remove_dir_all(profile);
    });
    browsing.await.unwrap();
    assert_eq!(broker.depth(&broker.queue).await, 2);
    let left = dlq_ids(&broker.drain(&broker.dlq).await);
    assert_eq!(left, ["m-0", "m-1", "m-2", "m-3", "m-4", "bad-0"]);
    eprintln!("browser test took {:?}", started.elapsed());
}

/// A client that goes away in the middle of a read (a closed tab, a proxy's
/// timeout, an aborted fetch) does not cut the pass short: it settles, so no
/// message goes back to a quorum DLQ unacked (each such return is a delivery
/// attempt the broker counts).
#[tokio::test]
async fn a_client_that_goes_away_mid_read_hands_nothing_back() {
    let broker = Broker::new("console-abort").await;
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    broker.declare_with(&broker.dlq, quorum).await;
    for i in 0..1500 {
        let props = BasicProperties::default()
            .with_message_id(format!("m-{i}").into())
            .with_headers(headers(&[("x-bridge-reason", "api_failed")]));
        broker
            .publish_to(&broker.dlq, format!("{{\"i\":{i}}}").as_bytes(), props)
            .await;
    }
    let console = Console::start(&broker, None).await;
    for _ in 0..3 {
        let impatient = Client::builder()
            .timeout(Duration::from_millis(60))
            .build()
            .unwrap();
        let cut = impatient
            .get(format!("{}/api/messages?limit=5", console.base))
            .send()
            .await;
        assert!(cut.is_err(), "the read took longer than the client waited");
        // The pass goes on without the client; the next one waits for it.
        let (status, _) = status_json(
            client()
                .get(format!("{}/api/messages?limit=1", console.base))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    drop(console);
    wait_until(
        "the console's connection is gone",
        Duration::from_secs(20),
        || async { broker.depth(&broker.dlq).await == 1500 },
    )
    .await;
    let left = broker.drain(&broker.dlq).await;
    assert_eq!(left.len(), 1500);
    let handed_back = left
        .iter()
        .filter(|d| header_int(d, "x-delivery-count").unwrap_or(0) > 0)
        .count();
    assert_eq!(handed_back, 0, "messages handed back by a cut-short pass");
}

/// Another site's page cannot make the console read the DLQ (a pass holds
/// the lock): browsers mark such a request with Sec-Fetch-Site.
#[tokio::test]
async fn another_sites_page_cannot_start_a_read() {
    let broker = Broker::new("console-xsite").await;
    broker.declare().await;
    let console = Console::start(&broker, None).await;
    for site in ["cross-site", "same-site"] {
        let r = client()
            .get(format!("{}/api/messages", console.base))
            .header("sec-fetch-site", site)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{site}");
    }
    let r = client()
        .get(format!("{}/api/messages", console.base))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// An action states how many messages it touches; when the DLQ no longer
/// holds that many matching ones (a newer dead-letter, a copy), nothing is
/// done and the page is told the number now.
#[tokio::test]
async fn an_action_whose_count_changed_does_nothing() {
    let broker = Broker::new("console-expect").await;
    dlq(&broker).await;
    let console = Console::start(&broker, None).await;
    let (_, g) = console.get("/api/groups").await;
    let users = group(&g, USERS_400)["id"].as_str().unwrap().to_owned();
    let before = broker.depth(&broker.dlq).await;
    for path in ["/api/purge", "/api/replay"] {
        let (status, r) = console
            .post(path, json!({"group": users, "expect": 1}))
            .await;
        assert_eq!(status, 409, "{path}: {r}");
        assert_eq!(r["matched"], 2, "{r}");
        assert!(r["error"].as_str().unwrap().contains("changed"), "{r}");
    }
    assert_eq!(broker.depth(&broker.dlq).await, before);
    assert_eq!(broker.depth(&broker.queue).await, 0);
    let (status, r) = console
        .post("/api/purge", json!({"group": users, "expect": 2}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["removed"], 2);
}
