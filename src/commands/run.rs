//! `fanout-bridge run`: the worker.

use std::process::ExitCode;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{app::Worker, config::RawConfig, shutdown};

/// # Errors
/// A bad setting (exit 2), a queue that exists with other arguments (exit 2),
/// or a metrics address that cannot be bound (exit 1).
pub async fn run(raw: &RawConfig) -> anyhow::Result<ExitCode> {
    let config = raw.worker_config()?;
    let listener = TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on BRIDGE_METRICS_ADDR={}",
                config.metrics_addr
            )
        })?;
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    Worker::new(config).run(listener, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
