//! The promise on a real 3-node RabbitMQ cluster (`scripts/cluster.sh`):
//! three worker replicas on quorum queues, stand-in APIs answering a few %
//! 503, messages published with confirms while, in turn, the node leading the
//! inbound queue is killed (`kill -9`) and started again, another node is
//! stopped gracefully and started again, and a worker is SIGKILLed and
//! replaced. At the end every message id was accepted by both APIs or is in
//! the DLQ with its `x-bridge-reason`: nothing is lost. Duplicate API calls
//! are counted and printed, not limited.
//!
//! CI runs it with 3,000 messages (`cargo test --locked` runs every test
//! binary). The long variant:
//!
//! ```sh
//! CLUSTER_MESSAGES=20000 cargo test --test cluster -- --nocapture
//! ```
//!
//! Publishing runs alongside the faults, at most CLUSTER_MESSAGES /
//! CLUSTER_PUBLISH_SECS (default 60) per second, released in portions (8%
//! before each fault, 4% before each wait for progress, so that every step
//! has traffic), the rest once the faults are done. `CLUSTER_WORKER_URLS=one` gives each
//! worker one node's URL instead of all three.
//!
//! Needs the Debian `rabbitmq-server` package (the cluster is started and
//! removed by the test itself, on ports 5681-5683 and epmd 4371; the
//! machine's own broker is not used). A cluster left running by
//! `scripts/cluster.sh up` is reused and then taken down.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    Router,
};
use lapin::{
    options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::FieldTable,
    BasicProperties, Channel, Connection, ConnectionProperties,
};
use tokio::net::TcpListener;

#[path = "common/wait.rs"]
mod wait;

const BIN: &str = env!("CARGO_BIN_EXE_fanout-bridge");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh");
/// Share of API calls answered 503.
const FAIL_RATE: f64 = 0.04;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn elapsed(since: Instant) -> String {
    format!("{:.1}s", since.elapsed().as_secs_f64())
}

/// Polls `cond` until true; panics naming `what` after `timeout`.
async fn wait_for<F, Fut>(what: &str, timeout: Duration, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait::poll_until(what, timeout, Duration::from_millis(100), cond).await;
}

// === The cluster ===

/// The cluster of `scripts/cluster.sh`: up when made, down when dropped
/// (also when the test fails).
struct Cluster {
    urls: Vec<String>,
}

impl Cluster {
    async fn up() -> Cluster {
        let t = Instant::now();
        script(&["up"]).await;
        println!("cluster up in {}", elapsed(t));
        let urls = script(&["urls"])
            .await
            .trim()
            .split(',')
            .map(str::to_owned)
            .collect::<Vec<_>>();
        assert_eq!(urls.len(), 3, "{urls:?}");
        Cluster { urls }
    }

    async fn leader(&self, queue: &str) -> String {
        script(&["leader", queue]).await.trim().to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let t = Instant::now();
        let status = std::process::Command::new("bash")
            .args([SCRIPT, "down"])
            .status();
        println!("cluster down in {} ({status:?})", elapsed(t));
    }
}

