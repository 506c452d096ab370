//! `dlq purge`: removes the matching messages for good (with `--yes`), or
//! shows what it would remove (`--dry-run`). The others stay, in order.

use std::{collections::BTreeMap, process::ExitCode};

use serde::Serialize;

use super::{dlq_depth, print_lines, select, stop_on_signals, ToolSession};
use crate::{
    broker::dlq_pass::{pass, Fate, Message, Reader, Stop},
    cli::OutputFormat,
    config::BrokerConfig,
    domain::failure::Filter,
};

/// What a purge did, per group (the JSON shape of `--format json`).
#[derive(Debug, Default, Serialize)]
pub struct PurgeReport {
    pub dlq: String,
    pub dry_run: bool,
    /// Messages that matched: removed, or in a dry run would be.
    pub matched: u64,
    pub removed: u64,
    /// Messages read that stay.
    pub kept: u64,
    /// Per group id: its label and how many matched.
    pub groups: BTreeMap<String, GroupCount>,
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct GroupCount {
    pub label: String,
    pub count: u64,
}

struct Purger<'a> {
    filter: &'a Filter,
    dry_run: bool,
    groups: BTreeMap<String, GroupCount>,
    matched: u64,
}

impl Reader for Purger<'_> {
    fn decide(&mut self, d: &Message) -> Fate {
        let (wanted, _, group) = select(self.filter, d);
        if !wanted {
            return Fate::Rotate;
        }
        self.matched += 1;
        let entry = self.groups.entry(group.id).or_default();
        entry.label = group.label;
        entry.count += 1;
        if self.dry_run {
            Fate::Rotate
        } else {
            Fate::Remove
        }
    }
}

/// Removes (or, in a dry run, counts) the messages `filter` selects.
///
/// # Errors
/// When the broker cannot be reached or another DLQ operation holds the
/// lock; a failure part way is in the report's `error`.
pub async fn purge_messages(
    broker_cfg: &BrokerConfig,
    filter: &Filter,
    dry_run: bool,
    stop: &Stop,
) -> anyhow::Result<PurgeReport> {
    in_session!(broker_cfg, "dlq purge", |session| async {
        let mut report = PurgeReport {
            dlq: broker_cfg.dlq.clone(),
            dry_run,
            ..PurgeReport::default()
        };
        let Some(depth) = dlq_depth(&session, broker_cfg).await? else {
            return Ok(report);
        };
        let mut purger = Purger {
            filter,
            dry_run,
            groups: BTreeMap::new(),
            matched: 0,
        };
        let done = pass(&mut session, broker_cfg, depth, &mut purger, stop).await;
        report.matched = purger.matched;
        report.groups = purger.groups;
        report.removed = u64::from(done.removed);
        report.kept = u64::from(done.rotated);
        report.error = match (done.error, done.stopped) {
            (Some(e), _) => Some(format!("{e:#}")),
            (None, true) => Some(format!(
                "interrupted after reading {} messages; {} removed, the others stay in the DLQ",
                done.read, done.removed
            )),
            (None, false) => None,
        };
        Ok(report)
    })
}

/// # Errors
/// See [`purge_messages`].
pub async fn purge(
    broker_cfg: &BrokerConfig,
    filter: &Filter,
    dry_run: bool,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let stop = stop_on_signals()?;
    let report = purge_messages(broker_cfg, filter, dry_run, &stop).await?;
    let mut lines = Vec::new();
    match format {
        OutputFormat::Json => lines.push(serde_json::to_string(&report)?),
        OutputFormat::Text => {
            let verb = if dry_run { "would remove" } else { "removed" };
            for (id, g) in &report.groups {
                lines.push(format!("{id}  {:>7}  {}", g.count, g.label));
            }
            let count = if dry_run {
                report.matched
            } else {
                report.removed
            };
            lines.push(format!(
                "{verb} {count} messages from {}; {} stay",
                report.dlq, report.kept
            ));
        }
    }
    print_lines(&lines);
    match &report.error {
        Some(e) => {
            eprintln!("fanout-bridge: purge stopped: {e}");
            Ok(ExitCode::from(1))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
