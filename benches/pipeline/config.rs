//! The benchmark's settings, from `BENCH_*` variables.

use std::{path::PathBuf, process::Command};

pub struct Cfg {
    pub messages: usize,
    pub rounds: usize,
    pub prefetch: u16,
    pub sweep: Vec<u16>,
    pub slow_seconds: f64,
    pub latency_messages: usize,
    pub separate_apis: bool,
    pub amqp: String,
    pub out_dir: PathBuf,
    pub clk_tck: f64,
    /// `BENCH_NODE=1` and `benches/node-reference/node_modules` exists.
    pub node: Option<PathBuf>,
    /// Why the Node.js reference does not run, when it does not.
    pub node_skipped: &'static str,
    /// `BENCH_OTEL=1`: the bridge with OpenTelemetry export on.
    pub otel: bool,
    /// `BENCH_SIZES`: run the size sweep (issue 22) instead of the scenarios.
    pub sizes: Option<Vec<crate::sizes::Size>>,
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

fn env_on(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

impl Cfg {
    pub fn from_env() -> Cfg {
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
        let node_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/node-reference");
        let (node, node_skipped) = if !env_on("BENCH_NODE") {
            (
                None,
                "not run: set BENCH_NODE=1 (after npm ci --prefix benches/node-reference)",
            )
        } else if !node_dir.join("node_modules").is_dir() {
            (
                None,
                "not run: BENCH_NODE=1 but benches/node-reference/node_modules is missing \
                 (npm ci --prefix benches/node-reference)",
            )
        } else {
            (Some(node_dir.join("worker.js")), "")
        };
        Cfg {
            messages: env_num("BENCH_MESSAGES", 20_000),
            rounds: env_num("BENCH_ROUNDS", 3),
            prefetch,
            sweep,
            slow_seconds: env_num("BENCH_SLOW_SECONDS", 8.0),
            latency_messages: env_num("BENCH_LATENCY_MESSAGES", 5_000),
            separate_apis: env_on("BENCH_SEPARATE_APIS"),
            amqp: std::env::var("BENCH_AMQP_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            out_dir: std::env::temp_dir()
                .join(format!("fanout-bridge-bench-{}", std::process::id())),
            clk_tck,
            node,
            node_skipped,
            otel: env_on("BENCH_OTEL"),
            sizes: std::env::var("BENCH_SIZES")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| crate::sizes::parse(&v)),
        }
    }

    /// Messages for a 20 ms run: enough for `slow_seconds` at the bound.
    pub fn slow_messages(&self, prefetch: u16) -> usize {
        let at_bound = (bound(prefetch) * self.slow_seconds).ceil() as usize;
        self.messages.min(at_bound.max(1000))
    }
}

/// Little's law: at most `prefetch` messages held 20 ms each.
pub fn bound(prefetch: u16) -> f64 {
    f64::from(prefetch) / 0.020
}
