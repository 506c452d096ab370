//! Why a message is in the DLQ, and `dlq stats`: a count per reason.

use std::{collections::BTreeMap, process::ExitCode};

use serde::Serialize;

use super::{dlq_depth, interrupted, print_lines, select, stop_on_signals, ToolSession};

use crate::{
    broker::dlq_pass::{pass, Fate, Message, Reader, Stop},
    cli::OutputFormat,
    config::BrokerConfig,
    domain::failure::Filter,
};

/// DLQ depth and a count per reason.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// The DLQ as configured (`BRIDGE_DLQ`).
    pub dlq: String,
    /// Ready messages when the command started.
    pub depth: u32,
    /// Messages per reason, among those read that match the filters.
    pub reasons: BTreeMap<String, u64>,
    /// With filters: the messages read that match them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
}

/// # Errors
/// When the broker cannot be reached or a read message cannot be put back
/// at the tail (it then stays in the DLQ).
pub async fn stats(
    broker_cfg: &BrokerConfig,
    filter: &Filter,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let stop = stop_on_signals()?;
    let s = collect_stats_until(broker_cfg, filter, &stop).await?;
    let lines = match format {
        OutputFormat::Json => vec![serde_json::to_string(&s)?],
        OutputFormat::Text => {
            let mut lines = vec![format!("queue: {}", s.dlq), format!("depth: {}", s.depth)];
            lines.extend(s.reasons.iter().map(|(r, n)| format!("{r}: {n}")));
            lines
        }
    };
    print_lines(&lines);
    Ok(ExitCode::SUCCESS)
}

struct Counter<'a> {
    filter: &'a Filter,
    reasons: BTreeMap<String, u64>,
    matched: u64,
}

impl Reader for Counter<'_> {
    fn decide(&mut self, d: &Message) -> Fate {
        let (wanted, failed, _) = select(self.filter, d);
        if wanted {
            self.matched += 1;
            *self.reasons.entry(failed.reason).or_default() += 1;
        }
        Fate::Rotate
    }
}

/// Reads every message once (a full rotation: the order stays) to count
/// reasons.
///
/// # Errors
/// When the broker cannot be reached or a copy is not confirmed.
pub async fn collect_stats(broker_cfg: &BrokerConfig) -> anyhow::Result<Stats> {
    collect_stats_until(broker_cfg, &Filter::default(), &Stop::new()).await
}

async fn collect_stats_until(
    broker_cfg: &BrokerConfig,
    filter: &Filter,
    stop: &Stop,
) -> anyhow::Result<Stats> {
    in_session!(broker_cfg, "dlq stats", |session| async {
        let Some(depth) = dlq_depth(&session, broker_cfg).await? else {
            return Ok(Stats {
                dlq: broker_cfg.dlq.clone(),
                ..Stats::default()
            });
        };
        let mut counter = Counter {
            filter,
            reasons: BTreeMap::new(),
            matched: 0,
        };
        let done = pass(&mut session, broker_cfg, depth, &mut counter, stop).await;
        if let Some(e) = done.error {
            return Err(e.context("counting the DLQ's reasons"));
        }
        if done.stopped {
            return Err(interrupted(done.read));
        }
        Ok(Stats {
            dlq: broker_cfg.dlq.clone(),
            depth,
            reasons: counter.reasons,
            matched: (!filter.is_empty()).then_some(counter.matched),
        })
    })
}
