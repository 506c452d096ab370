//! End-to-end throughput benchmark against the real local broker (issues 5
//! and 11). See BENCHMARK.md for what each number means.
//!
//! `cargo bench --bench pipeline` runs, in one go and interleaved over
//! `BENCH_ROUNDS` rounds:
//!
//! 1. **ceiling** — N pre-filled persistent messages consumed by a bare lapin
//!    consumer in this process (same prefetch, one manual ack per message, no
//!    HTTP): first delivery → last ack.
//! 2. **fast APIs** — the real `fanout-bridge run` (a child process) against a
//!    `fanout-bridge demo-api --latency-ms 0` child: readyz → all N acked.
//!    Optional, in the same rounds: the same with OpenTelemetry export to an
//!    in-bench OTLP receiver (`BENCH_OTEL=1`), and the Node.js reference
//!    worker of `benches/node-reference` (`BENCH_NODE=1`).
//! 3. **20 ms APIs** — the same against `demo-api --latency-ms 20`, once per
//!    prefetch of `BENCH_PREFETCH_SWEEP`; the bound is prefetch / 0.020 s.
//!    For reference, the bare consumer again, holding each message 20 ms (a
//!    tokio sleep, like the stand-in's) before its ack: what a worker whose
//!    own work costs nothing reaches.
//!
//! then one short extra run per bridge scenario at `RUST_LOG=info` with JSON
//! logs, to read each message's `total_ms` (delivery → settled) from the
//! worker's "message settled" lines for p50/p99, and the targets of issue 11.
//!
//! Modules: `config` (BENCH_* settings), `broker` (queues, pre-fill,
//! cleanup), `process` (/proc sampling, child guards), `http` (reqwest polls,
//! OTLP receiver), `scenarios` (runs, the bare consumers), `workers` (the
//! worker processes under test), `stats`, `report` (tables), `targets`,
//! `sizes` and `sweep_report` (`BENCH_SIZES`: the size sweep of issue 22
//! against a bare job, instead of the scenarios above).
//!
//! Every queue is fresh (`bench.pipeline.<random>`) and deleted after its run
//! and again at the end, also after an error or a panic; every child process
//! is stopped by a drop guard.

mod broker;
mod config;
mod http;
mod process;
mod report;
mod scenarios;
mod sizes;
mod stats;
mod sweep_report;
mod targets;
mod workers;

use std::{
    fs,
    panic::AssertUnwindSafe,
    time::{Duration, Instant},
};

use config::Cfg;
use http::{Http, OtlpReceiver};
use scenarios::{ceiling_run, Kind, Scenario};
use workers::{worker_run, Apis, Ctx, Program};

type Res<T> = Result<T, String>;

/// The binary under test: `BENCH_BIN` when set (e.g. a copy of an earlier
/// build, to interleave before/after runs), else the one cargo built.
fn bin() -> String {
    std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fanout-bridge").to_owned())
}
/// A run with no progress for this long is abandoned.
const STALL: Duration = Duration::from_secs(30);

fn scenarios(cfg: &Cfg) -> Vec<Scenario> {
    let mut v = vec![
        Scenario::new(Kind::Ceiling, cfg.prefetch, cfg.messages),
        Scenario::new(Kind::Fast, cfg.prefetch, cfg.messages),
    ];
    if cfg.otel {
        v.push(Scenario::new(Kind::FastOtel, cfg.prefetch, cfg.messages));
    }
    if cfg.node.is_some() {
        v.push(Scenario::new(Kind::Node, cfg.prefetch, cfg.messages));
    }
    v.push(Scenario::new(
        Kind::Ceiling20,
        cfg.prefetch,
        cfg.slow_messages(cfg.prefetch),
    ));
    for &p in &cfg.sweep {
        v.push(Scenario::new(Kind::Slow, p, cfg.slow_messages(p)));
    }
    v
}

fn run(cfg: &Cfg, rt: &tokio::runtime::Runtime) -> Res<()> {
    fs::create_dir_all(&cfg.out_dir).map_err(|e| e.to_string())?;
    let broker = process::broker_pids();
    if broker.is_empty() {
        eprintln!("note: no beam.smp process found; the broker column will read 0");
    }
    if !cfg.node_skipped.is_empty() && std::env::var_os("BENCH_NODE").is_some() {
        eprintln!("note: Node.js reference {}", cfg.node_skipped);
    }
    let http = Http::new(rt.handle().clone());
    let ctx = Ctx {
        cfg,
        rt,
        http: &http,
        broker: &broker,
    };
    if let Some(sizes) = &cfg.sizes {
        let sink = sizes::Sink::start(rt)?;
        let results = sizes::sweep(&ctx, &Apis::in_bench(sink.port), sizes);
        drop(sink);
        sweep_report::report(cfg, &results);
        if results.iter().any(|r| !r.errors.is_empty()) {
            return Err("some runs failed (see above)".into());
        }
        return Ok(());
    }
    let fast_api = Apis::start(&ctx, 0)?;
    let slow_api = Apis::start(&ctx, 20)?;
    let otlp = if cfg.otel {
        let r = OtlpReceiver::start(rt.handle())?;
        eprintln!(
            "OTLP receiver for the OTel scenario: {}/v1/traces",
            r.endpoint()
        );
        Some(r)
    } else {
        None
    };
    let mut scenarios = scenarios(cfg);

    let started = Instant::now();
    for round in 1..=cfg.rounds {
        for s in scenarios.iter_mut() {
            let (apis, program) = match (s.kind, &otlp, &cfg.node) {
                (Kind::Slow, _, _) => (&slow_api, Program::Bridge),
                (Kind::FastOtel, Some(r), _) => (&fast_api, Program::BridgeOtel(r)),
                (Kind::Node, _, Some(script)) => (&fast_api, Program::Node(script)),
                (Kind::FastOtel | Kind::Node, _, _) => unreachable!("scenario not configured"),
                _ => (&fast_api, Program::Bridge),
            };
            let result = match s.kind {
                Kind::Ceiling | Kind::Ceiling20 => {
                    let hold = (s.kind == Kind::Ceiling20).then_some(Duration::from_millis(20));
                    rt.block_on(ceiling_run(cfg, &broker, s.prefetch, s.messages, hold))
                }
                _ => worker_run(&ctx, apis, &program, s.prefetch, s.messages, false, 0),
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
            match worker_run(&ctx, api, &Program::Bridge, s.prefetch, n, true, 0) {
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
    drop((fast_api, slow_api, otlp));
    report::report(cfg, &scenarios);
    if scenarios.iter().any(|s| !s.errors.is_empty()) {
        return Err("some runs failed (see above)".into());
    }
    Ok(())
}

fn main() {
    if let Ok(queue) = std::env::var("BENCH_BARE_JOB") {
        sizes::bare_job_child(queue);
    }
    let cfg = Cfg::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(&cfg, &rt)));
    // Children are stopped by their guards (also on unwind); queues here.
    rt.block_on(broker::delete_queues(&cfg.amqp, None));
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
