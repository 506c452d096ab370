//! `fanout-bridge publish [FILE]`: JSON lines to the inbound queue, each
//! persistent with a fresh `message_id`, pipelined with publisher confirms.

use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::Context;
use futures::{stream::FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use lapin::{types::ShortString, BasicProperties};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use serde::Serialize;

use super::broker_session::Session;
use crate::{
    broker::{fields::PERSISTENT, topology},
    cli::OutputFormat,
    config::BrokerConfig,
    domain::message::validate_json,
};

/// Publishes outstanding at once before waiting for confirms.
const WINDOW: usize = 1024;

/// Told of each line that is not JSON: (line number, why).
pub type OnRejected<'a> = &'a mut dyn FnMut(u64, &str);

/// What a publish run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub confirmed: u64,
    pub unconfirmed: u64,
    /// Lines that are not JSON (not sent).
    pub rejected: u64,
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
            };
            println!("{}", serde_json::to_string(&report)?);
        }
        OutputFormat::Text => println!("{} messages confirmed", summary.confirmed),
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
    let session = Session::open(broker, "publish").await?;
    let result = async {
        let (channel, publisher) = (&session.channel, &session.publisher);
        topology::declare_all(channel, broker).await?;
        let progress = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {pos} published ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        progress.enable_steady_tick(Duration::from_millis(120));
        let mut summary = Summary::default();
        let mut pending = FuturesUnordered::new();
        let mut line = Vec::new();
        let mut number = 0u64;
        let settle = |r: Result<(), _>, summary: &mut Summary| match r {
            Ok(()) => summary.confirmed += 1,
            Err(e) => {
                summary.unconfirmed += 1;
                tracing::warn!(error = %e, "publish not confirmed");
            }
        };
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
            let props = BasicProperties::default()
                .with_delivery_mode(PERSISTENT)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(uuid::Uuid::new_v4().to_string()));
            let confirm = publisher.send(&broker.queue, body, props).await?;
            pending.push(publisher.confirmed(confirm));
            progress.inc(1);
            while pending.len() >= WINDOW {
                if let Some(r) = pending.next().await {
                    settle(r, &mut summary);
                }
            }
        }
        while let Some(r) = pending.next().await {
            settle(r, &mut summary);
        }
        progress.finish_and_clear();
        Ok(summary)
    }
    .await;
    session.close().await;
    result
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
