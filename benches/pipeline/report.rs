//! The printed tables: throughput, CPU split, latency, and the OTel
//! receiver's figures. The targets' verdicts are in `targets`.

use crate::{
    broker::body,
    config::{bound, Cfg},
    scenarios::{Kind, Run, Scenario},
    stats::{median, mmm, percentile, sorted},
    targets,
};

/// Median over rounds of `a`'s rate ÷ `b`'s rate in the same round.
pub fn per_round_ratio(a: &Scenario, b: &Scenario) -> f64 {
    median(&sorted(
        a.runs
            .iter()
            .zip(&b.runs)
            .map(|(x, y)| x.rate() / y.rate())
            .collect(),
    ))
}

pub fn report(cfg: &Cfg, scenarios: &[Scenario]) {
    let clk = cfg.clk_tck;
    let ceiling = &scenarios[0];
    let ceiling_cpu = median(&ceiling.cpu_per_k(clk));
    let hold = scenarios
        .iter()
        .find(|s| s.kind == Kind::Ceiling20 && s.prefetch == cfg.prefetch);
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
        let at_once = format!("{:.2} × ceiling", per_round_ratio(s, ceiling));
        let (ratio, target) = match s.kind {
            Kind::Ceiling => ("1.00 (ceiling)".to_string(), String::new()),
            Kind::Fast => (
                at_once,
                format!(
                    "≥ 0.80 × ceiling; CPU at info ≤ 1.5 × {ceiling_cpu:.3} = {:.3}; RSS ≤ 24",
                    1.5 * ceiling_cpu
                ),
            ),
            Kind::FastOtel => (at_once, "(the fast scenario with OTLP export)".into()),
            Kind::Node => (at_once, "(reference: bridge ≥ 6 × this)".into()),
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
                    match hold {
                        Some(h) if s.prefetch == cfg.prefetch => format!(
                            "≥ 0.95 × bare 20 ms hold = {:.0} msg/s; RSS ≤ 24",
                            0.95 * median(&h.rates())
                        ),
                        _ => format!("(bound {b:.0})"),
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

    split_table(clk, scenarios);
    latency_lines(cfg, scenarios);
    otel_lines(clk, scenarios);
    targets::print(cfg, scenarios);
}

fn split_table(clk: f64, scenarios: &[Scenario]) {
    println!();
    println!(
        "CPU split over the measured window (cores busy, median over rounds; the machine has 2), \
         mean messages in flight in the worker, TCP connections opened per 1,000 messages \
         (after the first fifth of them: the HTTP pool's warm-up excluded):"
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
    let cores = |s: &Scenario, f: &dyn Fn(&Run) -> u64| -> f64 {
        median(&sorted(
            s.runs
                .iter()
                .map(|r| f(r) as f64 / clk / r.seconds)
                .collect(),
        ))
    };
    for s in scenarios {
        let in_flight = median(&sorted(s.runs.iter().filter_map(|r| r.in_flight).collect()));
        let conns = median(&sorted(
            s.runs
                .iter()
                .map(|r| r.tcp_opens.0 as f64 * 1000.0 / r.tcp_opens.1.max(1) as f64)
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
            cores(s, &|r| r.split.worker),
            cores(s, &|r| r.split.api),
            cores(s, &|r| r.split.broker),
            cores(s, &|r| r.split.bench),
            cores(s, &|r| r.split.other()),
            cores(s, &|r| r.split.machine),
            na(in_flight, 1),
            na(conns, 1),
        );
    }

    let noisy: Vec<String> = scenarios
        .iter()
        .filter_map(|s| {
            let other = cores(s, &|r| r.split.other());
            (other > 0.25).then(|| format!("{} pf {} ({other:.2} cores)", s.name(), s.prefetch))
        })
        .collect();
    if !noisy.is_empty() {
        println!(
            "WARNING: processes outside the benchmark used CPU during: {}; those numbers are depressed, run again on a quiet machine",
            noisy.join(", ")
        );
    }
}

fn latency_lines(cfg: &Cfg, scenarios: &[Scenario]) {
    println!();
    println!(
        "Latency (delivery → ack, from the worker's own `total_ms`, 0.1 ms resolution): one extra run per scenario \
         at RUST_LOG=info with JSON logs ({} msgs); its throughput includes the cost of logging:",
        cfg.latency_messages
    );
    for s in scenarios {
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
                l.split.worker as f64 / cfg.clk_tck / l.messages as f64 * 1000.0
            );
        }
    }
}

/// What the OTLP receiver got in the OTel scenario, and the cost of export.
fn otel_lines(clk: f64, scenarios: &[Scenario]) {
    let Some(otel) = scenarios.iter().find(|s| s.kind == Kind::FastOtel) else {
        return;
    };
    let Some(fast) = scenarios.iter().find(|s| s.kind == Kind::Fast) else {
        return;
    };
    println!();
    println!("OpenTelemetry export (OTEL_EXPORTER_OTLP_ENDPOINT → the benchmark's receiver on loopback):");
    let posts = median(&sorted(
        otel.runs
            .iter()
            .filter_map(|r| r.otlp.map(|c| c.posts as f64))
            .collect(),
    ));
    let kib_per_k = median(&sorted(
        otel.runs
            .iter()
            .filter_map(|r| {
                r.otlp
                    .map(|c| c.bytes as f64 / 1024.0 / r.messages as f64 * 1000.0)
            })
            .collect(),
    ));
    let dropped: f64 = otel.runs.iter().filter_map(|r| r.otel_dropped).sum();
    if otel
        .runs
        .iter()
        .all(|r| r.otlp.is_none_or(|c| c.posts == 0))
    {
        println!(
            "  the receiver got no POST /v1/traces: this build of the worker does not export \
             (OpenTelemetry support not merged?), so its row above is the bridge without export"
        );
    } else {
        println!(
            "  POST /v1/traces per run: {posts:.0} (median), {kib_per_k:.1} KiB per 1,000 messages; \
             spans dropped by the worker over all runs: {dropped:.0}"
        );
    }
    let cpu = |s: &Scenario| median(&s.cpu_per_k(clk));
    println!(
        "  with export vs without, same rounds: {:.2} × the msg/s, CPU s/1k {:.3} vs {:.3} ({:.2} ×), peak RSS {} vs {} MiB",
        per_round_ratio(otel, fast),
        cpu(otel),
        cpu(fast),
        cpu(otel) / cpu(fast),
        peak_mib(otel),
        peak_mib(fast),
    );
}

pub fn peak_mib(s: &Scenario) -> String {
    s.runs
        .iter()
        .filter_map(|r| r.rss_kib)
        .max()
        .map_or("–".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}
