//! The size sweep's table and its verdicts against issue 22.

use crate::{
    config::Cfg,
    scenarios::Run,
    sizes::{human, SizeResult, BUDGET_MIB},
    stats::sorted,
};

/// The issue's figures for main before the budget (msg/s, measured on
/// another day): 64 KiB, 1 MiB, 8 MiB.
const ISSUE_RATES: [(usize, f64); 3] = [(65_536, 4_347.0), (1_048_576, 380.0), (8_388_608, 51.0)];
/// "No lower" against the same run's bare job.
const BARE_FACTOR: f64 = 0.9;
/// Peak RSS ≤ budget + this, at 1 MiB and above.
const RSS_SLACK_MIB: f64 = 40.0;

fn median(v: &[f64]) -> Option<f64> {
    let v = sorted(v.to_vec());
    (!v.is_empty()).then(|| {
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    })
}

fn rates(runs: &[Run]) -> Vec<f64> {
    sorted(runs.iter().map(Run::rate).collect())
}

fn peak_mib(runs: &[Run]) -> Option<f64> {
    runs.iter()
        .filter_map(|r| r.rss_kib)
        .max()
        .map(|k| k as f64 / 1024.0)
}

fn cpu_per_k(runs: &[Run], clk: f64) -> Option<f64> {
    let v: Vec<f64> = runs
        .iter()
        .map(|r| r.split.worker as f64 / clk / r.messages as f64 * 1000.0)
        .collect();
    median(&v)
}

fn f(v: Option<f64>, prec: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.prec$}"))
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "[MET ]"
    } else {
        "[MISSED]"
    }
}

pub fn report(cfg: &Cfg, results: &[SizeResult]) {
    println!();
    println!(
        "size sweep: prefetch {}, default byte budget ({BUDGET_MIB} MiB), APIs answer at once, {} round(s); bare job = lapin + 2 concurrent POSTs on a pooled hyper-util client + ack, a separate process",
        cfg.prefetch, cfg.rounds
    );
    println!(
        "{:>8} {:>6}  {:>24}  {:>24}  {:>11}  {:>8} {:>8}  {:>9} {:>9}  lost",
        "size",
        "msgs",
        "bridge msg/s min/med/max",
        "bare job msg/s min/med/max",
        "bridge÷bare",
        "RSS br",
        "RSS bare",
        "CPU/1k br",
        "CPU/1k bj",
    );
    for r in results {
        let (b, j) = (rates(&r.bridge), rates(&r.bare));
        let mmm = |v: &[f64]| match (v.first(), median(v), v.last()) {
            (Some(a), Some(m), Some(z)) => format!("{a:.0} / {m:.0} / {z:.0}"),
            _ => "–".into(),
        };
        let ratio = match (median(&b), median(&j)) {
            (Some(b), Some(j)) => Some(b / j),
            _ => None,
        };
        println!(
            "{:>8} {:>6}  {:>24}  {:>24}  {:>11}  {:>8} {:>8}  {:>9} {:>9}  {}",
            human(r.size.bytes),
            r.size.messages,
            mmm(&b),
            mmm(&j),
            f(ratio, 2),
            f(peak_mib(&r.bridge), 1),
            f(peak_mib(&r.bare), 1),
            f(cpu_per_k(&r.bridge, cfg.clk_tck), 3),
            f(cpu_per_k(&r.bare, cfg.clk_tck), 3),
            if r.errors.is_empty() {
                "none".to_string()
            } else {
                format!("{} failed run(s)", r.errors.len())
            }
        );
    }
    println!("  (RSS = peak VmHWM in MiB, largest over rounds; CPU/1k = CPU s per 1,000 messages of that process, median; bridge timed /readyz → all acked, bare job first delivery → last ack)");
    println!();
    let budget_rss = BUDGET_MIB + RSS_SLACK_MIB;
    for r in results {
        let size = human(r.size.bytes);
        let (b, j) = (median(&rates(&r.bridge)), median(&rates(&r.bare)));
        let lost_ok = r.errors.is_empty() && !r.bridge.is_empty();
        if r.size.bytes >= 1 << 20 {
            println!(
                "  {} {size}: nothing lost (every message acked, queue and DLQ empty, {} bridge run(s)){}",
                mark(lost_ok),
                r.bridge.len(),
                if lost_ok {
                    String::new()
                } else {
                    format!(": {}", r.errors.join("; "))
                }
            );
            match peak_mib(&r.bridge) {
                Some(p) => println!(
                    "  {} {size}: bridge peak RSS ≤ budget + {RSS_SLACK_MIB} = {budget_rss} MiB: {p:.1} MiB (bare job: {} MiB, no target)",
                    mark(p <= budget_rss),
                    f(peak_mib(&r.bare), 1)
                ),
                None => println!("  [MISSED] {size}: bridge peak RSS: no run"),
            }
        }
        match (b, j) {
            (Some(b), Some(j)) => {
                let target = r.size.bytes >= 65_536;
                println!(
                    "  {} {size}: bridge msg/s ≥ {BARE_FACTOR} × the same run's bare job: {b:.1} vs {j:.1} msg/s ({:.2} ×){}",
                    if target { mark(b >= BARE_FACTOR * j) } else { "[info]" },
                    b / j,
                    if target { "" } else { " — no such target at this size; 200 B is judged by the before/after pairs" }
                );
            }
            _ => println!("  [MISSED] {size}: msg/s: a run is missing"),
        }
        if let (Some(&(_, issue)), Some(b)) =
            (ISSUE_RATES.iter().find(|(s, _)| *s == r.size.bytes), b)
        {
            println!(
                "  {} {size}: bridge msg/s ≥ the issue's pre-budget main ({issue:.0} msg/s, measured on another day): {b:.1} msg/s ({:.2} ×)",
                mark(b >= issue),
                b / issue
            );
        }
    }
    for r in results.iter().filter(|r| !r.errors.is_empty()) {
        for e in &r.errors {
            println!("  FAILED {}: {e}", human(r.size.bytes));
        }
    }
}
