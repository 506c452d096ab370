//! `dlq groups`: the DLQ's failure groups, largest first.

use std::{collections::HashMap, process::ExitCode};

use serde::Serialize;
use time::OffsetDateTime;

use super::{dlq_depth, interrupted, print_lines, select, stop_on_signals, ToolSession};
use crate::{
    broker::dlq_pass::{pass, Fate, Message, Reader, Stop},
    cli::OutputFormat,
    config::BrokerConfig,
    domain::{dead_letter::rfc3339_utc, failure::Filter},
};

/// One failure group as `dlq groups --format json` and the console show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupSummary {
    pub id: String,
    pub reason: String,
    pub targets: Vec<String>,
    pub error: String,
    pub label: String,
    pub count: u64,
    /// The earliest and latest dead-lettering time among its messages.
    pub first: Option<String>,
    pub last: Option<String>,
    /// How many of its messages had been replayed before and failed again.
    pub replayed: u64,
}

/// The JSON shape of `dlq groups --format json` (and the console's
/// `/api/groups`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Groups {
    pub dlq: String,
    pub depth: u32,
    pub groups: Vec<GroupSummary>,
}

#[derive(Default)]
struct Tally {
    summary: Option<GroupSummary>,
    first: Option<OffsetDateTime>,
    last: Option<OffsetDateTime>,
}

struct Grouper<'a> {
    filter: &'a Filter,
    groups: HashMap<String, Tally>,
}

impl Reader for Grouper<'_> {
    fn decide(&mut self, d: &Message) -> Fate {
        let (wanted, failed, group) = select(self.filter, d);
        if wanted {
            let tally = self.groups.entry(group.id.clone()).or_default();
            let summary = tally.summary.get_or_insert(GroupSummary {
                id: group.id,
                reason: group.reason,
                targets: group.targets,
                error: group.error,
                label: group.label,
                count: 0,
                first: None,
                last: None,
                replayed: 0,
            });
            summary.count += 1;
            if failed.replays > 0 {
                summary.replayed += 1;
            }
            if let Some(at) = failed.at {
                tally.first = Some(tally.first.map_or(at, |f| f.min(at)));
                tally.last = Some(tally.last.map_or(at, |l| l.max(at)));
            }
        }
        Fate::Rotate
    }
}

/// Reads every message once (a full rotation: the order stays) and groups
/// those that match `filter`.
///
/// # Errors
/// When the broker cannot be reached, another DLQ operation holds the lock,
/// a copy is not confirmed, or `stop` interrupted it.
pub async fn collect_groups(
    broker_cfg: &BrokerConfig,
    filter: &Filter,
    stop: &Stop,
) -> anyhow::Result<Groups> {
    in_session!(broker_cfg, "dlq groups", |session| async {
        let mut out = Groups {
            dlq: broker_cfg.dlq.clone(),
            ..Groups::default()
        };
        let Some(depth) = dlq_depth(&session, broker_cfg).await? else {
            return Ok(out);
        };
        out.depth = depth;
        let mut grouper = Grouper {
            filter,
            groups: HashMap::new(),
        };
        let done = pass(&mut session, broker_cfg, depth, &mut grouper, stop).await;
        if let Some(e) = done.error {
            return Err(e.context("grouping the DLQ's messages"));
        }
        if done.stopped {
            return Err(interrupted(done.read));
        }
        out.groups = grouper
            .groups
            .into_values()
            .filter_map(|t| {
                let mut s = t.summary?;
                s.first = t.first.map(rfc3339_utc);
                s.last = t.last.map(rfc3339_utc);
                Some(s)
            })
            .collect();
        out.groups
            .sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
        Ok(out)
    })
}

/// # Errors
/// See [`collect_groups`].
pub async fn groups(
    broker_cfg: &BrokerConfig,
    filter: &Filter,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let stop = stop_on_signals()?;
    let g = collect_groups(broker_cfg, filter, &stop).await?;
    let lines = match format {
        OutputFormat::Json => vec![serde_json::to_string(&g)?],
        OutputFormat::Text => {
            let mut lines = vec![format!(
                "{}: {} messages, {} groups",
                g.dlq,
                g.depth,
                g.groups.len()
            )];
            for s in &g.groups {
                let replayed = if s.replayed > 0 {
                    format!("  ({} failed again after a replay)", s.replayed)
                } else {
                    String::new()
                };
                lines.push(format!(
                    "{}  {:>7}  {}  first {}  last {}{replayed}",
                    s.id,
                    s.count,
                    s.label,
                    s.first.as_deref().unwrap_or("-"),
                    s.last.as_deref().unwrap_or("-"),
                ));
            }
            lines
        }
    };
    print_lines(&lines);
    Ok(ExitCode::SUCCESS)
}
