//! The size sweep (issue 22), opt-in with `BENCH_SIZES`: for each message
//! size, the bridge (default byte budget) and the **bare job** — consume with
//! lapin, two concurrent POSTs of the body on a pooled hyper-util client, ack;
//! nothing else — run as a separate process (this benchmark's own binary,
//! re-executed with `BENCH_BARE_JOB` set), so that its peak RSS compares with
//! the worker's.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use lapin::options::{BasicAckOptions, BasicNackOptions};

use crate::{
    broker::{connect, delete_queues, fresh_queue, prefill_sized},
    process::{cpu_ticks, vm_hwm_kib},
    scenarios::Run,
    workers::{Apis, Ctx},
    Res, STALL,
};

/// The size sweep's stand-in for both APIs, inside this process: answers
/// 200 to any POST once it has read the whole body. (`demo-api` answers
/// without reading the body, so a big body's upload meets a closed
/// connection: "Broken pipe", retries, dead letters.)
pub struct Sink {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub fn start(rt: &tokio::runtime::Runtime) -> Res<Sink> {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| format!("sink: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        async fn read_all(body: Bytes) -> &'static str {
            std::hint::black_box(body.len());
            "{}"
        }
        let app = axum::Router::new()
            .route("/users", axum::routing::post(read_all))
            .route("/logs", axum::routing::post(read_all))
            .layer(axum::extract::DefaultBodyLimit::max(1 << 30));
        let task = rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Sink { port, task })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The worker's default `BRIDGE_MAX_IN_FLIGHT_BYTES`, for the RSS target.
pub const BUDGET_MIB: f64 = 64.0;

/// One size of the sweep and its message count.
#[derive(Clone, Copy)]
pub struct Size {
    pub bytes: usize,
    pub messages: usize,
}

/// Messages per run so each size takes a few seconds at the rates:
/// 20,000 × 200 B, 2,000 × 64 KiB, 300 × 1 MiB, 60 × 8 MiB.
pub fn default_messages(bytes: usize) -> usize {
    match bytes {
        0..=4096 => 20_000,
        4097..=262_144 => 2_000,
        262_145..=2_097_152 => 300,
        _ => 60,
    }
}

/// `BENCH_SIZES=200,65536,1048576:100,…`: bytes, optionally `:messages`.
pub fn parse(spec: &str) -> Vec<Size> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let (b, m) = match s.trim().split_once(':') {
                Some((b, m)) => (b, Some(m)),
                None => (s.trim(), None),
            };
            let bytes: usize = b
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("BENCH_SIZES: {b:?} is not a number of bytes"));
            let messages = m.map_or(default_messages(bytes), |m| {
                m.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("BENCH_SIZES: {m:?} is not a message count"))
            });
            assert!(bytes >= 32 && messages >= 1, "BENCH_SIZES: {s:?}");
            Size { bytes, messages }
        })
        .collect()
}

/// Figures of one size over the rounds.
pub struct SizeResult {
    pub size: Size,
    pub bridge: Vec<Run>,
    pub bare: Vec<Run>,
    pub errors: Vec<String>,
}

