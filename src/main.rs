//! The binary: parse, set up logging, run one subcommand, map the result to
//! an exit code (0 success, 2 bad configuration or usage, 1 anything else).

use std::process::ExitCode;

use clap::Parser;
use fanout_bridge::{cli::Cli, commands, config::RawConfig, telemetry};

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
    telemetry::init(format, cli.command.default_log_filter());
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
    match runtime.block_on(commands::dispatch(cli.command, raw)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fanout-bridge: {e:#}");
            ExitCode::from(commands::exit_code(&e))
        }
    }
}
