//! `fanout-bridge publish [FILE]`: JSON lines to the inbound queue, each
//! persistent with a fresh `message_id`, pipelined with publisher confirms;
//! a line whose publish was nacked, returned or not confirmed in time is
//! reported by its number.

use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use serde::Serialize;

use crate::broker::{confirm_batch, tool_session::ToolSession};
use crate::{
    broker::{fields, topology},
    cli::OutputFormat,
    config::BrokerConfig,
    domain::message::validate_json,
};

/// Publishes sent before their confirms are awaited (in order, so that each
/// return is matched to its own line: see [`confirm_batch`]).
const WINDOW: usize = 1024;

/// Told of each line that is not JSON: (line number, why).
pub type OnRejected<'a> = &'a mut dyn FnMut(u64, &str);

/// What a publish run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub confirmed: u64,
    pub unconfirmed: u64,
    /// Lines that are not JSON (not sent).
    pub rejected: u64,
    /// The lines sent but not confirmed, in line order.
    pub unconfirmed_lines: Vec<Unconfirmed>,
}

/// A line sent but not confirmed as stored (nacked, returned as unroutable,
/// or no confirm in time): it may be missing from the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unconfirmed {
    pub line: u64,
    pub error: String,
}

/// A line that was not sent (the JSON shape of `--format json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub line: u64,
    pub error: String,
}

/// What `publish --format json` prints.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub queue: &'a str,
    pub confirmed: u64,
    pub unconfirmed: u64,
    pub rejected: Vec<Rejected>,
    pub unconfirmed_lines: &'a [Unconfirmed],
}

/// # Errors
/// When the input cannot be read or the broker cannot be reached.
pub async fn run(
    broker: &BrokerConfig,
    file: Option<&Path>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let input: Box<dyn AsyncBufRead + Unpin + Send> = match file {
        Some(path) if path != Path::new("-") => Box::new(BufReader::new(
            tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?,
        )),
        _ => Box::new(BufReader::new(tokio::io::stdin())),
    };
    let mut rejected = Vec::new();
    let mut report = |line: u64, why: &str| {
        eprintln!("line {line}: {why}; not sent");
        rejected.push(Rejected {
            line,
            error: why.to_owned(),
        });
    };
    let summary = publish_lines(broker, input, Some(&mut report)).await?;
    match format {
        OutputFormat::Json => {
            let report = Report {
                queue: &broker.queue,
                confirmed: summary.confirmed,
                unconfirmed: summary.unconfirmed,
                rejected,
                unconfirmed_lines: &summary.unconfirmed_lines,
            };
            println!("{}", serde_json::to_string(&report)?);
        }
        OutputFormat::Text => println!("{} messages confirmed", summary.confirmed),
    }
    for u in &summary.unconfirmed_lines {
        eprintln!("line {}: not confirmed: {}", u.line, u.error);
    }
    if summary.unconfirmed > 0 {
        eprintln!(
            "{} messages were not confirmed by the broker",
            summary.unconfirmed
        );
    }
    if summary.rejected > 0 {
        eprintln!("{} lines were not JSON and were not sent", summary.rejected);
    }
    Ok(if summary.unconfirmed == 0 && summary.rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Publishes every non-blank line of `input`. With `on_rejected`, lines that
/// are not JSON are not sent and `on_rejected(line_number, why)` is told of
/// each; without it every line is sent as it is (the `demo` uses that to show
/// what the worker does with a bad message).
///
/// # Errors
/// When reading fails or the broker cannot be reached or drops the connection.
pub async fn publish_lines(
    broker: &BrokerConfig,
    mut input: impl AsyncBufRead + Unpin,
    mut on_rejected: Option<OnRejected<'_>>,
) -> anyhow::Result<Summary> {
    let mut session = ToolSession::open(broker, "publish").await?;
    let result = async {
        topology::declare_all(&session.channel, broker).await?;
        let progress = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {pos} published ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        progress.enable_steady_tick(Duration::from_millis(120));
        let mut summary = Summary::default();
        let mut batch = Batch::default();
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            if input
                .read_until(b'\n', &mut line)
                .await
                .context("reading input")?
                == 0
            {
                break;
            }
            number += 1;
            let body = trim_newline(&line);
            if body.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Some(report) = on_rejected.as_mut() {
                if let Err(why) = validate_json(body) {
                    summary.rejected += 1;
                    report(number, &why.0);
                    continue;
                }
            }
            let id = uuid::Uuid::new_v4().to_string();
            let props = fields::published_properties(&id);
            // A publish that cannot even be sent means the channel or the
            // connection is gone: the run stops with that error.
            let confirm = session.publisher.send(&broker.queue, body, props).await?;
            batch.push(number, id, Ok(confirm));
            progress.inc(1);
            if batch.lines.len() >= WINDOW {
                batch.settle(&mut session, &mut summary).await?;
            }
        }
        batch.settle(&mut session, &mut summary).await?;
        progress.finish_and_clear();
        summary.unconfirmed_lines.sort_by_key(|u| u.line);
        Ok(summary)
    }
    .await;
    session.close().await;
    result
}

/// Publishes sent and not yet settled: (line number, message_id) and the
/// confirm of each.
#[derive(Default)]
struct Batch {
    lines: Vec<(u64, String)>,
    confirms: Vec<confirm_batch::Sent>,
}

impl Batch {
    fn push(&mut self, line: u64, id: String, confirm: confirm_batch::Sent) {
        self.lines.push((line, id));
        self.confirms.push(confirm);
    }

    /// Awaits the confirms and counts each line. After a batch whose returns
    /// could not be matched (a confirm timed out), publishing goes on on a
    /// fresh channel: a late confirm or return on the old one would be taken
    /// for a later line's.
    async fn settle(
        &mut self,
        session: &mut ToolSession,
        summary: &mut Summary,
    ) -> anyhow::Result<()> {
        let lines = std::mem::take(&mut self.lines);
        let confirms = std::mem::take(&mut self.confirms);
        let (results, uncertain) = confirm_batch::outcomes(confirms, |i, returned| {
            returned
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str())
                == Some(lines[i].1.as_str())
        })
        .await;
        for ((line, _), result) in lines.into_iter().zip(results) {
            match result {
                Ok(()) => summary.confirmed += 1,
                Err(e) => {
                    summary.unconfirmed += 1;
                    summary.unconfirmed_lines.push(Unconfirmed {
                        line,
                        error: e.to_string(),
                    });
                }
            }
        }
        if uncertain {
            session.renew_publisher().await?;
        }
        Ok(())
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
