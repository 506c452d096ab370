//! End-to-end throughput benchmark against the real local broker (issue 5).
//!
//! `cargo bench --bench pipeline` runs, in one go and interleaved over
//! `BENCH_ROUNDS` rounds:
//!
//! 1. **ceiling** — N pre-filled persistent messages consumed by a bare lapin
//!    consumer in this process (same prefetch, one manual ack per message, no
//!    HTTP): first delivery → last ack.
//! 2. **fast APIs** — the real `fanout-bridge run` (a child process) against a
//!    `fanout-bridge demo-api --latency-ms 0` child: readyz → all N acked.
//! 3. **20 ms APIs** — the same against `demo-api --latency-ms 20`, once per
//!    prefetch of `BENCH_PREFETCH_SWEEP`; the bound is prefetch / 0.020 s.
//!    For reference, the bare consumer again, holding each message 20 ms (a
//!    tokio sleep, like the stand-in's) before its ack: what a worker whose
//!    own work costs nothing reaches.
//!
//! then one short extra run per worker scenario at `RUST_LOG=info` with JSON
//! logs, to read each message's `total_ms` (delivery → settled) from the
//! worker's "message settled" lines for p50/p99.
//!
//! Environment: `BENCH_MESSAGES` (20000), `BENCH_ROUNDS` (3), `BENCH_PREFETCH`
//! (64), `BENCH_PREFETCH_SWEEP` ("16,64,256"), `BENCH_SLOW_SECONDS` (8: a
//! 20 ms run uses at most bound × this many messages), `BENCH_LATENCY_MESSAGES`
//! (5000), `BENCH_AMQP_URL` (guest on 127.0.0.1:5672), `BENCH_KEEP_LOGS` (set:
//! keep the children's logs), `BENCH_SEPARATE_APIS` (1: one stand-in process
//! per API instead of one serving both paths).
//!
//! Every queue is fresh (`bench.pipeline.<random>`) and deleted after its run
//! and again at the end, also after an error or a panic; every child process
//! is stopped by a drop guard.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use futures::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm,
};

type Res<T> = Result<T, String>;

const BIN: &str = env!("CARGO_BIN_EXE_fanout-bridge");
/// How often the worker's `/metrics` is read while it drains the queue.
const POLL: Duration = Duration::from_millis(25);
/// A run with no progress for this long is abandoned.
const STALL: Duration = Duration::from_secs(30);
/// Publisher confirms outstanding while pre-filling.
const CONFIRM_WINDOW: usize = 2000;

/// Queues created by this process and not yet deleted.
static QUEUES: Mutex<Vec<String>> = Mutex::new(Vec::new());

// ---------------------------------------------------------------- settings

struct Cfg {
    messages: usize,
    rounds: usize,
    prefetch: u16,
    sweep: Vec<u16>,
    slow_seconds: f64,
    latency_messages: usize,
    separate_apis: bool,
    amqp: String,
    out_dir: PathBuf,
    clk_tck: f64,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
        Err(_) => default,
    }
}

impl Cfg {
    fn from_env() -> Cfg {
        let prefetch: u16 = env_num("BENCH_PREFETCH", 64);
        let mut sweep: Vec<u16> = std::env::var("BENCH_PREFETCH_SWEEP")
            .unwrap_or_else(|_| "16,64,256".into())
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("BENCH_PREFETCH_SWEEP: {s:?} is not a number"))
            })
            .collect();
        sweep.sort_unstable();
        sweep.dedup();
        assert!(
            prefetch >= 1 && sweep.iter().all(|&p| p >= 1),
            "prefetch must be ≥ 1"
        );
        let clk_tck = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0);
        Cfg {
            messages: env_num("BENCH_MESSAGES", 20_000),
            rounds: env_num("BENCH_ROUNDS", 3),
            prefetch,
            sweep,
            slow_seconds: env_num("BENCH_SLOW_SECONDS", 8.0),
            latency_messages: env_num("BENCH_LATENCY_MESSAGES", 5_000),
            separate_apis: std::env::var("BENCH_SEPARATE_APIS").is_ok_and(|v| v == "1"),
            amqp: std::env::var("BENCH_AMQP_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            out_dir: std::env::temp_dir()
                .join(format!("fanout-bridge-bench-{}", std::process::id())),
            clk_tck,
        }
    }

    /// Messages for a 20 ms run: enough for `slow_seconds` at the bound.
    fn slow_messages(&self, prefetch: u16) -> usize {
        let at_bound = (bound(prefetch) * self.slow_seconds).ceil() as usize;
        self.messages.min(at_bound.max(1000))
    }
}

fn bound(prefetch: u16) -> f64 {
    f64::from(prefetch) / 0.020
}

// ---------------------------------------------------------------- /proc

