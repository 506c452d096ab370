//! The subcommands. Each returns the process exit code, or an error that
//! `main` maps to one (2 for configuration, 1 otherwise).

pub mod check;
pub mod demo;
pub mod demo_api;
pub mod dlq;
pub mod healthcheck;
pub mod publish;
pub mod run;

use std::{io::Write, process::ExitCode};

use anyhow::Context;
use clap::CommandFactory;

use crate::{
    broker::BrokerError,
    cli::{Cli, Command, DlqCommand},
    config::{ConfigError, RawConfig},
};

/// Runs one subcommand.
///
/// # Errors
/// Configuration, broker and I/O failures, for `main` to report.
pub async fn dispatch(command: Command, raw: RawConfig) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run => run::run(&raw).await,
        Command::Publish { file, format } => {
            publish::run(&raw.broker_config()?, file.as_deref(), format).await
        }
        Command::Dlq { action } => {
            let broker = raw.broker_config()?;
            match action {
                DlqCommand::Stats { filters, format } => {
                    dlq::stats(&broker, &filters.to_filter(), format).await
                }
                DlqCommand::Peek { limit, filters } => {
                    dlq::peek(&broker, limit, &filters.to_filter()).await
                }
                DlqCommand::Replay {
                    limit,
                    filters,
                    rate,
                    dry_run,
                    format,
                } => {
                    let request = dlq::ReplayRequest {
                        limit,
                        filter: filters.to_filter(),
                        dry_run,
                        rate,
                    };
                    dlq::replay(&broker, &request, format).await
                }
                DlqCommand::Groups { filters, format } => {
                    dlq::groups::groups(&broker, &filters.to_filter(), format).await
                }
                DlqCommand::Export { filters, out } => {
                    dlq::export::export(&broker, &filters.to_filter(), out.as_deref()).await
                }
                DlqCommand::Import {
                    file,
                    dry_run,
                    format,
                } => dlq::import::import(&broker, &file, dry_run, format).await,
                DlqCommand::Purge {
                    filters,
                    all,
                    yes,
                    dry_run,
                    format,
                } => {
                    let filter = filters.to_filter();
                    if filter.is_empty() && !all {
                        usage_error("dlq purge needs a filter, or --all to remove every message");
                    }
                    if !yes && !dry_run {
                        usage_error(
                            "dlq purge removes messages for good: add --yes to remove them, \
                             or --dry-run to see what would go",
                        );
                    }
                    dlq::purge::purge(&broker, &filter, dry_run, format).await
                }
            }
        }
        Command::Check { format } => check::run(&raw, format).await,
        Command::Healthcheck { url } => healthcheck::run(&raw, url.as_deref()).await,
        Command::Completions { shell } => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "fanout-bridge", &mut out);
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: None } => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DemoApi {
            listen,
            latency_ms,
            fail_rate,
        } => demo_api::run(listen, latency_ms, fail_rate).await,
        Command::Demo { count } => demo::run(&raw, count).await,
        Command::Console {
            listen,
            allow_hosts,
        } => crate::console::run(&raw, listen, &allow_hosts).await,
    }
}

/// Exits 2 with a usage error, as clap does for the flags it checks.
fn usage_error(message: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::MissingRequiredArgument, message)
        .exit()
}

/// An error as one line: each cause once. Many errors (lapin's, io's)
/// already print their source, so `{:#}` would repeat it
/// ("IO error: Connection refused: IO error: Connection refused: …").
pub fn describe_error(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The exit code for an error: 2 when the operator must fix a setting.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let configuration = error.chain().any(|cause| {
        cause.downcast_ref::<ConfigError>().is_some()
            || cause
                .downcast_ref::<BrokerError>()
                .is_some_and(BrokerError::is_configuration)
    });
    if configuration {
        2
    } else {
        1
    }
}
