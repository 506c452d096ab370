//! The targets of issue 11, each printed as MET or MISSED with its figure
//! (or "n/a" with the reason when its scenario did not run).

use crate::{
    config::{bound, Cfg},
    report::per_round_ratio,
    scenarios::{Kind, Scenario},
    stats::{median, percentile, sorted},
};

/// p99 delivery → ack measured before issue 11 (BENCHMARK.md, "after" run of
/// the hot-path commit): fast APIs, and 20 ms APIs, both at prefetch 64.
const P99_BEFORE_FAST_MS: f64 = 23.8;
const P99_BEFORE_SLOW_MS: f64 = 30.1;

fn verdict(ok: bool) -> &'static str {
    if ok {
        "[MET ]"
    } else {
        "[MISSED]"
    }
}

const NA: &str = "[n/a ]";

fn find(scenarios: &[Scenario], kind: Kind, prefetch: u16) -> Option<&Scenario> {
    scenarios
        .iter()
        .find(|s| s.kind == kind && s.prefetch == prefetch && !s.runs.is_empty())
}

fn p99(s: &Scenario) -> Option<f64> {
    let l = s.latency.as_ref().filter(|l| !l.total_ms.is_empty())?;
    Some(percentile(&sorted(l.total_ms.clone()), 0.99))
}

