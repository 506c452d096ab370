//! Worker processes under test: `fanout-bridge run` (with or without
//! OpenTelemetry export) or the Node.js reference worker, against the
//! `demo-api` stand-ins, timed from `/readyz` to all messages settled.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tokio::runtime::Runtime;

use crate::{
    bin,
    broker::{delete_queues, depth, fresh_queue, prefill_sized, remember_queue},
    config::Cfg,
    http::{gauge, metric, tail, Http, OtlpReceiver},
    process::{free_port, tcp_active_opens, vm_hwm_kib, ChildGuard, SplitProbe},
    scenarios::Run,
    Res, STALL,
};

/// How often the worker's `/metrics` is read while it drains the queue.
const POLL: Duration = Duration::from_millis(25);

/// What a run needs besides its scenario.
pub struct Ctx<'a> {
    pub cfg: &'a Cfg,
    pub rt: &'a Runtime,
    pub http: &'a Http,
    pub broker: &'a [u32],
}

/// The process under test.
pub enum Program<'a> {
    Bridge,
    /// The bridge with `OTEL_EXPORTER_OTLP_ENDPOINT` set to this receiver.
    BridgeOtel(&'a OtlpReceiver),
    /// `node <worker.js>`, the Node.js reference.
    Node(&'a Path),
}

/// The stand-ins of one latency: one process serving both paths, or (with
/// `BENCH_SEPARATE_APIS=1`) one per API, as two real APIs would be.
pub struct Apis {
    user: (Option<ChildGuard>, u16),
    log: Option<(ChildGuard, u16)>,
}

impl Apis {
    pub fn start(ctx: &Ctx, latency_ms: u64) -> Res<Apis> {
        let (guard, port) = start_demo_api(ctx, latency_ms, "users")?;
        Ok(Apis {
            user: (Some(guard), port),
            log: if ctx.cfg.separate_apis {
                Some(start_demo_api(ctx, latency_ms, "logs")?)
            } else {
                None
            },
        })
    }
    pub fn urls(&self) -> (String, String) {
        let log_port = self.log.as_ref().map_or(self.user.1, |l| l.1);
        (
            format!("http://127.0.0.1:{}/users", self.user.1),
            format!("http://127.0.0.1:{log_port}/logs"),
        )
    }
    /// Both paths on a server this benchmark runs itself (the size sweep's
    /// sink): no child process, so no stand-in CPU column.
    pub fn in_bench(port: u16) -> Apis {
        Apis {
            user: (None, port),
            log: None,
        }
    }
    fn pids(&self) -> Vec<u32> {
        self.user
            .0
            .iter()
            .map(ChildGuard::pid)
            .chain(self.log.as_ref().map(|l| l.0.pid()))
            .collect()
    }
}

fn start_demo_api(ctx: &Ctx, latency_ms: u64, role: &str) -> Res<(ChildGuard, u16)> {
    let port = free_port();
    let log = ctx
        .cfg
        .out_dir
        .join(format!("demo-api-{latency_ms}ms-{role}.log"));
    let stderr = fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut guard = ChildGuard::spawn(
        &format!("demo-api ({latency_ms} ms)"),
        Command::new(bin())
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
    ctx.http.wait_ok(
        port,
        "/healthz",
        Duration::from_millis(20),
        Duration::from_secs(15),
        &mut guard,
        &log,
    )?;
    Ok((guard, port))
}

/// One run of `program` over `n` pre-filled messages. `latency`: the bridge
/// logs at info as JSON, and each message's `total_ms` is read back.
/// `size`: bodies of that many bytes (0: the usual event); with a size, the
/// queue and the DLQ must both be empty afterwards (nothing lost).
pub fn worker_run(
    ctx: &Ctx,
    apis: &Apis,
    program: &Program,
    prefetch: u16,
    n: usize,
    latency: bool,
    size: usize,
) -> Res<Run> {
    let (cfg, rt) = (ctx.cfg, ctx.rt);
    let queue = fresh_queue("in");
    let dlq = format!("{queue}.dlq");
    remember_queue(&dlq);
    let result = (|| {
        rt.block_on(prefill_sized(&cfg.amqp, &queue, n, size))?;
        let metrics_port = free_port();
        let log = cfg.out_dir.join(format!("{queue}.log"));
        let stderr = fs::File::create(&log).map_err(|e| e.to_string())?;
        let (name, mut cmd) = match program {
            Program::Node(script) => {
                let mut cmd = Command::new("node");
                cmd.arg(script);
                ("node reference worker", cmd)
            }
            Program::Bridge | Program::BridgeOtel(_) => {
                let mut cmd = Command::new(bin());
                cmd.arg("run");
                ("worker", cmd)
            }
        };
        // Only the settings below: none of the shell's BRIDGE_* or OTEL_*.
        for (k, _) in std::env::vars() {
            if k.starts_with("BRIDGE_") || k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        if let Program::BridgeOtel(receiver) = program {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint());
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
        let otlp0 = match program {
            Program::BridgeOtel(r) => Some(r.count()),
            _ => None,
        };
        let mut worker = ChildGuard::spawn(name, &mut cmd)?;
        ctx.http.wait_ok(
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
            broker: ctx.broker.to_vec(),
        };
        let t0 = Instant::now();
        let s0 = probe.read();
        // Connections are counted after the first fifth of the messages: the
        // HTTP pool opens one per concurrent request while it warms up (up to
        // prefetch × targets), which is not churn.
        let mut warm: Option<(u64, u64, u64)> = None; // (opens, polls, settled)
        let mut polls = 0u64;
        let (mut in_flight_sum, mut in_flight_samples) = (0.0, 0u32);
        let (mut last, mut last_change) = (0u64, Instant::now());
        let (seconds, split, tcp_opens, text) = loop {
            std::thread::sleep(POLL);
            polls += 1;
            let text = match ctx.http.get(metrics_port, "/metrics") {
                Ok((200, t)) => t,
                _ => String::new(),
            };
            let settled = metric(&text, "acked") + metric(&text, "dead_lettered");
            if warm.is_none() && settled * 5 >= n as u64 {
                warm = Some((tcp_active_opens(), polls, settled));
            }
            if settled * 10 < n as u64 * 9 {
                if let Some(v) = gauge(&text, "bridge_messages_in_flight") {
                    in_flight_sum += v;
                    in_flight_samples += 1;
                }
            }
            if settled >= n as u64 {
                let seconds = t0.elapsed().as_secs_f64();
                let split = probe.read() - s0;
                let (opens0, polls0, settled0) =
                    warm.unwrap_or((tcp_active_opens(), polls, settled));
                let tcp_opens = (
                    tcp_active_opens().saturating_sub(opens0 + (polls - polls0)),
                    settled.saturating_sub(settled0),
                );
                let dead = metric(&text, "dead_lettered");
                if dead > 0 {
                    return Err(format!(
                        "{dead} of {n} messages were dead-lettered (see {})",
                        log.display()
                    ));
                }
                break (seconds, split, tcp_opens, text);
            }
            if settled != last {
                (last, last_change) = (settled, Instant::now());
            } else if last_change.elapsed() > STALL {
                return Err(format!("{name} stalled at {settled}/{n}:\n{}", tail(&log)));
            }
            if let Some(status) = worker.exited() {
                return Err(format!(
                    "{name} exited ({status}) at {settled}/{n}:\n{}",
                    tail(&log)
                ));
            }
        };
        let rss_kib = vm_hwm_kib(worker.pid());
        match worker.stop() {
            Some(s) if s.success() => {}
            other => eprintln!("  {name} did not exit cleanly: {other:?}"),
        }
        if size > 0 {
            let left = rt.block_on(depth(&cfg.amqp, &queue))?;
            let dead = rt.block_on(depth(&cfg.amqp, &dlq)).unwrap_or(0);
            if left > 0 || dead > 0 {
                return Err(format!(
                    "lost: {left} messages left in the queue, {dead} in the DLQ (see {})",
                    log.display()
                ));
            }
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
            otlp: match (program, otlp0) {
                (Program::BridgeOtel(r), Some(c0)) => Some(r.count() - c0),
                _ => None,
            },
            otel_dropped: gauge(&text, "bridge_otel_spans_dropped_total"),
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
