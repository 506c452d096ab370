//! The binary: parse, set up logging, run one subcommand, map the result to
//! an exit code (0 success, 2 bad configuration or usage, 1 anything else).

use std::process::ExitCode;

use clap::Parser;
use fanout_bridge::{
    cli::{Cli, Command},
    commands,
    config::RawConfig,
    otel, telemetry,
};

fn main() -> ExitCode {
    // clap exits 2 on a usage error, as the contract asks.
    let cli = Cli::parse();
    let raw = RawConfig::from_env();
    let format = match raw.log_format() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fanout-bridge: {e}");
            return ExitCode::from(2);
        }
    };
    // OpenTelemetry (the worker only): built before the runtime, since its
    // OTLP client is blocking and lives on the exporter's thread.
    let traces = if matches!(cli.command, Command::Run) {
        match otel::layer() {
            Ok(layer) => layer,
            Err(e) => {
                eprintln!("fanout-bridge: invalid configuration: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    telemetry::init_with(format, cli.command.default_log_filter(), traces);
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
            eprintln!("fanout-bridge: {e:#}");
            ExitCode::from(commands::exit_code(&e))
        }
    };
    // Exports the spans still queued (bounded); outside the runtime, as the
    // SDK requires.
    drop(runtime);
    otel::shutdown();
    code
}
