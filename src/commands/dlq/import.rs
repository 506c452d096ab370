//! `dlq import`: publishes `dlq export` lines (edited or not) to the inbound
//! queue as `dlq replay` would: edit a message, then retry it.

use std::{path::Path, process::ExitCode};

use anyhow::Context as _;
use serde::Serialize;

use super::{print_lines, replay::ensure_inbound_queue, ToolSession};
use crate::{
    broker::{fields, record::parse_record},
    cli::OutputFormat,
    config::BrokerConfig,
};

/// A line that is not a valid export record.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub line: u64,
    pub error: String,
}

/// What `dlq import` did (the JSON shape of `--format json`).
#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    pub queue: String,
    pub dry_run: bool,
    /// Records read (blank lines are skipped).
    pub read: u64,
    /// Published and confirmed (0 in a dry run).
    pub published: u64,
    /// Valid records that were not confirmed (the broker refused them).
    pub unconfirmed: u64,
    pub rejected: Vec<Rejected>,
    pub error: Option<String>,
}

/// # Errors
/// When the file cannot be read or the broker cannot be reached; bad lines
/// and refused publishes are in the report (exit code 1).
pub async fn import(
    broker_cfg: &BrokerConfig,
    file: &Path,
    dry_run: bool,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    // Line by line: an export of big messages is never all in memory.
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?,
    );
    let mut report = ImportReport {
        queue: broker_cfg.queue.clone(),
        dry_run,
        ..ImportReport::default()
    };
    let session = if dry_run {
        None
    } else {
        let session = ToolSession::open(broker_cfg, "dlq import").await?;
        if let Err(e) = ensure_inbound_queue(&session, broker_cfg).await {
            session.close().await;
            return Err(e);
        }
        Some(session)
    };
    let read = async {
        for (i, line) in std::io::BufRead::lines(reader).enumerate() {
            let line = line.with_context(|| format!("reading {}", file.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            report.read += 1;
            let (body, props) = match parse_record(&line) {
                Ok(m) => m,
                Err(error) => {
                    report.rejected.push(Rejected {
                        line: i as u64 + 1,
                        error,
                    });
                    continue;
                }
            };
            let Some(session) = &session else {
                continue;
            };
            let (props, _) = fields::fit_frame(props, session.publisher.frame_max());
            match session
                .publisher
                .publish(&broker_cfg.queue, &body, props)
                .await
            {
                Ok(()) => report.published += 1,
                Err(e) => {
                    report.unconfirmed += 1;
                    report.error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Some(session) = session {
        session.close().await;
    }
    read?;
    let mut lines = Vec::new();
    match format {
        OutputFormat::Json => lines.push(serde_json::to_string(&report)?),
        OutputFormat::Text => {
            for r in &report.rejected {
                lines.push(format!("line {}: {}", r.line, r.error));
            }
            let valid = report.read - report.rejected.len() as u64;
            lines.push(if dry_run {
                format!(
                    "dry run: {valid} of {} records would be published to {}",
                    report.read, report.queue
                )
            } else {
                format!(
                    "{} of {} records published to {}",
                    report.published, report.read, report.queue
                )
            });
        }
    }
    print_lines(&lines);
    for r in &report.rejected {
        eprintln!(
            "fanout-bridge: line {}: not a valid export record: {}",
            r.line, r.error
        );
    }
    if let Some(e) = &report.error {
        eprintln!(
            "fanout-bridge: {} records were not confirmed: {e}",
            report.unconfirmed
        );
    }
    if report.rejected.is_empty() && report.error.is_none() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}