/// utime + stime of a whole process (all threads), in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Sum of `cpu_ticks` over several processes.
fn cpu_ticks_all(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| cpu_ticks(p)).sum()
}

/// Busy ticks of the whole machine (all CPUs), from /proc/stat.
fn machine_busy_ticks() -> u64 {
    let s = fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().next().unwrap_or_default();
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    total.saturating_sub(v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0))
}

/// Peak resident set size in KiB (VmHWM).
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The broker's processes (beam.smp), for the CPU split.
fn broker_pids() -> Vec<u32> {
    let mut pids = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "beam.smp")
            {
                pids.push(pid);
            }
        }
    }
    pids
}

/// CPU use of each party over a measured window.
#[derive(Clone, Copy, Default)]
struct Split {
    worker: u64,
    api: u64,
    broker: u64,
    bench: u64,
    machine: u64,
}

#[derive(Clone)]
struct SplitProbe {
    worker: Option<u32>,
    api: Vec<u32>,
    broker: Vec<u32>,
}

impl SplitProbe {
    fn read(&self) -> Split {
        Split {
            worker: self.worker.and_then(cpu_ticks).unwrap_or(0),
            api: cpu_ticks_all(&self.api),
            broker: cpu_ticks_all(&self.broker),
            bench: cpu_ticks(std::process::id()).unwrap_or(0),
            machine: machine_busy_ticks(),
        }
    }
}

impl std::ops::Sub for Split {
    type Output = Split;
    fn sub(self, o: Split) -> Split {
        Split {
            worker: self.worker.saturating_sub(o.worker),
            api: self.api.saturating_sub(o.api),
            broker: self.broker.saturating_sub(o.broker),
            bench: self.bench.saturating_sub(o.bench),
            machine: self.machine.saturating_sub(o.machine),
        }
    }
}

// ---------------------------------------------------------------- children