pub fn human(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// The sweep: per round, per size, the bridge then the bare job.
pub fn sweep(ctx: &Ctx, apis: &Apis, sizes: &[Size]) -> Vec<SizeResult> {
    let cfg = ctx.cfg;
    let mut results: Vec<SizeResult> = sizes
        .iter()
        .map(|&size| SizeResult {
            size,
            bridge: Vec::new(),
            bare: Vec::new(),
            errors: Vec::new(),
        })
        .collect();
    let started = Instant::now();
    for round in 1..=cfg.rounds {
        for r in results.iter_mut() {
            let Size { bytes, messages } = r.size;
            for bare in [false, true] {
                let out = if bare {
                    bare_job_run(ctx, apis, cfg.prefetch, messages, bytes)
                } else {
                    crate::workers::worker_run(
                        ctx,
                        apis,
                        &crate::workers::Program::Bridge,
                        cfg.prefetch,
                        messages,
                        false,
                        bytes,
                    )
                };
                let name = if bare { "bare job" } else { "bridge" };
                match out {
                    Ok(run) => {
                        eprintln!(
                            "round {round}/{}  size {:>8} {:<8} pf {:>4}: {:>6} msgs in {:>6.2} s = {:>7.1} msg/s, peak RSS {:>6.1} MiB   [{:>5.0} s]",
                            cfg.rounds,
                            human(bytes),
                            name,
                            cfg.prefetch,
                            run.messages,
                            run.seconds,
                            run.rate(),
                            run.rss_kib.unwrap_or(0) as f64 / 1024.0,
                            started.elapsed().as_secs_f64()
                        );
                        if bare {
                            r.bare.push(run)
                        } else {
                            r.bridge.push(run)
                        }
                    }
                    Err(e) => {
                        eprintln!(
                            "round {round}/{}  size {} {name}: FAILED: {e}",
                            cfg.rounds,
                            human(bytes)
                        );
                        r.errors.push(format!("{name}: {e}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
    results
}

/// The bare job as a child process over `n` pre-filled messages of `bytes`.
fn bare_job_run(ctx: &Ctx, apis: &Apis, prefetch: u16, n: usize, bytes: usize) -> Res<Run> {
    let (cfg, rt) = (ctx.cfg, ctx.rt);
    let queue = fresh_queue("barejob");
    let result = (|| {
        rt.block_on(prefill_sized(&cfg.amqp, &queue, n, bytes))?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let (user, log) = apis.urls();
        let out = Command::new(exe)
            .env("BENCH_BARE_JOB", &queue)
            .env("BENCH_BARE_JOB_N", n.to_string())
            .env("BENCH_BARE_JOB_PREFETCH", prefetch.to_string())
            .env("BENCH_BARE_JOB_URLS", format!("{user} {log}"))
            .env("BENCH_AMQP_URL", &cfg.amqp)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("bare job: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("bare-job "))
            .ok_or_else(|| format!("bare job exited ({}) without a result", out.status))?;
        let f: Vec<f64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let [acked, seconds, hwm, ticks] = f[..] else {
            return Err(format!("bare job: bad result line {line:?}"));
        };
        if acked as usize != n {
            return Err(format!("bare job acked {acked} of {n}"));
        }
        let mut run = Run {
            messages: n,
            seconds,
            rss_kib: Some(hwm as u64),
            ..Run::default()
        };
        run.split.worker = ticks as u64;
        Ok(run)
    })();
    rt.block_on(delete_queues(&cfg.amqp, Some(std::slice::from_ref(&queue))));
    result
}

/// Child mode (`BENCH_BARE_JOB=<queue>`): consume at the prefetch, POST each
/// body to both URLs at once on one pooled hyper-util client, ack when both
/// answered 2xx (else nack, counted as lost). Prints
/// `bare-job <acked> <seconds> <VmHWM KiB> <CPU ticks>`; timed from the first
/// delivery to the last ack.
pub fn bare_job_child(queue: String) -> ! {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let n: usize = var("BENCH_BARE_JOB_N").parse().unwrap();
    let prefetch: u16 = var("BENCH_BARE_JOB_PREFETCH").parse().unwrap();
    let urls = var("BENCH_BARE_JOB_URLS");
    let (user, log) = urls.split_once(' ').unwrap();
    let (user, log): (hyper::Uri, hyper::Uri) = (user.parse().unwrap(), log.parse().unwrap());
    let amqp = var("BENCH_AMQP_URL");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async move {
        let client: Client<_, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let conn = connect(&amqp, "bare job").await?;
        let (ch, mut consumer) = crate::broker::consume(&conn, &queue, prefetch, "bench-bare-job").await?;
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
        let (mut start, mut acked, mut settled) = (None, 0usize, 0usize);
        while settled < n {
            tokio::select! {
                d = consumer.next() => {
                    let d = match d {
                        Some(Ok(d)) => d,
                        Some(Err(e)) => return Err(format!("consumer: {e}")),
                        None => return Err("consumer ended".into()),
                    };
                    if start.is_none() {
                        start = Some((Instant::now(), cpu_ticks(std::process::id()).unwrap_or(0)));
                    }
                    let (client, user, log, done) =
                        (client.clone(), user.clone(), log.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        let body = Bytes::from(d.data);
                        let post = |uri: hyper::Uri, body: Bytes| {
                            let client = client.clone();
                            async move {
                                let req = hyper::Request::post(uri)
                                    .header("content-type", "application/json")
                                    .body(Full::new(body))
                                    .map_err(|e| e.to_string())?;
                                let resp = client.request(req).await.map_err(|e| e.to_string())?;
                                let ok = resp.status().is_success();
                                let _ = resp.into_body().collect().await;
                                if ok { Ok(()) } else { Err("non-2xx".to_string()) }
                            }
                        };
                        let (a, b) = tokio::join!(post(user, body.clone()), post(log, body));
                        let r = match a.and(b) {
                            Ok(()) => d.acker.ack(BasicAckOptions::default()).await.map(|_| ()).map_err(|e| e.to_string()),
                            Err(e) => {
                                let _ = d.acker.nack(BasicNackOptions::default()).await;
                                Err(e)
                            }
                        };
                        let _ = done.send(r);
                    });
                }
                Some(r) = done_rx.recv() => {
                    settled += 1;
                    match r {
                        Ok(()) => acked += 1,
                        Err(e) => eprintln!("bare job: message not acked: {e}"),
                    }
                }
                () = tokio::time::sleep(STALL) => return Err(format!("stalled at {settled}/{n}")),
            }
        }
        let (t0, c0) = start.unwrap();
        let seconds = t0.elapsed().as_secs_f64();
        let ticks = cpu_ticks(std::process::id()).unwrap_or(0).saturating_sub(c0);
        let _ = ch.close(200, "done".into()).await;
        let _ = conn.close(200, "done".into()).await;
        Ok((acked, seconds, ticks))
    });
    match result {
        Ok((acked, seconds, ticks)) => {
            let hwm = vm_hwm_kib(std::process::id()).unwrap_or(0);
            println!("bare-job {acked} {seconds} {hwm} {ticks}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("bare job: {e}");
            std::process::exit(1)
        }
    }
}
