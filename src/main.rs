//! The binary: parse, set up logging, run one subcommand, map the result to
//! an exit code (0 success, 2 bad configuration or usage, 1 anything else).

use std::process::ExitCode;

use clap::Parser;
use fanout_bridge::{cli::Cli, commands, config::RawConfig, otel, telemetry};

// Per message the worker allocates a few dozen small buffers (frames,
// headers, bodies, futures) on two threads; mimalloc serves them for less CPU
// than glibc's malloc (BENCHMARK.md: 0.088 vs 0.132 CPU s per 1,000 messages
// at info). `no_thp`: no transparent huge pages, which would otherwise add
// about 13 MiB of resident memory for a heap of a few MiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // clap exits 2 on a usage error, as the contract asks.
    let cli = Cli::parse();
    let raw = RawConfig::from_env();
    if let Err(e) = telemetry::init_for(&cli.command, &raw) {
        eprintln!("fanout-bridge: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fanout-bridge: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(commands::dispatch(cli.command, raw)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fanout-bridge: {}", commands::describe_error(&e));
            ExitCode::from(commands::exit_code(&e))
        }
    };
    // Exports the spans still queued (bounded); outside the runtime, as the
    // SDK requires.
    otel::shutdown();
    // The runtime is not dropped: a broker connection that failed half-way
    // leaves lapin's I/O thread waiting on one of its tasks, and cancelling
    // that task makes the thread panic (a backtrace after a clean error
    // message). Every command has closed what it opened by now.
    std::mem::forget(runtime);
    code
}