/// Stops a child on drop: SIGTERM, up to 10 s to exit, then SIGKILL.
struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    fn spawn(name: &str, cmd: &mut Command) -> Res<ChildGuard> {
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({BIN}): {e}"))?;
        Ok(ChildGuard {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM and wait; returns the exit status if it exited in time.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "  {} did not stop on SIGTERM within 10 s; killing it",
            self.name
        );
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

/// A tiny HTTP/1.1 GET on loopback: (status, whole response text).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

fn wait_http_ok(
    port: u16,
    path: &str,
    every: Duration,
    limit: Duration,
    child: &mut ChildGuard,
    log: &Path,
) -> Res<()> {
    let deadline = Instant::now() + limit;
    loop {
        if matches!(http_get(port, path), Ok((200, _))) {
            return Ok(());
        }
        if let Some(status) = child.exited() {
            return Err(format!(
                "{} exited ({status}) before {path} answered 200:\n{}",
                child.name,
                tail(log)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not answer 200 on {path} within {limit:?}:\n{}",
                child.name,
                tail(log)
            ));
        }
        std::thread::sleep(every);
    }
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A worker metric value (`bridge_messages_total{outcome="…"}`).
fn metric(text: &str, outcome: &str) -> u64 {
    let key = format!("bridge_messages_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A plain (unlabelled) metric value, e.g. `bridge_messages_in_flight`.
fn gauge(text: &str, name: &str) -> Option<f64> {
    let key = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// TCP connections opened by this machine so far (`ActiveOpens`).
fn tcp_active_opens() -> u64 {
    let s = fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = s.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ActiveOpens")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The stand-ins of one latency: one process serving both paths, or (with
/// `BENCH_SEPARATE_APIS=1`) one per API, as two real APIs would be.
struct Apis {
    user: (ChildGuard, u16),
    log: Option<(ChildGuard, u16)>,
}

impl Apis {
    fn start(cfg: &Cfg, latency_ms: u64) -> Res<Apis> {
        Ok(Apis {
            user: start_demo_api(cfg, latency_ms, "users")?,
            log: if cfg.separate_apis {
                Some(start_demo_api(cfg, latency_ms, "logs")?)
            } else {
                None
            },
        })
    }
    fn urls(&self) -> (String, String) {
        let log_port = self.log.as_ref().map_or(self.user.1, |l| l.1);
        (
            format!("http://127.0.0.1:{}/users", self.user.1),
            format!("http://127.0.0.1:{log_port}/logs"),
        )
    }
    fn pids(&self) -> Vec<u32> {
        std::iter::once(self.user.0.pid())
            .chain(self.log.as_ref().map(|l| l.0.pid()))
            .collect()
    }
}

fn start_demo_api(cfg: &Cfg, latency_ms: u64, role: &str) -> Res<(ChildGuard, u16)> {
    let port = free_port();
    let log = cfg
        .out_dir
        .join(format!("demo-api-{latency_ms}ms-{role}.log"));
    let stderr = fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut guard = ChildGuard::spawn(
        &format!("demo-api ({latency_ms} ms)"),
        Command::new(BIN)
            .args([
                "demo-api",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--latency-ms",
                &latency_ms.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr),
    )?;
    wait_http_ok(
        port,
        "/healthz",
        Duration::from_millis(20),
        Duration::from_secs(15),
        &mut guard,
        &log,
    )?;
    Ok((guard, port))
}

// ---------------------------------------------------------------- broker

fn body(i: usize) -> Vec<u8> {
    // ≈150 bytes, a typical registration event.
    format!(
        "{{\"user_id\":{i},\"email\":\"user{i:07}@example.com\",\"name\":\"Bench User {i:07}\",\
         \"plan\":\"pro\",\"locale\":\"en-GB\",\"signup_at\":\"2024-05-01T12:00:00Z\",\"source\":\"bench\"}}"
    )
    .into_bytes()
}

async fn connect(amqp: &str, role: &str) -> Res<Connection> {
    Connection::connect(
        amqp,
        ConnectionProperties::default()
            .with_connection_name(format!("fanout-bridge bench {role}").into()),
    )
    .await
    .map_err(|e| format!("connecting to {amqp}: {e}"))
}

/// A fresh queue name, remembered for the final cleanup.
fn fresh_queue(kind: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("bench.pipeline.{kind}.{}", &id[..12]);
    QUEUES.lock().unwrap().push(name.clone());
    name
}

/// Declared the way the worker declares it: durable, classic, no arguments.
async fn declare(ch: &Channel, queue: &str) -> Res<u32> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|q| q.message_count())
    .map_err(|e| format!("declaring {queue}: {e}"))
}

/// Publishes `n` persistent messages with confirms, and checks the depth.
async fn prefill(amqp: &str, queue: &str, n: usize) -> Res<()> {
    let conn = connect(amqp, "prefill").await?;
    let result = async {
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        declare(&ch, queue).await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut pending: std::collections::VecDeque<PublisherConfirm> = Default::default();
        let check = |c: Result<Confirmation, lapin::Error>| match c {
            Ok(Confirmation::Ack(None)) => Ok(()),
            other => Err(format!("pre-fill publish not confirmed: {other:?}")),
        };
        for i in 0..n {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(uuid::Uuid::new_v4().to_string().into());
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body(i),
                    props,
                )
                .await
                .map_err(|e| format!("publishing: {e}"))?;
            pending.push_back(confirm);
            if pending.len() >= CONFIRM_WINDOW {
                check(pending.pop_front().unwrap().await)?;
            }
        }
        while let Some(c) = pending.pop_front() {
            check(c.await)?;
        }
        let depth = declare(&ch, queue).await?;
        if depth as usize != n {
            return Err(format!(
                "{queue} holds {depth} messages after pre-filling {n}"
            ));
        }
        let _ = ch.close(200, "done".into()).await;
        Ok(())
    }
    .await;
    let _ = conn.close(200, "done".into()).await;
    result
}

/// Deletes the given queues (or all remembered ones), each on its own channel
/// so one failure does not stop the others.
async fn delete_queues(amqp: &str, names: Option<&[String]>) {
    let names: Vec<String> = match names {
        Some(n) => n.to_vec(),
        None => QUEUES.lock().unwrap().clone(),
    };
    if names.is_empty() {
        return;
    }
    let Ok(conn) = connect(amqp, "cleanup").await else {
        eprintln!("cleanup: cannot connect; queues left behind: {names:?}");
        return;
    };
    for q in &names {
        let deleted = match conn.create_channel().await {
            Ok(ch) => {
                let r = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
                let _ = ch.close(200, "done".into()).await;
                r.is_ok()
            }
            Err(_) => false,
        };
        if deleted {
            QUEUES.lock().unwrap().retain(|x| x != q);
        } else {
            eprintln!("cleanup: could not delete queue {q}");
        }
    }
    let _ = conn.close(200, "done".into()).await;
}

// ---------------------------------------------------------------- runs

/// One measured run.
#[derive(Clone, Default)]
struct Run {
    messages: usize,
    seconds: f64,
    /// CPU ticks of the process under test (bench for the ceiling, worker
    /// otherwise) and of the others, over the window.
    split: Split,
    rss_kib: Option<u64>,
    /// Latency samples (ms, 0.1 ms resolution), latency runs only.
    total_ms: Vec<f64>,
    /// Mean of `bridge_messages_in_flight` while the queue still had work
    /// (the first 90 % of the messages).
    in_flight: Option<f64>,
    /// TCP connections opened on the machine over the window, the
    /// benchmark's own `/metrics` polls excluded.
    tcp_opens: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds
    }
}

/// A bare lapin consumer over `n` pre-filled messages. Without `hold`, each
/// delivery is acked at once, in the consuming loop. With `hold`, each
/// delivery gets a task that sleeps that long, then acks: a worker whose work
/// costs nothing but takes `hold`, the practical Little's-law bound.
async fn ceiling_run(
    cfg: &Cfg,
    broker: &[u32],
    prefetch: u16,
    n: usize,
    hold: Option<Duration>,
) -> Res<Run> {
    let queue = fresh_queue("ceiling");
    let result = async {
        prefill(&cfg.amqp, &queue, n).await?;
        let conn = connect(&cfg.amqp, "ceiling consumer").await?;
        let result = async {
            let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
            ch.basic_qos(prefetch, BasicQosOptions { global: false })
                .await
                .map_err(|e| e.to_string())?;
            let mut consumer = ch
                .basic_consume(
                    queue.as_str().into(),
                    "bench-ceiling".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| e.to_string())?;
            let probe = SplitProbe {
                worker: None,
                api: Vec::new(),
                broker: broker.to_vec(),
            };
            let mut start = None;
            let mut acked = 0;
            let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
            // Sum of delivery → ack times, for the mean messages in flight.
            let mut held = Duration::ZERO;
            while acked < n {
                let next = tokio::select! {
                    d = consumer.next() => Some(d),
                    Some(r) = done_rx.recv() => {
                        let took: Duration = r?;
                        held += took;
                        acked += 1;
                        None
                    }
                    () = tokio::time::sleep(STALL) => return Err(format!("stalled at {acked}/{n}")),
                };
                let Some(d) = next else { continue };
                let d = match d {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => return Err(format!("consumer: {e}")),
                    None => return Err("consumer ended".into()),
                };
                if start.is_none() {
                    start = Some((Instant::now(), probe.read()));
                }
                match hold {
                    None => {
                        d.acker
                            .ack(BasicAckOptions::default())
                            .await
                            .map_err(|e| format!("ack: {e}"))?;
                        acked += 1;
                    }
                    Some(hold) => {
                        let done = done_tx.clone();
                        tokio::spawn(async move {
                            let began = Instant::now();
                            tokio::time::sleep(hold).await;
                            let r = d
                                .acker
                                .ack(BasicAckOptions::default())
                                .await
                                .map(|_| began.elapsed())
                                .map_err(|e| format!("ack: {e}"));
                            let _ = done.send(r);
                        });
                    }
                }
            }
            let (t0, s0) = start.unwrap();
            let seconds = t0.elapsed().as_secs_f64();
            let split = probe.read() - s0;
            let _ = ch.close(200, "done".into()).await;
            Ok(Run {
                messages: n,
                seconds,
                split,
                in_flight: hold.map(|_| held.as_secs_f64() / seconds),
                ..Run::default()
            })
        }
        .await;
        let _ = conn.close(200, "done".into()).await;
        result
    }
    .await;
    delete_queues(&cfg.amqp, Some(std::slice::from_ref(&queue))).await;
    result
}

/// One `fanout-bridge run` over `n` pre-filled messages.
fn worker_run(
    cfg: &Cfg,
    rt: &tokio::runtime::Runtime,
    apis: &Apis,
    prefetch: u16,
    n: usize,
    broker: &[u32],
    latency: bool,
) -> Res<Run> {
    let queue = fresh_queue("in");
    let dlq = format!("{queue}.dlq");
    QUEUES.lock().unwrap().push(dlq.clone());
    let result = (|| {
        rt.block_on(prefill(&cfg.amqp, &queue, n))?;
        let metrics_port = free_port();
        let log = cfg.out_dir.join(format!("{queue}.log"));
        let stderr = fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(BIN);
        cmd.arg("run");
        for (k, _) in std::env::vars() {
            if k.starts_with("BRIDGE_") {
                cmd.env_remove(k);
            }
        }
        let (user_url, log_url) = apis.urls();
        cmd.env("BRIDGE_AMQP_URL", &cfg.amqp)
            .env("BRIDGE_QUEUE", &queue)
            .env("BRIDGE_DLQ", &dlq)
            .env("BRIDGE_USER_API_URL", user_url)
            .env("BRIDGE_LOG_API_URL", log_url)
            .env("BRIDGE_PREFETCH", prefetch.to_string())
            .env("BRIDGE_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("BRIDGE_SHUTDOWN_GRACE_MS", "5000")
            .env("RUST_LOG", if latency { "info" } else { "warn" })
            .env("BRIDGE_LOG_FORMAT", if latency { "json" } else { "text" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut worker = ChildGuard::spawn("worker", &mut cmd)?;
        wait_http_ok(
            metrics_port,
            "/readyz",
            Duration::from_millis(5),
            Duration::from_secs(30),
            &mut worker,
            &log,
        )?;
        let probe = SplitProbe {
            worker: Some(worker.pid()),
            api: apis.pids(),
            broker: broker.to_vec(),
        };
        let t0 = Instant::now();
        let s0 = probe.read();
        let opens0 = tcp_active_opens();
        let mut polls = 0u64;
        let (mut in_flight_sum, mut in_flight_samples) = (0.0, 0u32);
        let (mut last, mut last_change) = (0u64, Instant::now());
        let (seconds, split, tcp_opens) = loop {
            std::thread::sleep(POLL);
            polls += 1;
            let text = match http_get(metrics_port, "/metrics") {
                Ok((200, t)) => t,
                _ => String::new(),
            };
            let settled = metric(&text, "acked") + metric(&text, "dead_lettered");
            if settled * 10 < n as u64 * 9 {
                if let Some(v) = gauge(&text, "bridge_messages_in_flight") {
                    in_flight_sum += v;
                    in_flight_samples += 1;
                }
            }
            if settled >= n as u64 {
                let seconds = t0.elapsed().as_secs_f64();
                let split = probe.read() - s0;
                let tcp_opens = tcp_active_opens().saturating_sub(opens0 + polls);
                let dead = metric(&text, "dead_lettered");
                if dead > 0 {
                    return Err(format!(
                        "{dead} of {n} messages were dead-lettered (see {})",
                        log.display()
                    ));
                }
                break (seconds, split, tcp_opens);
            }
            if settled != last {
                (last, last_change) = (settled, Instant::now());
            } else if last_change.elapsed() > STALL {
                return Err(format!("worker stalled at {settled}/{n}:\n{}", tail(&log)));
            }
            if let Some(status) = worker.exited() {
                return Err(format!(
                    "worker exited ({status}) at {settled}/{n}:\n{}",
                    tail(&log)
                ));
            }
        };
        let rss_kib = vm_hwm_kib(worker.pid());
        match worker.stop() {
            Some(s) if s.success() => {}
            other => eprintln!("  worker did not exit cleanly: {other:?}"),
        }
        let total_ms = if latency {
            settled_latencies(&log)
        } else {
            Vec::new()
        };
        if latency && total_ms.len() < n {
            eprintln!(
                "  only {} of {n} \"message settled\" lines in {}",
                total_ms.len(),
                log.display()
            );
        }
        Ok(Run {
            messages: n,
            seconds,
            split,
            rss_kib,
            total_ms,
            in_flight: (in_flight_samples > 0)
                .then(|| in_flight_sum / f64::from(in_flight_samples)),
            tcp_opens,
        })
    })();
    rt.block_on(delete_queues(&cfg.amqp, Some(&[queue, dlq])));
    result
}

/// `total_ms` of every "message settled" line of a JSON log.
fn settled_latencies(log: &Path) -> Vec<f64> {
    let Ok(f) = fs::File::open(log) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .filter(|v| v["message"] == "message settled")
        .filter_map(|v| v["total_ms"].as_f64())
        .collect()
}

// ---------------------------------------------------------------- report

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ceiling,
    /// The bare consumer holding each message 20 ms (sleep) before its ack.
    Ceiling20,
    Fast,
    Slow,
}

struct Scenario {
    kind: Kind,
    prefetch: u16,
    messages: usize,
    runs: Vec<Run>,
    errors: Vec<String>,
    latency: Option<Run>,
}

impl Scenario {
    fn name(&self) -> String {
        match self.kind {
            Kind::Ceiling => "ceiling: bare lapin, ack only".into(),
            Kind::Ceiling20 => "bare lapin, sleep 20 ms, ack".into(),
            Kind::Fast => "bridge, APIs answer at once".into(),
            Kind::Slow => "bridge, APIs answer in 20 ms".into(),
        }
    }
    fn rates(&self) -> Vec<f64> {
        sorted(self.runs.iter().map(Run::rate).collect())
    }
    /// CPU s per 1,000 messages of the process under test, per run.
    fn cpu_per_k(&self, clk: f64) -> Vec<f64> {
        sorted(
            self.runs
                .iter()
                .map(|r| {
                    let t = if matches!(self.kind, Kind::Ceiling | Kind::Ceiling20) {
                        r.split.bench
                    } else {
                        r.split.worker
                    };
                    t as f64 / clk / r.messages as f64 * 1000.0
                })
                .collect(),
        )
    }
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mmm(v: &[f64], prec: usize) -> String {
    if v.is_empty() {
        return "–".into();
    }
    format!(
        "{:.p$} / {:.p$} / {:.p$}",
        v[0],
        median(v),
        v[v.len() - 1],
        p = prec
    )
}

fn report(cfg: &Cfg, scenarios: &[Scenario]) {
    let clk = cfg.clk_tck;
    let ceiling = &scenarios[0];
    // Per-round ratio to the ceiling of the same round (interleaved runs).
    let ceiling_rates: Vec<Option<f64>> = ceiling.runs.iter().map(|r| Some(r.rate())).collect();
    let ceiling_cpu = median(&ceiling.cpu_per_k(clk));
    println!();
    println!(
        "fanout-bridge pipeline benchmark — {} rounds, {} cores, prefetch {} (sweep {:?}), message ≈{} B persistent",
        cfg.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cfg.prefetch,
        cfg.sweep,
        body(0).len()
    );
    println!("msg/s as min / median / max over rounds; ratio = median of per-round ratios (ceiling: same round)");
    println!(
        "stand-in APIs: {}",
        if cfg.separate_apis {
            "one demo-api process per API (BENCH_SEPARATE_APIS=1)"
        } else {
            "one demo-api process serving /users and /logs on one port"
        }
    );
    println!();
    println!(
        "{:<30} {:>4} {:>6} {:>23} {:>16} {:>8} {:>7} {:>9}  target",
        "scenario", "pf", "msgs", "msg/s min/med/max", "ratio", "CPU s/1k", "RSS MiB", "p50/p99ms"
    );
    for s in scenarios {
        let rates = s.rates();
        let (ratio, target) = match s.kind {
            Kind::Ceiling => ("1.00 (ceiling)".to_string(), String::new()),
            Kind::Fast => {
                let r: Vec<f64> = sorted(
                    s.runs
                        .iter()
                        .zip(&ceiling_rates)
                        .filter_map(|(run, c)| c.map(|c| run.rate() / c))
                        .collect(),
                );
                (
                    format!("{:.2} × ceiling", median(&r)),
                    format!(
                        "≥ 0.60 × ceiling; CPU ≤ 2 × {ceiling_cpu:.3} = {:.3}; RSS ≤ 32",
                        2.0 * ceiling_cpu
                    ),
                )
            }
            Kind::Ceiling20 => {
                let b = bound(s.prefetch);
                (
                    format!("{:.2} × {:.0}", median(&rates) / b, b),
                    "(what a zero-cost worker reaches)".to_string(),
                )
            }
            Kind::Slow => {
                let b = bound(s.prefetch);
                (
                    format!("{:.2} × {:.0}", median(&rates) / b, b),
                    if s.prefetch == 64 {
                        "≥ 0.90 × bound = 2880 msg/s; RSS ≤ 32".into()
                    } else {
                        format!("(bound {b:.0})")
                    },
                )
            }
        };
        let cpu = s.cpu_per_k(clk);
        let rss = s
            .runs
            .iter()
            .filter_map(|r| r.rss_kib)
            .max()
            .map_or("–".into(), |k| format!("{:.1}", k as f64 / 1024.0));
        let lat = s.latency.as_ref().map_or("–".into(), |l| {
            let v = sorted(l.total_ms.clone());
            format!("{:.1}/{:.1}", percentile(&v, 0.50), percentile(&v, 0.99))
        });
        println!(
            "{:<30} {:>4} {:>6} {:>23} {:>16} {:>8} {:>7} {:>9}  {}",
            s.name(),
            s.prefetch,
            s.messages,
            mmm(&rates, 0),
            ratio,
            if cpu.is_empty() {
                "–".into()
            } else {
                format!("{:.3}", median(&cpu))
            },
            rss,
            lat,
            target
        );
        for e in &s.errors {
            println!("    failed run: {}", e.lines().next().unwrap_or_default());
        }
    }

    println!();
    println!(
        "CPU split over the measured window (cores busy, median over rounds; the machine has 2), \
         mean messages in flight in the worker, TCP connections opened per 1,000 messages:"
    );
    println!(
        "{:<30} {:>4} {:>7} {:>8} {:>7} {:>7} {:>7} {:>8} {:>9} {:>8}",
        "scenario",
        "pf",
        "worker",
        "demo-api",
        "broker",
        "bench",
        "other",
        "machine",
        "in-flight",
        "conn/1k"
    );
    for s in scenarios {
        let cores = |f: &dyn Fn(&Run) -> u64| -> f64 {
            median(&sorted(
                s.runs
                    .iter()
                    .map(|r| f(r) as f64 / clk / r.seconds)
                    .collect(),
            ))
        };
        let other = |r: &Run| {
            let x = r.split;
            x.machine
                .saturating_sub(x.worker + x.api + x.broker + x.bench)
        };
        let in_flight = median(&sorted(s.runs.iter().filter_map(|r| r.in_flight).collect()));
        let conns = median(&sorted(
            s.runs
                .iter()
                .map(|r| r.tcp_opens as f64 * 1000.0 / r.messages as f64)
                .collect(),
        ));
        let na = |v: f64, p: usize| {
            if v.is_nan() || s.kind == Kind::Ceiling {
                "–".to_string()
            } else {
                format!("{v:.p$}")
            }
        };
        println!(
            "{:<30} {:>4} {:>7.2} {:>8.2} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>9} {:>8}",
            s.name(),
            s.prefetch,
            cores(&|r| r.split.worker),
            cores(&|r| r.split.api),
            cores(&|r| r.split.broker),
            cores(&|r| r.split.bench),
            cores(&other),
            cores(&|r| r.split.machine),
            na(in_flight, 1),
            na(conns, 1),
        );
    }

    let noisy: Vec<String> = scenarios
        .iter()
        .filter_map(|s| {
            let other = median(&sorted(
                s.runs
                    .iter()
                    .map(|r| {
                        let x = r.split;
                        x.machine
                            .saturating_sub(x.worker + x.api + x.broker + x.bench)
                            as f64
                            / clk
                            / r.seconds
                    })
                    .collect(),
            ));
            (other > 0.25).then(|| format!("{} pf {} ({other:.2} cores)", s.name(), s.prefetch))
        })
        .collect();
    if !noisy.is_empty() {
        println!(
            "WARNING: processes outside the benchmark used CPU during: {}; those numbers are depressed, run again on a quiet machine",
            noisy.join(", ")
        );
    }

    println!();
    println!(
        "Latency (delivery → ack, from the worker's own `total_ms`, 0.1 ms resolution): one extra run per scenario \
         at RUST_LOG=info with JSON logs ({} msgs); its throughput includes the cost of logging:",
        cfg.latency_messages
    );
    for s in scenarios
        .iter()
        .filter(|s| matches!(s.kind, Kind::Fast | Kind::Slow))
    {
        if let Some(l) = &s.latency {
            let v = sorted(l.total_ms.clone());
            println!(
                "  {:<30} pf {:>4}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} lines; {:.0} msg/s, {:.3} CPU s/1k at info",
                s.name(),
                s.prefetch,
                percentile(&v, 0.50),
                percentile(&v, 0.90),
                percentile(&v, 0.99),
                v.last().copied().unwrap_or(f64::NAN),
                v.len(),
                l.rate(),
                l.split.worker as f64 / clk / l.messages as f64 * 1000.0
            );
        }
    }

    // Verdicts.
    println!();
    println!("Targets (issue 5):");
    let verdict = |ok: bool| if ok { "MET " } else { "MISSED" };
    if let Some(fast) = scenarios.iter().find(|s| s.kind == Kind::Fast) {
        let r: Vec<f64> = sorted(
            fast.runs
                .iter()
                .zip(&ceiling_rates)
                .filter_map(|(run, c)| c.map(|c| run.rate() / c))
                .collect(),
        );
        let ratio = median(&r);
        println!(
            "  [{}] fast APIs ≥ 0.60 × ceiling: {:.2} × (median {:.0} vs {:.0} msg/s)",
            verdict(ratio >= 0.6),
            ratio,
            median(&fast.rates()),
            median(&ceiling.rates())
        );
        let cpu = median(&fast.cpu_per_k(clk));
        println!(
            "  [{}] worker CPU per message ≤ 2 × ceiling's: {:.3} vs {:.3} CPU s/1k ({:.2} ×)",
            verdict(cpu <= 2.0 * ceiling_cpu),
            cpu,
            ceiling_cpu,
            cpu / ceiling_cpu
        );
    }
    if let Some(slow) = scenarios
        .iter()
        .find(|s| s.kind == Kind::Slow && s.prefetch == 64)
    {
        let rate = median(&slow.rates());
        println!(
            "  [{}] 20 ms APIs at prefetch 64 ≥ 2880 msg/s: {:.0} msg/s ({:.2} × bound 3200)",
            verdict(rate >= 2880.0),
            rate,
            rate / 3200.0
        );
        if let Some(bare) = scenarios
            .iter()
            .find(|s| s.kind == Kind::Ceiling20 && s.prefetch == 64 && !s.runs.is_empty())
        {
            let bare_rate = median(&bare.rates());
            println!(
                "         for reference: a zero-cost consumer that holds each message 20 ms reaches {:.0} msg/s \
                 ({:.2} × bound); the bridge reaches {:.2} of that",
                bare_rate,
                bare_rate / 3200.0,
                rate / bare_rate
            );
        }
    }
    let rss = scenarios
        .iter()
        .filter(|s| s.kind != Kind::Ceiling && s.prefetch == 64)
        .flat_map(|s| s.runs.iter().filter_map(|r| r.rss_kib))
        .max();
    if let Some(k) = rss {
        let mib = k as f64 / 1024.0;
        println!(
            "  [{}] peak RSS at prefetch 64 ≤ 32 MiB: {:.1} MiB",
            verdict(mib <= 32.0),
            mib
        );
    }
}

// ---------------------------------------------------------------- main

fn run(cfg: &Cfg, rt: &tokio::runtime::Runtime) -> Res<()> {
    fs::create_dir_all(&cfg.out_dir).map_err(|e| e.to_string())?;
    let broker = broker_pids();
    if broker.is_empty() {
        eprintln!("note: no beam.smp process found; the broker column will read 0");
    }
    let fast_api = Apis::start(cfg, 0)?;
    let slow_api = Apis::start(cfg, 20)?;

    let mut scenarios = vec![Scenario {
        kind: Kind::Ceiling,
        prefetch: cfg.prefetch,
        messages: cfg.messages,
        runs: Vec::new(),
        errors: Vec::new(),
        latency: None,
    }];
    scenarios.push(Scenario {
        kind: Kind::Fast,
        prefetch: cfg.prefetch,
        messages: cfg.messages,
        runs: Vec::new(),
        errors: Vec::new(),
        latency: None,
    });
    scenarios.push(Scenario {
        kind: Kind::Ceiling20,
        prefetch: cfg.prefetch,
        messages: cfg.slow_messages(cfg.prefetch),
        runs: Vec::new(),
        errors: Vec::new(),
        latency: None,
    });
    for &p in &cfg.sweep {
        scenarios.push(Scenario {
            kind: Kind::Slow,
            prefetch: p,
            messages: cfg.slow_messages(p),
            runs: Vec::new(),
            errors: Vec::new(),
            latency: None,
        });
    }

    let started = Instant::now();
    for round in 1..=cfg.rounds {
        for s in scenarios.iter_mut() {
            let result = match s.kind {
                Kind::Ceiling => {
                    rt.block_on(ceiling_run(cfg, &broker, s.prefetch, s.messages, None))
                }
                Kind::Ceiling20 => rt.block_on(ceiling_run(
                    cfg,
                    &broker,
                    s.prefetch,
                    s.messages,
                    Some(Duration::from_millis(20)),
                )),
                Kind::Fast => {
                    worker_run(cfg, rt, &fast_api, s.prefetch, s.messages, &broker, false)
                }
                Kind::Slow => {
                    worker_run(cfg, rt, &slow_api, s.prefetch, s.messages, &broker, false)
                }
            };
            match result {
                Ok(r) => {
                    eprintln!(
                        "round {round}/{}  {:<30} pf {:>4}: {:>6} msgs in {:>6.2} s = {:>7.0} msg/s   [{:>5.0} s]",
                        cfg.rounds,
                        s.name(),
                        s.prefetch,
                        r.messages,
                        r.seconds,
                        r.rate(),
                        started.elapsed().as_secs_f64()
                    );
                    s.runs.push(r);
                }
                Err(e) => {
                    eprintln!(
                        "round {round}/{}  {} pf {}: FAILED: {e}",
                        cfg.rounds,
                        s.name(),
                        s.prefetch
                    );
                    s.errors.push(e);
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    if cfg.latency_messages > 0 {
        for s in scenarios
            .iter_mut()
            .filter(|s| matches!(s.kind, Kind::Fast | Kind::Slow))
        {
            let api = if s.kind == Kind::Fast {
                &fast_api
            } else {
                &slow_api
            };
            let n = cfg.latency_messages.min(s.messages);
            match worker_run(cfg, rt, api, s.prefetch, n, &broker, true) {
                Ok(r) => {
                    eprintln!(
                        "latency run  {:<30} pf {:>4}: {:>6} msgs in {:>6.2} s (info logs)   [{:>5.0} s]",
                        s.name(),
                        s.prefetch,
                        n,
                        r.seconds,
                        started.elapsed().as_secs_f64()
                    );
                    s.latency = Some(r);
                }
                Err(e) => eprintln!("latency run {} pf {}: FAILED: {e}", s.name(), s.prefetch),
            }
        }
    }
    drop((fast_api, slow_api));
    report(cfg, &scenarios);
    if scenarios.iter().any(|s| !s.errors.is_empty()) {
        return Err("some runs failed (see above)".into());
    }
    Ok(())
}

fn main() {
    let cfg = Cfg::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(&cfg, &rt)));
    // Children are stopped by their guards (also on unwind); queues here.
    rt.block_on(delete_queues(&cfg.amqp, None));
    let keep = std::env::var_os("BENCH_KEEP_LOGS").is_some();
    let ok = matches!(outcome, Ok(Ok(())));
    if keep || !ok {
        eprintln!("logs kept in {}", cfg.out_dir.display());
    } else {
        let _ = fs::remove_dir_all(&cfg.out_dir);
    }
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