/// Runs `scripts/cluster.sh ARGS`; returns its stdout, panics on failure.
async fn script(args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("bash")
            .arg(SCRIPT)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("cluster.sh {args:?} did not finish within 120 s"))
    .expect("bash runs");
    assert!(
        out.status.success(),
        "cluster.sh {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A connection to whichever node answers, trying them in turn from `start`.
async fn connect_any(urls: &[String], start: &mut usize) -> Connection {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let url = &urls[*start % urls.len()];
        match Connection::connect(url, ConnectionProperties::default()).await {
            Ok(c) => return c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no node of the cluster answers: {e}"
                );
                *start += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

// === Stand-in APIs ===

/// A real HTTP server playing one API: answers 503 to a random
/// [`FAIL_RATE`] of the calls, 200 otherwise, and records per message id
/// (the Idempotency-Key) every status it answered.
#[derive(Clone)]
struct FakeApi {
    addr: SocketAddr,
    calls: Arc<Mutex<HashMap<String, Vec<u16>>>>,
    ok: Arc<AtomicU64>,
}

impl FakeApi {
    async fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = FakeApi {
            addr: listener.local_addr().unwrap(),
            calls: Arc::default(),
            ok: Arc::default(),
        };
        let app = Router::new().fallback(answer).with_state(api.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        api
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn ok_count(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn accepted(&self, id: &str) -> bool {
        self.calls
            .lock()
            .unwrap()
            .get(id)
            .is_some_and(|s| s.iter().any(|&c| c < 300))
    }

    fn snapshot(&self) -> HashMap<String, Vec<u16>> {
        self.calls.lock().unwrap().clone()
    }
}

async fn answer(State(api): State<FakeApi>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // A little latency, so that messages are in flight when a fault hits.
    let delay = rand::random::<u64>() % 8;
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let status = if rand::random::<f64>() < FAIL_RATE {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        api.ok.fetch_add(1, Ordering::Relaxed);
        StatusCode::OK
    };
    api.calls
        .lock()
        .unwrap()
        .entry(id)
        .or_default()
        .push(status.as_u16());
    status
}

// === Worker replicas ===

/// `fanout-bridge run` as a child process; killed when dropped.
struct Worker {
    name: String,
    child: std::process::Child,
    log: PathBuf,
    ops: Option<SocketAddr>,
}

impl Worker {
    fn spawn(name: &str, vars: &[(String, String)], log_dir: &std::path::Path) -> Worker {
        let log = log_dir.join(format!("{name}.log"));
        let child = std::process::Command::new(BIN)
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("BRIDGE_LOG_FORMAT", "json")
            .env("BRIDGE_METRICS_ADDR", "127.0.0.1:0")
            .envs(vars.iter().cloned())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Worker {
            name: name.to_owned(),
            child,
            log,
            ops: None,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The metrics address, read off the worker's log line
    /// (`BRIDGE_METRICS_ADDR=127.0.0.1:0` picks a free port).
    fn find_ops(&self) -> Option<SocketAddr> {
        let text = self.log_text();
        let at = text.find("\"addr\":\"")? + 8;
        let end = text[at..].find('"')? + at;
        text[at..end].parse().ok()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}):\n{}", self.name, self.log_text());
            }
            if self.ops.is_none() {
                self.ops = self.find_ops();
            }
            if let Some(addr) = self.ops {
                if let Ok(r) = reqwest::get(format!("http://{addr}/readyz")).await {
                    if r.status() == 200 {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within 60 s:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A metric's value summed over its series (None if unreachable).
    async fn metric(&self, series: &str) -> Option<f64> {
        let addr = self.ops?;
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(
            text.lines()
                .filter(|l| l.starts_with(series))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    async fn sigterm(&mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workers' logs: removed after a pass, shown (their ends) after a
/// failure.
struct LogDir(PathBuf);

impl Drop for LogDir {
    fn drop(&mut self) {
        if std::env::var_os("CLUSTER_KEEP_LOGS").is_some() {
            eprintln!("worker logs kept in {}", self.0.display());
            return;
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
            return;
        }
        eprintln!("worker logs kept in {}", self.0.display());
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- {} (last 15 lines)", entry.path().display());
            for l in &lines[lines.len().saturating_sub(15)..] {
                eprintln!("{l}");
            }
        }
    }
}

// === Publisher ===

struct PublishStats {
    confirmed: usize,
    attempts: usize,
    reconnects: usize,
}

/// Publishes message ids `0..n` (`{"i":N}`, message_id `m-N`, persistent,
/// mandatory) with publisher confirms; whatever is not confirmed (nack,
/// returned, timeout, lost connection) is published again, on another node
/// if need be. Paced at `rate` per second, and never beyond the first
/// `allowed` messages (raised by the test as its fault steps go on, so that
/// each step has traffic to work through).
async fn publish_all(
    urls: Vec<String>,
    first_node: usize,
    queue: String,
    n: usize,
    rate: f64,
    allowed: Arc<AtomicUsize>,
) -> PublishStats {
    let started = Instant::now();
    let mut stats = PublishStats {
        confirmed: 0,
        attempts: 0,
        reconnects: 0,
    };
    let mut next = 0usize;
    let mut retry: Vec<usize> = Vec::new();
    let mut node = first_node;
    let mut channel: Option<(Connection, Channel)> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while stats.confirmed < n {
        assert!(Instant::now() < deadline, "publishing did not finish");
        let allowed = allowed.load(Ordering::Relaxed);
        let due = if allowed >= n {
            n // all released: full speed
        } else {
            ((started.elapsed().as_secs_f64() * rate) as usize).min(allowed)
        };
        let mut batch: Vec<usize> = std::mem::take(&mut retry);
        while next < due && batch.len() < 500 {
            batch.push(next);
            next += 1;
        }
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if channel
            .as_ref()
            .is_none_or(|(c, _)| !c.status().connected())
        {
            stats.reconnects += 1;
            let conn = connect_any(&urls, &mut node).await;
            match conn.create_channel().await {
                Ok(ch)
                    if ch
                        .confirm_select(ConfirmSelectOptions::default())
                        .await
                        .is_ok() =>
                {
                    channel = Some((conn, ch));
                }
                _ => {
                    node += 1;
                    retry = batch;
                    continue;
                }
            }
        }
        let ch = channel.as_ref().unwrap().1.clone();
        let mut pending = Vec::with_capacity(batch.len());
        let mut failed = Vec::new();
        for i in batch {
            stats.attempts += 1;
            let props = BasicProperties::default()
                .with_message_id(format!("m-{i}").into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2);
            match ch
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    format!("{{\"i\":{i}}}").as_bytes(),
                    props,
                )
                .await
            {
                Ok(confirm) => pending.push((i, confirm)),
                Err(_) => failed.push(i),
            }
        }
        for (i, confirm) in pending {
            let confirmed = match tokio::time::timeout(Duration::from_secs(30), confirm).await {
                Ok(Ok(c)) => c.is_ack() && c.take_message().is_none(),
                _ => false,
            };
            if confirmed {
                stats.confirmed += 1;
            } else {
                failed.push(i);
            }
        }
        if !failed.is_empty() {
            // Nacked, returned or cut off: again, on a fresh connection to
            // the next node. (Some may have arrived: a duplicate is fine.)
            channel = None;
            node += 1;
            retry = failed;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    stats
}

// === The test ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_node_and_worker_loss_lose_no_message() {
    let started = Instant::now();
    let n: usize = env_or("CLUSTER_MESSAGES", 3000);
    let publish_secs: f64 = env_or("CLUSTER_PUBLISH_SECS", 60.0);
    let one_url = std::env::var("CLUSTER_WORKER_URLS").as_deref() == Ok("one");

    let cluster = Cluster::up().await;
    let logs = LogDir(std::env::temp_dir().join(format!(
        "fanout-bridge-cluster-test-{}",
        uuid::Uuid::new_v4().simple()
    )));
    let log_dir = logs.0.clone();
    std::fs::create_dir_all(&log_dir).unwrap();
    let urls = cluster.urls.clone();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let queue = format!("cluster.inbound.{tag}");
    let dlq = format!("cluster.inbound.{tag}.dlq");

    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let vars = |i: usize| -> Vec<(String, String)> {
        let url = if one_url {
            urls[i % urls.len()].clone()
        } else {
            urls.join(",")
        };
        vec![
            ("BRIDGE_AMQP_URL".into(), url),
            ("BRIDGE_QUEUE".into(), queue.clone()),
            ("BRIDGE_DLQ".into(), dlq.clone()),
            ("BRIDGE_QUEUE_TYPE".into(), "quorum".into()),
            ("BRIDGE_USER_API_URL".into(), user.url("users")),
            ("BRIDGE_LOG_API_URL".into(), log.url("logs")),
            ("BRIDGE_PREFETCH".into(), "32".into()),
            ("BRIDGE_MAX_ATTEMPTS".into(), "2".into()),
            ("BRIDGE_RETRY_BACKOFF_MS".into(), "20".into()),
            ("BRIDGE_HTTP_TIMEOUT_MS".into(), "2000".into()),
            ("BRIDGE_SHUTDOWN_GRACE_MS".into(), "5000".into()),
        ]
    };
    let mut workers: Vec<Worker> = (0..3)
        .map(|i| Worker::spawn(&format!("worker-{i}"), &vars(i), &log_dir))
        .collect();
    for w in &mut workers {
        w.wait_ready().await;
    }
    println!(
        "{} worker replicas ready ({}; {})",
        workers.len(),
        if one_url {
            "one node URL each"
        } else {
            "all three node URLs each"
        },
        elapsed(started)
    );

    // Publishing runs alongside the faults: a portion is released before
    // each step.
    let allowed = Arc::new(AtomicUsize::new(0));
    let release = |percent: usize| {
        let more = (n * percent).div_ceil(100);
        allowed.fetch_add(more, Ordering::Relaxed);
    };
    // The publisher starts on the node that leads the queue, the first to
    // be killed: it must republish what that costs it.
    let leader = cluster.leader(&queue).await;
    let first_node = leader[1..2].parse::<usize>().unwrap() - 1;
    let publisher = tokio::spawn(publish_all(
        urls.clone(),
        first_node,
        queue.clone(),
        n,
        n as f64 / publish_secs,
        Arc::clone(&allowed),
    ));
    let step = (n as u64 / 40).clamp(20, 200);
    // Progress: both APIs accepted `step` more calls since `base` (4% more
    // messages are released for publishing first, so there is traffic).
    let progressed = |what: String, base: u64| {
        let (user, log) = (user.clone(), log.clone());
        release(4);
        async move {
            let t = Instant::now();
            wait_for(&what, Duration::from_secs(120), || {
                let done = user.ok_count().min(log.ok_count()) >= base + step;
                async move { done }
            })
            .await;
            println!("  {what}: {}", elapsed(t));
        }
    };
    let ok_now = || user.ok_count().min(log.ok_count());

    progressed("traffic flows".into(), 0).await;

    // 1. kill -9 the node leading the inbound queue, then start it again.
    let leader = cluster.leader(&queue).await;
    println!("[{}] kill -9 {leader} (leads {queue})", elapsed(started));
    release(8);
    script(&["kill", &leader]).await;
    let t = Instant::now();
    wait_for("a new leader", Duration::from_secs(60), || async {
        let out = tokio::process::Command::new("bash")
            .args([SCRIPT, "leader", &queue])
            .output()
            .await
            .unwrap();
        let now = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        out.status.success() && !now.is_empty() && now != leader
    })
    .await;
    println!(
        "  new leader {} after {}",
        cluster.leader(&queue).await,
        elapsed(t)
    );
    progressed(format!("progress without {leader}"), ok_now()).await;
    release(8);
    script(&["start", &leader]).await;
    println!("[{}] {leader} back in the cluster", elapsed(started));
    progressed(format!("progress after {leader} is back"), ok_now()).await;

    // 2. Stop another node gracefully (the current leader if it is not the
    //    one just killed), then start it again.
    let current = cluster.leader(&queue).await;
    let other = if current != leader {
        current
    } else {
        ["c1@localhost", "c2@localhost", "c3@localhost"]
            .into_iter()
            .find(|c| *c != leader)
            .unwrap()
            .to_owned()
    };
    println!("[{}] graceful stop of {other}", elapsed(started));
    release(8);
    script(&["stop", &other]).await;
    progressed(format!("progress without {other}"), ok_now()).await;
    release(8);
    script(&["start", &other]).await;
    println!("[{}] {other} back in the cluster", elapsed(started));
    progressed(format!("progress after {other} is back"), ok_now()).await;

    // 3. SIGKILL a worker and start a replacement.
    println!("[{}] SIGKILL worker-0", elapsed(started));
    release(8);
    workers[0].sigkill();
    let mut replacement = Worker::spawn("worker-3", &vars(3), &log_dir);
    replacement.wait_ready().await;
    workers.push(replacement);
    progressed("progress after the worker was replaced".into(), ok_now()).await;
    println!("[{}] faults done", elapsed(started));

    // The rest at full speed, then drain.
    allowed.store(n, Ordering::Relaxed);
    let stats = tokio::time::timeout(Duration::from_secs(600), publisher)
        .await
        .expect("publishing finished")
        .expect("publisher did not panic");
    println!(
        "[{}] published {} messages: {} publishes, {} connections",
        elapsed(started),
        stats.confirmed,
        stats.attempts,
        stats.reconnects
    );

    // Drain: take the DLQ's messages as they arrive until every id is
    // accounted for (both APIs accepted it, or it is in the DLQ).
    let ids: Vec<String> = (0..n).map(|i| format!("m-{i}")).collect();
    let mut node = 0usize;
    let mut conn = connect_any(&urls, &mut node).await;
    let mut channel = conn.create_channel().await.unwrap();
    let mut dead: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut dead_copies = 0usize;
    let deadline = Instant::now() + Duration::from_secs(300);
    let missing = loop {
        loop {
            let m = match channel
                .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
                .await
            {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    // (A basic.get while a quorum queue has no leader closes
                    // the connection on RabbitMQ 3.10.)
                    println!("  basic.get on the DLQ failed ({e}): reconnecting");
                    node += 1;
                    conn = connect_any(&urls, &mut node).await;
                    channel = conn.create_channel().await.unwrap();
                    break;
                }
            };
            let d = m.delivery;
            let id = d
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            let headers = d.properties.headers().as_ref();
            let text = |k: &str| {
                fanout_bridge::broker::fields::header_text(headers, k)
                    .map(|c| c.into_owned())
                    .unwrap_or_default()
            };
            dead_copies += 1;
            dead.insert(
                id,
                (text("x-bridge-reason"), text("x-bridge-failed-targets")),
            );
        }
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| !(dead.contains_key(*id) || (user.accepted(id) && log.accepted(id))))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        missing.is_empty(),
        "{} message(s) lost (neither accepted by both APIs nor in the DLQ), e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );

    // Nothing left behind: no worker holds a message, the queue is empty.
    for w in workers.iter().skip(1) {
        wait_for(
            &format!("{} has nothing in flight", w.name),
            Duration::from_secs(60),
            || async { w.metric("bridge_messages_in_flight").await == Some(0.0) },
        )
        .await;
    }
    let depth = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the inbound queue exists")
        .message_count();
    assert_eq!(depth, 0, "messages left in the inbound queue");
    let _ = conn.close(200, "".into()).await;

    // Every dead-lettered message says why.
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (id, (reason, failed)) in &dead {
        assert!(
            !reason.is_empty(),
            "{id} is in the DLQ without x-bridge-reason"
        );
        if reason == "api_failed" {
            assert!(!failed.is_empty(), "{id}: api_failed with no failed target");
        }
        *reasons.entry(reason.clone()).or_default() += 1;
    }

    // Report: duplicates are counted, not limited.
    let (u, l) = (user.snapshot(), log.snapshot());
    let known: HashSet<&String> = ids.iter().collect();
    let strays: Vec<&String> = u
        .keys()
        .chain(l.keys())
        .filter(|k| !known.contains(k))
        .collect();
    assert!(
        strays.is_empty(),
        "calls for unknown message ids: {strays:?}"
    );
    let dup = |m: &HashMap<String, Vec<u16>>| -> usize {
        m.values()
            .map(|s| s.iter().filter(|&&c| c < 300).count().saturating_sub(1))
            .sum()
    };
    let calls = |m: &HashMap<String, Vec<u16>>| -> usize { m.values().map(Vec::len).sum() };
    let failures = |m: &HashMap<String, Vec<u16>>| -> usize {
        m.values().flatten().filter(|&&c| c >= 300).count()
    };
    let acked = ids
        .iter()
        .filter(|id| user.accepted(id) && log.accepted(id))
        .count();
    let acked_only = ids
        .iter()
        .filter(|id| user.accepted(id) && log.accepted(id) && !dead.contains_key(*id))
        .count();

    let mut nodes = Vec::new();
    for w in workers.iter().skip(1) {
        let text = match w.ops {
            Some(a) => reqwest::get(format!("http://{a}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            None => String::new(),
        };
        let node = text
            .lines()
            .find(|l| l.starts_with("bridge_broker_node_info{"))
            .and_then(|l| l.split('"').nth(1))
            .unwrap_or("?")
            .to_owned();
        let lost = w.log_text().matches("broker session lost").count();
        nodes.push(format!("{} on {node} ({lost} sessions lost)", w.name));
    }
    for w in workers.iter_mut().skip(1) {
        let code = w.sigterm().await;
        assert_eq!(
            code,
            Some(0),
            "{} exit code; log:\n{}",
            w.name,
            w.log_text()
        );
    }
    println!("== cluster test: {n} messages, 3 nodes, 3 worker replicas (+1 replacement)");
    println!("   accepted by both APIs: {acked} ({acked_only} of them not in the DLQ)");
    println!(
        "   dead-lettered: {} messages ({dead_copies} DLQ copies), reasons {reasons:?}",
        dead.len()
    );
    println!(
        "   API calls: user-management {} ({} x 503), logging {} ({} x 503)",
        calls(&u),
        failures(&u),
        calls(&l),
        failures(&l)
    );
    println!(
        "   duplicate API calls (a 2xx beyond the first for a message): user-management {}, logging {}, total {}",
        dup(&u),
        dup(&l),
        dup(&u) + dup(&l)
    );
    println!("   workers at the end: {}", nodes.join(", "));
    println!(
        "   publisher: {} publishes for {n} messages, {} connections",
        stats.attempts, stats.reconnects
    );
    println!("   run time: {}", elapsed(started));
    drop(workers);
    drop(logs);
    drop(cluster);
}
