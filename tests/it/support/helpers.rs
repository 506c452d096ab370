//! Test fixtures: a real broker connection with per-test queue names, fake
//! APIs that are real HTTP servers, an in-process worker, and condition waits.

#![allow(dead_code)]

use std::{
    collections::VecDeque,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use fanout_bridge::{
    app,
    config::RawConfig,
    metrics::{Metrics, Outcome},
};
use lapin::{
    options::{
        BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Channel, Connection, ConnectionProperties,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[path = "../../common/wait.rs"]
mod wait;

pub fn amqp_url() -> String {
    std::env::var("BRIDGE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Polls `cond` until it is true, or panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait::poll_until(what, timeout, Duration::from_millis(25), cond).await;
}

/// `(name, value)` pairs as owned settings.
pub fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// API URLs nothing answers on, for settings that must parse.
pub const URLS: [(&str, &str); 2] = [
    ("BRIDGE_USER_API_URL", "http://127.0.0.1:9/users"),
    ("BRIDGE_LOG_API_URL", "http://127.0.0.1:9/logs"),
];

pub fn unique(prefix: &str) -> String {
    format!("test.{prefix}.{}", uuid::Uuid::new_v4().simple())
}

// === Broker ===

/// A connection for the test itself, and the queues it must delete.
pub struct Broker {
    pub conn: Connection,
    pub channel: Channel,
    pub queue: String,
    pub dlq: String,
}

impl Broker {
    pub async fn new(name: &str) -> Broker {
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("the test broker must run on BRIDGE_TEST_AMQP_URL (default 127.0.0.1:5672)");
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Broker {
            conn,
            channel,
            queue: unique(name),
            dlq: unique(&format!("{name}.dlq")),
        }
    }

    /// A fresh connection (after the broker restarted), same queues.
    pub async fn reconnect(&mut self) {
        self.conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .unwrap();
        self.channel = self.conn.create_channel().await.unwrap();
        self.channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
    }

    /// The worker's settings for this test's queues.
    pub fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("BRIDGE_AMQP_URL".into(), amqp_url()),
            ("BRIDGE_QUEUE".into(), self.queue.clone()),
            ("BRIDGE_DLQ".into(), self.dlq.clone()),
        ]
    }

    pub async fn declare(&self) {
        for q in [&self.queue, &self.dlq] {
            self.declare_with(q, FieldTable::default()).await;
        }
    }

    /// Declares a durable queue with `args`.
    pub async fn declare_with(&self, queue: &str, args: FieldTable) {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .unwrap();
    }

    pub async fn publish(&self, body: &[u8], props: BasicProperties) {
        self.publish_to(&self.queue.clone(), body, props).await;
    }

    pub async fn publish_to(&self, queue: &str, body: &[u8], props: BasicProperties) {
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props.with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(
            confirm.is_ack() && confirm.take_message().is_none(),
            "test publish not routed"
        );
    }

    /// Ready messages in a queue (0 if it does not exist).
    pub async fn depth(&self, queue: &str) -> u32 {
        let ch = self.conn.create_channel().await.unwrap();
        let depth = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or(0);
        let _ = ch.close(200, "".into()).await;
        depth
    }

    /// Takes every message from a queue.
    pub async fn drain(&self, queue: &str) -> Vec<lapin::message::Delivery> {
        let mut out = Vec::new();
        while let Some(m) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            out.push(m.delivery);
        }
        out
    }

    /// Publishes `{"i":n}` for each n in `range`, with message ids
    /// `prefix-n`; returns the ids.
    pub async fn publish_numbered(
        &self,
        prefix: &str,
        range: std::ops::Range<usize>,
    ) -> std::collections::HashSet<String> {
        let mut ids = std::collections::HashSet::new();
        for i in range {
            let id = format!("{prefix}-{i}");
            let props = BasicProperties::default().with_message_id(id.clone().into());
            self.publish(format!("{{\"i\":{i}}}").as_bytes(), props)
                .await;
            ids.insert(id);
        }
        ids
    }

    /// Waits until `queue` holds `n` ready messages.
    pub async fn wait_depth(&self, queue: &str, n: u32, timeout: Duration) {
        wait_until(
            &format!("{n} messages ready in {queue}"),
            timeout,
            || async { self.depth(queue).await == n },
        )
        .await;
    }

    pub async fn delete(&self, queue: &str) {
        let _ = self
            .channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
    }
}

impl Drop for Broker {
    /// Deletes the test's queues even when the test failed: the broker
    /// outlives the test run.
    fn drop(&mut self) {
        let queues = [self.queue.clone(), self.dlq.clone()];
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(conn) =
                    Connection::connect(&amqp_url(), ConnectionProperties::default()).await
                {
                    if let Ok(ch) = conn.create_channel().await {
                        for q in queues {
                            let _ = ch
                                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                                .await;
                        }
                    }
                    let _ = conn.close(200, "".into()).await;
                }
            });
        })
        .join();
    }
}

