//! The subcommands. Each returns the process exit code, or an error that
//! `main` maps to one (2 for configuration, 1 otherwise).

pub mod demo;
pub mod demo_api;
pub mod dlq;
pub mod publish;
pub mod run;

use std::process::ExitCode;

use crate::{
    broker::BrokerError,
    cli::{Command, DlqCommand},
    config::{ConfigError, RawConfig},
};

/// Runs one subcommand.
///
/// # Errors
/// Configuration, broker and I/O failures, for `main` to report.
pub async fn dispatch(command: Command, raw: RawConfig) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run => run::run(&raw).await,
        Command::Publish { file } => publish::run(&raw.broker_config()?, file.as_deref()).await,
        Command::Dlq { action } => {
            let broker = raw.broker_config()?;
            match action {
                DlqCommand::Stats => dlq::stats(&broker).await,
                DlqCommand::Peek { limit } => dlq::peek(&broker, limit).await,
                DlqCommand::Replay { limit } => dlq::replay(&broker, limit).await,
            }
        }
        Command::DemoApi {
            listen,
            latency_ms,
            fail_rate,
        } => demo_api::run(listen, latency_ms, fail_rate).await,
        Command::Demo { count } => demo::run(&raw, count).await,
    }
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