pub fn print(cfg: &Cfg, scenarios: &[Scenario]) {
    let clk = cfg.clk_tck;
    let pf = cfg.prefetch;
    let ceiling = &scenarios[0];
    let ceiling_cpu = median(&ceiling.cpu_per_k(clk));
    let fast = find(scenarios, Kind::Fast, pf);
    let slow = find(scenarios, Kind::Slow, pf);
    let hold = find(scenarios, Kind::Ceiling20, pf);
    println!();
    println!("Targets (issue 11; \"bare consumer\" = the ceiling of the same rounds):");

    if let Some(fast) = fast {
        let warn_cpu = median(&fast.cpu_per_k(clk));
        let at_warn = format!(
            "at warn {warn_cpu:.3} ({:.2} ×, median of rounds)",
            warn_cpu / ceiling_cpu
        );
        match &fast.latency {
            Some(l) => {
                let cpu = l.split.worker as f64 / clk / l.messages as f64 * 1000.0;
                println!(
                    "  {} worker CPU per message at RUST_LOG=info ≤ 1.5 × the bare consumer's: {cpu:.3} vs {ceiling_cpu:.3} \
                     CPU s/1k ({:.2} ×; the info latency run, {} msgs, JSON lines); {at_warn}",
                    verdict(cpu <= 1.5 * ceiling_cpu),
                    cpu / ceiling_cpu,
                    l.messages
                );
            }
            None => println!(
                "  {NA} worker CPU per message at RUST_LOG=info ≤ 1.5 × the bare consumer's ({ceiling_cpu:.3} CPU s/1k): \
                 not measured, needs the latency run (BENCH_LATENCY_MESSAGES > 0); {at_warn}"
            ),
        }
        let ratio = per_round_ratio(fast, ceiling);
        println!(
            "  {} fast APIs ≥ 0.80 × the bare consumer's msg/s: {ratio:.2} × (median {:.0} vs {:.0} msg/s)",
            verdict(ratio >= 0.8),
            median(&fast.rates()),
            median(&ceiling.rates())
        );
        match find(scenarios, Kind::Node, pf) {
            Some(node) => {
                let ratio = per_round_ratio(fast, node);
                println!(
                    "  {} fast APIs ≥ 6 × the Node.js reference (amqplib + axios): {ratio:.2} × (median {:.0} vs {:.0} msg/s; \
                     CPU s/1k {:.3} vs {:.3})",
                    verdict(ratio >= 6.0),
                    median(&fast.rates()),
                    median(&node.rates()),
                    warn_cpu,
                    median(&node.cpu_per_k(clk))
                );
            }
            None => println!(
                "  {NA} fast APIs ≥ 6 × the Node.js reference: {}",
                if cfg.node.is_some() {
                    "every Node.js run failed (see above)"
                } else {
                    cfg.node_skipped
                }
            ),
        }
    } else {
        println!("  {NA} CPU per message and fast-API targets: no successful fast-API run");
    }

    match (slow, hold) {
        (Some(slow), Some(hold)) => {
            let ratio = per_round_ratio(slow, hold);
            println!(
                "  {} 20 ms APIs at prefetch {pf} ≥ 0.95 × the bare \"hold 20 ms, then ack\" consumer: {ratio:.2} × \
                 (median {:.0} vs {:.0} msg/s)",
                verdict(ratio >= 0.95),
                median(&slow.rates()),
                median(&hold.rates())
            );
            explain_hold(hold);
        }
        _ => println!(
            "  {NA} 20 ms APIs at prefetch {pf} ≥ 0.95 × the bare \"hold 20 ms, then ack\" consumer: \
             needs both at prefetch {pf} (BENCH_PREFETCH_SWEEP must contain BENCH_PREFETCH)"
        ),
    }

    // Every run of the bridge at this prefetch, the info latency runs too.
    let rss = scenarios
        .iter()
        .filter(|s| matches!(s.kind, Kind::Fast | Kind::Slow) && s.prefetch == pf)
        .flat_map(|s| s.runs.iter().chain(&s.latency))
        .filter_map(|r| r.rss_kib)
        .max();
    match rss {
        Some(k) => {
            let mib = k as f64 / 1024.0;
            println!(
                "  {} peak RSS at prefetch {pf} ≤ 24 MiB: {mib:.1} MiB (largest over the bridge's runs at prefetch {pf}, \
                 fast and 20 ms, info runs included)",
                verdict(mib <= 24.0)
            );
        }
        None => {
            println!("  {NA} peak RSS at prefetch {pf} ≤ 24 MiB: no bridge run at prefetch {pf}")
        }
    }

    for (s, before, what) in [
        (fast, P99_BEFORE_FAST_MS, "fast APIs"),
        (slow, P99_BEFORE_SLOW_MS, "20 ms APIs"),
    ] {
        match s.and_then(p99) {
            Some(v) => println!(
                "  {} p99 delivery → ack, {what}, prefetch {pf}: {v:.1} ms (before issue 11: {before:.1} ms, \
                 one run each: a small difference is noise)",
                verdict(v <= before)
            ),
            None => println!(
                "  {NA} p99 delivery → ack, {what}, prefetch {pf}: not measured (needs BENCH_LATENCY_MESSAGES > 0); \
                 before issue 11: {before:.1} ms"
            ),
        }
    }
}

/// How close the bare 20 ms consumer comes to Little's-law bound, and why:
/// rate = (mean messages held) ÷ (mean delivery → ack time), so
/// rate ÷ bound = (held ÷ prefetch) × (20 ms ÷ mean time).
fn explain_hold(hold: &Scenario) {
    let b = bound(hold.prefetch);
    let rate = median(&hold.rates());
    let held = median(&sorted(
        hold.runs.iter().filter_map(|r| r.in_flight).collect(),
    ));
    let mean_ms = median(&sorted(
        hold.runs
            .iter()
            .filter_map(|r| r.in_flight.map(|h| h / r.rate() * 1000.0))
            .collect(),
    ));
    println!(
        "         that consumer reaches {rate:.0} msg/s = {:.2} × the Little's-law bound {b:.0} ({} ÷ 20 ms): \
         it holds {held:.1} of {} messages on average ({:.2}: a freed slot waits a broker round trip for its next delivery) \
         × 20 ms ÷ {mean_ms:.1} ms mean delivery → ack ({:.2}: tokio's millisecond timer rounds the sleep up, plus the ack)",
        rate / b,
        hold.prefetch,
        hold.prefetch,
        held / f64::from(hold.prefetch),
        20.0 / mean_ms
    );
}