pub fn headers(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(
            ShortString::from(*k),
            AMQPValue::LongString(LongString::from(*v)),
        );
    }
    t
}

pub fn header_text(d: &lapin::message::Delivery, key: &str) -> Option<String> {
    fanout_bridge::broker::fields::header_text(d.properties.headers().as_ref(), key)
        .map(|c| c.into_owned())
}

pub fn header_int(d: &lapin::message::Delivery, key: &str) -> Option<i64> {
    fanout_bridge::broker::fields::header_int(d.properties.headers().as_ref(), key)
}

// === Connection watch ===

/// Samples `bridge_broker_connected` every few milliseconds: a dropped
/// connection keeps it at 0 for the reconnect backoff (at least 250 ms).
pub struct ConnectionWatch {
    dropped: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectionWatch {
    pub fn start(metrics: &Metrics) -> ConnectionWatch {
        let gauge = metrics.broker_connected.clone();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&dropped);
        let task = tokio::spawn(async move {
            loop {
                if gauge.get() != 1 {
                    flag.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        ConnectionWatch { dropped, task }
    }

    pub fn dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectionWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === Fake APIs ===

/// One answer of a fake API.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }
    pub fn ok() -> Reply {
        Reply::status(200)
    }
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// What a fake API received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub started: Instant,
    pub answered: Instant,
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct FakeState {
    received: Mutex<Vec<Received>>,
    /// Idempotency-Keys of the requests as they arrive (before answering).
    arrived: Mutex<Vec<String>>,
    script: Mutex<VecDeque<Reply>>,
    /// Answers for the requests of one Idempotency-Key, before the script.
    by_key: Mutex<std::collections::HashMap<String, VecDeque<Reply>>>,
    default: Mutex<Option<Reply>>,
}

/// A real HTTP server playing one API: answers from a script, then a
/// default, and records every request.
#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<FakeState>,
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeApi { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Answers `reply` to the next requests, in order, before the default.
    pub fn then(&self, reply: Reply) -> &Self {
        self.state.script.lock().unwrap().push_back(reply);
        self
    }

    /// Answers `reply` to the next request carrying Idempotency-Key `key`,
    /// whatever the order of arrival of other messages' requests.
    pub fn for_key(&self, key: &str, reply: Reply) -> &Self {
        self.state
            .by_key
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .push_back(reply);
        self
    }

    /// Whether a request with Idempotency-Key `key` has arrived (answered or
    /// not).
    pub fn arrived(&self, key: &str) -> bool {
        self.state.arrived.lock().unwrap().iter().any(|k| k == key)
    }

    /// Answers `reply` once the script is used up (200 until set).
    pub fn always(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// The Idempotency-Keys received.
    pub fn keys(&self) -> std::collections::HashSet<String> {
        self.per_key().into_keys().collect()
    }

    /// How many requests carried each Idempotency-Key.
    pub fn per_key(&self) -> std::collections::HashMap<String, usize> {
        let mut m = std::collections::HashMap::new();
        for r in self.received() {
            *m.entry(r.header("idempotency-key").unwrap_or_default())
                .or_default() += 1;
        }
        m
    }
}

async fn answer(
    State(state): State<Arc<FakeState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let key = headers
        .get("idempotency-key")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    state.arrived.lock().unwrap().push(key.clone());
    let for_key = state
        .by_key
        .lock()
        .unwrap()
        .get_mut(&key)
        .and_then(VecDeque::pop_front);
    let reply = for_key
        .or_else(|| state.script.lock().unwrap().pop_front())
        .or_else(|| state.default.lock().unwrap().clone())
        .unwrap_or_else(Reply::ok);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    state.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body,
        started,
        answered: Instant::now(),
        status: reply.status,
    });
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), "{}").into_response();
    for (k, v) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    response
}

// === Worker ===

/// A worker running in this process against the test's queues and fakes.
pub struct Worker {
    pub metrics: Metrics,
    pub ops: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Settings most tests share: fast retries, short timeouts.
pub fn fast_settings(user: &FakeApi, log: &FakeApi) -> Vec<(String, String)> {
    vec![
        ("BRIDGE_USER_API_URL".into(), user.url()),
        ("BRIDGE_LOG_API_URL".into(), log.url()),
        ("BRIDGE_RETRY_BACKOFF_MS".into(), "20".into()),
        ("BRIDGE_HTTP_TIMEOUT_MS".into(), "2000".into()),
        ("BRIDGE_SHUTDOWN_GRACE_MS".into(), "5000".into()),
    ]
}

impl Worker {
    pub async fn start(broker: &Broker, settings: Vec<(String, String)>) -> Worker {
        let mut vars = broker.vars();
        vars.extend(settings);
        let config = RawConfig::from_vars(vars)
            .worker_config()
            .expect("test settings are valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ops = listener.local_addr().unwrap();
        let app = app::Worker::new(config);
        let metrics = app.metrics().clone();
        let health = app.health().clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run(listener, stop.clone()));
        wait_until("the worker is consuming", Duration::from_secs(15), || {
            let ready = health.is_ready();
            async move { ready }
        })
        .await;
        Worker {
            metrics,
            ops,
            stop,
            task,
        }
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.metrics.outcome_count(outcome)
    }

    pub fn settled(&self) -> u64 {
        self.count(Outcome::Acked) + self.count(Outcome::DeadLettered)
    }

    pub async fn wait_settled(&self, n: u64) {
        wait_until(
            &format!("{n} messages settled"),
            Duration::from_secs(20),
            || {
                let settled = self.settled();
                async move { settled >= n }
            },
        )
        .await;
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Waits until both APIs have received every one of `ids` (the evidence
/// that nothing was lost).
pub async fn wait_delivered(
    user: &FakeApi,
    log: &FakeApi,
    ids: &std::collections::HashSet<String>,
    timeout: Duration,
) {
    wait_until("every message reached both APIs", timeout, || {
        let done = &user.keys() == ids && &log.keys() == ids;
        async move { done }
    })
    .await;
}

/// GETs a path of a local HTTP server: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

// === The built binary ===

/// The binary under test: `BRIDGE_TEST_BIN` when set, else the one cargo
/// built for the tests. `cargo test` builds it with the dev-dependencies'
/// features unified in; `.ci/run` points this at a binary built without them,
/// as users get it.
pub fn bin() -> String {
    std::env::var("BRIDGE_TEST_BIN")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_fanout-bridge").to_owned())
}

/// A free loopback port (bound, then released).
/// A port nothing listens on, for connection-refused cases. Not an
/// ephemeral port learned and released: another test's server can take that
/// one meanwhile (seen once: a "refused" API answered). Port 1 (tcpmux) is
/// privileged and served by nothing on a test machine.
pub const CLOSED_PORT: u16 = 1;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the binary to completion with `vars` and `stdin`; returns (code,
/// stdout, stderr).
pub async fn run_bin(
    args: &[&str],
    vars: &[(String, String)],
    stdin: &[u8],
) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(vars.iter().cloned())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command finished within 60 s")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `fanout-bridge run` as a child process, for tests where a process must die.
pub struct Process {
    pub child: std::process::Child,
    pub ops: SocketAddr,
    pub log: std::path::PathBuf,
}

impl Process {
    pub async fn start(broker: &Broker, settings: Vec<(String, String)>) -> Process {
        let p = Process::spawn(broker, settings);
        p.wait_ready().await;
        p
    }

    /// Starts the process without waiting for it to be ready.
    pub fn spawn(broker: &Broker, settings: Vec<(String, String)>) -> Process {
        let port = free_port();
        let log = std::env::temp_dir().join(format!(
            "fanout-bridge-test-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let child = std::process::Command::new(bin())
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(broker.vars())
            .envs(settings)
            .env("BRIDGE_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let ops: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        Process { child, ops, log }
    }

    pub async fn ready(&self) -> bool {
        matches!(
            reqwest::get(format!("http://{}/readyz", self.ops)).await,
            Ok(r) if r.status() == 200
        )
    }

    pub async fn wait_ready(&self) {
        wait_until(
            "the worker process is ready",
            Duration::from_secs(20),
            || self.ready(),
        )
        .await;
    }

    /// A metric's value, summed over its series.
    pub async fn metric(&self, series: &str) -> f64 {
        let Ok(r) = reqwest::get(format!("http://{}/metrics", self.ops)).await else {
            return -1.0;
        };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {timeout:?}; log: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

// === A TCP proxy in front of the broker, to cut connections ===

/// Forwards 127.0.0.1:`port` to the broker; `cut` drops every connection and
/// stops listening, as a network failure would.
pub struct TcpProxy {
    pub port: u16,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl TcpProxy {
    pub async fn start(port: u16) -> TcpProxy {
        let url = url::Url::parse(&amqp_url()).unwrap();
        let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5672));
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let registry = Arc::clone(&tasks);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                registry.lock().unwrap().push(conn.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        TcpProxy { port, tasks }
    }

    pub fn url(&self) -> String {
        let mut url = url::Url::parse(&amqp_url()).unwrap();
        url.set_port(Some(self.port)).unwrap();
        url.to_string()
    }

    pub fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

// === HTTP proxy ===

/// An HTTP proxy that only tunnels (`CONNECT`), as corporate proxies for
/// HTTPS do; it records each request head it receives.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    accept: tokio::task::AbortHandle,
}

impl ConnectProxy {
    pub async fn start() -> ConnectProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = Arc::clone(&heads);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    // The client sends nothing after the head until it has
                    // the proxy's answer, so the head is all there is to read.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        match inbound.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    record.lock().unwrap().push(head.clone());
                    let target = match head.split_whitespace().collect::<Vec<_>>()[..] {
                        ["CONNECT", target, ..] => target.to_owned(),
                        _ => {
                            let _ = inbound
                                .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                                .await;
                            return;
                        }
                    };
                    match tokio::net::TcpStream::connect(target).await {
                        Ok(mut outbound) => {
                            let _ = inbound
                                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                                .await;
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                        Err(_) => {
                            let _ = inbound.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        }
                    }
                });
            }
        });
        ConnectProxy {
            addr,
            heads,
            accept: accept.abort_handle(),
        }
    }

    /// The request heads received so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

// === Broker policies ===

/// A `delivery-limit` policy on exactly the given queues, cleared on drop
/// (even when the test fails: the broker outlives the test run).
pub struct DeliveryLimit {
    name: String,
}

impl DeliveryLimit {
    pub fn set(queues: &[&str], limit: u32) -> DeliveryLimit {
        DeliveryLimit::definition(queues, &format!("{{\"delivery-limit\":{limit}}}"))
    }

    /// A policy with any definition (JSON) on `queues`, cleared on drop.
    pub fn definition(queues: &[&str], definition: &str) -> DeliveryLimit {
        let name = unique("policy");
        let alternatives: Vec<String> = queues.iter().map(|q| q.replace('.', "\\.")).collect();
        let pattern = format!("^({})$", alternatives.join("|"));
        let out = std::process::Command::new("rabbitmqctl")
            .args([
                "set_policy",
                "-p",
                "/",
                &name,
                &pattern,
                definition,
                "--apply-to",
                "queues",
            ])
            .output()
            .expect("rabbitmqctl runs");
        assert!(
            out.status.success(),
            "set_policy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        DeliveryLimit { name }
    }
}

impl DeliveryLimit {
    /// Waits until the broker shows this policy on `queue`.
    pub async fn wait_applied(&self, queue: &str) {
        let name = self.name.clone();
        let queue = queue.to_owned();
        wait_until(
            &format!("policy {name} in force on {queue}"),
            Duration::from_secs(30),
            || {
                let (name, queue) = (name.clone(), queue.clone());
                async move {
                    let out = tokio::process::Command::new("rabbitmqctl")
                        .args(["list_queues", "-q", "-p", "/", "name", "policy"])
                        .output()
                        .await
                        .expect("rabbitmqctl runs");
                    String::from_utf8_lossy(&out.stdout).lines().any(|l| {
                        let mut cells = l.split('\t');
                        cells.next() == Some(queue.as_str()) && cells.next() == Some(name.as_str())
                    })
                }
            },
        )
        .await;
    }
}

impl Drop for DeliveryLimit {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["clear_policy", "-p", "/", &self.name])
            .output();
    }
}

// === TestApp: the usual set-up in one call ===

/// Queues, two fake APIs and a worker with fast retries: what most tests
/// start with (zero2prod's `spawn_app`). Tweak the settings with
/// [`TestApp::spawn_with`]; everything is removed when the test ends.
pub struct TestApp {
    pub broker: Broker,
    pub user: FakeApi,
    pub log: FakeApi,
    pub worker: Worker,
}

impl TestApp {
    pub async fn spawn(name: &str) -> TestApp {
        TestApp::spawn_with(name, |_| {}).await
    }

    /// As [`TestApp::spawn`], with `tweak` applied to the settings first.
    pub async fn spawn_with(name: &str, tweak: impl FnOnce(&mut Vec<(String, String)>)) -> TestApp {
        let broker = Broker::new(name).await;
        let (user, log) = (FakeApi::start().await, FakeApi::start().await);
        let mut settings = fast_settings(&user, &log);
        tweak(&mut settings);
        let worker = Worker::start(&broker, settings).await;
        TestApp {
            broker,
            user,
            log,
            worker,
        }
    }
}

/// What a DLQ copy's `x-bridge-*` headers must say.
pub struct DeadLettered<'a> {
    pub reason: &'a str,
    pub failed: &'a str,
    pub done: &'a str,
    /// A substring of `x-bridge-error`.
    pub error: &'a str,
    pub attempts: i64,
}

/// Checks a DLQ copy's headers against `want`, and the headers every copy
/// has: an RFC 3339 UTC `x-bridge-dead-lettered-at`, persistent delivery, a
/// `message_id`.
#[track_caller]
pub fn assert_dead_lettered(d: &lapin::message::Delivery, want: &DeadLettered<'_>) {
    let text = |k: &str| header_text(d, k).unwrap_or_else(|| panic!("no {k} header"));
    assert_eq!(text("x-bridge-reason"), want.reason, "x-bridge-reason");
    assert_eq!(
        text("x-bridge-failed-targets"),
        want.failed,
        "x-bridge-failed-targets"
    );
    assert_eq!(
        text("x-bridge-done-targets"),
        want.done,
        "x-bridge-done-targets"
    );
    let error = text("x-bridge-error");
    assert!(
        error.contains(want.error),
        "x-bridge-error {error:?} lacks {:?}",
        want.error
    );
    assert_eq!(
        header_int(d, "x-bridge-attempts"),
        Some(want.attempts),
        "x-bridge-attempts"
    );
    let at = text("x-bridge-dead-lettered-at");
    assert!(
        at.ends_with('Z')
            && time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                .is_ok(),
        "x-bridge-dead-lettered-at is RFC 3339 UTC: {at}"
    );
    assert_eq!(d.properties.delivery_mode(), &Some(2), "persistent");
    assert!(
        d.properties.message_id().is_some(),
        "a DLQ copy has a message_id"
    );
}

// === DLQ messages as the worker writes them ===

/// Puts a message in the test's DLQ as the worker would have dead-lettered
/// it: `fields` as `x-bridge-*` headers, `x-bridge-replays` when `replays`
/// is above 0, and a header of the message's own (`tenant: acme`).
pub async fn put_dead_letter(
    broker: &Broker,
    id: &str,
    body: &str,
    fields: &[(&str, &str)],
    replays: i64,
) {
    let mut h = headers(fields);
    if replays > 0 {
        h.insert("x-bridge-replays".into(), AMQPValue::LongLongInt(replays));
    }
    h.insert(
        "tenant".into(),
        AMQPValue::LongString(LongString::from("acme")),
    );
    let props = BasicProperties::default()
        .with_message_id(id.to_owned().into())
        .with_content_type("application/json".into())
        .with_headers(h);
    broker.publish_to(&broker.dlq, body.as_bytes(), props).await;
}

/// The `x-bridge-*` headers of an `api_failed` message.
pub fn api_failed_fields<'a>(
    target: &'a str,
    error: &'a str,
    at: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("x-bridge-reason", "api_failed"),
        ("x-bridge-failed-targets", target),
        ("x-bridge-done-targets", ""),
        ("x-bridge-error", error),
        ("x-bridge-dead-lettered-at", at),
    ]
}

/// A process's peak resident set in bytes (`VmHWM`), while it runs.
pub fn peak_rss(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kib * 1024)
}
