//! `dlq replay`: messages back to the inbound queue, each removed from the
//! DLQ only once its own copy there is confirmed.

use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::{dlq_depth, print_lines, select, stop_on_signals, ToolSession};
use crate::{
    broker::{
        self,
        dlq_pass::{pass, Fate, Message, Reader, Stop},
        topology, BrokerError,
    },
    cli::OutputFormat,
    config::BrokerConfig,
    domain::failure::Filter,
};

// === replay ===

/// Which messages `dlq replay` moves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayRequest {
    /// At most this many (default: every one there at start).
    pub limit: Option<u32>,
    /// Only those the filter selects (reason, target, group, ids, time,
    /// text).
    pub filter: Filter,
    /// Move nothing; report what would move.
    pub dry_run: bool,
    /// At most this many messages per second to the inbound queue.
    pub rate: Option<u32>,
}

/// One message chosen for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chosen {
    pub message_id: Option<String>,
    pub reason: String,
}

/// What `dlq replay` did (the JSON shape of `--format json`).
#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    pub dlq: String,
    pub queue: String,
    pub dry_run: bool,
    pub reason: Option<String>,
    pub limit: Option<u32>,
    /// Messages that matched: moved, or in a dry run would move.
    pub matched: u64,
    /// Messages moved to the inbound queue (0 in a dry run).
    pub moved: u64,
    /// Messages read that stay in the DLQ (another reason, past the limit, a
    /// dry run).
    pub kept: u64,
    /// The matched messages, in DLQ order.
    pub messages: Vec<Chosen>,
    /// Why the replay stopped early, if it did (then exit code 1).
    pub error: Option<String>,
}

struct Chooser<'a> {
    request: &'a ReplayRequest,
    chosen: Vec<Chosen>,
    rotated: u64,
}

impl Reader for Chooser<'_> {
    fn decide(&mut self, d: &Message) -> Fate {
        let (selected, failed, _) = select(&self.request.filter, d);
        let reason = failed.reason;
        let wanted = selected
            && self
                .request
                .limit
                .is_none_or(|l| self.chosen.len() < l as usize);
        if wanted {
            self.chosen.push(Chosen {
                message_id: d
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.as_str().to_owned()),
                reason,
            });
        }
        if wanted && !self.request.dry_run {
            Fate::Replay
        } else {
            self.rotated += 1;
            Fate::Rotate
        }
    }

    fn replay_interval(&self) -> Option<std::time::Duration> {
        self.request
            .rate
            .filter(|r| *r > 0)
            .map(|r| std::time::Duration::from_secs_f64(1.0 / f64::from(r)))
    }

    /// Stops once the limit is reached, but only while nothing has been
    /// rotated: once a message went to the tail, the pass goes round the
    /// whole DLQ so that those left behind are in their old order again.
    fn done(&self) -> bool {
        self.rotated == 0
            && self
                .request
                .limit
                .is_some_and(|l| self.chosen.len() >= l as usize)
    }
}

/// # Errors
/// When the broker cannot be reached. A replay that stops part way prints
/// its report and exits 1.
pub async fn replay(
    broker_cfg: &BrokerConfig,
    request: &ReplayRequest,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let stop = stop_on_signals()?;
    let report = replay_messages_until(broker_cfg, request, &stop).await?;
    let mut lines = Vec::new();
    match format {
        OutputFormat::Json => lines.push(serde_json::to_string(&report)?),
        OutputFormat::Text if report.dry_run => {
            for m in &report.messages {
                lines.push(format!(
                    "would replay message_id={} reason={}",
                    m.message_id.as_deref().unwrap_or("-"),
                    m.reason
                ));
            }
            lines.push(format!(
                "dry run: {} messages would be replayed from {} to {}; nothing moved",
                report.matched, report.dlq, report.queue
            ));
        }
        OutputFormat::Text => {
            lines.push(format!(
                "{} messages replayed from {} to {}",
                report.moved, report.dlq, report.queue
            ));
            if report.kept > 0 {
                lines.push(format!(
                    "{} messages read stay in the DLQ, in order",
                    report.kept
                ));
            }
        }
    }
    print_lines(&lines);
    match &report.error {
        Some(e) => {
            eprintln!("fanout-bridge: replay stopped: {e}; the rest stay in the DLQ");
            Ok(ExitCode::from(1))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Makes sure the inbound queue exists before messages are moved to it. One
/// that exists is used as it is, whatever its arguments (the worker, not
/// this tool, is the judge of those); a missing one is declared as the worker
/// would declare it.
pub(super) async fn ensure_inbound_queue(
    session: &ToolSession,
    broker_cfg: &BrokerConfig,
) -> anyhow::Result<()> {
    let scratch = session.scratch_channel().await?;
    let exists = match topology::depth(&scratch, &broker_cfg.queue).await {
        Ok(_) => true,
        Err(BrokerError::QueueMissing(_)) => false,
        Err(e) => return Err(e.into()),
    };
    broker::close_channel(&scratch).await;
    if !exists {
        topology::declare_inbound(&session.channel, broker_cfg)
            .await
            .context("declaring the inbound queue to replay to")?;
    }
    Ok(())
}

/// Moves the requested messages to the inbound queue; each is removed from
/// the DLQ only after its publish is confirmed. With a reason or a dry run
/// the others read go round to the tail, so that after the pass they are in
/// their old order.
///
/// # Errors
/// When the broker cannot be reached or the inbound queue cannot be
/// declared; a failure part way is in the report's `error`.
pub async fn replay_messages(
    broker_cfg: &BrokerConfig,
    request: &ReplayRequest,
) -> anyhow::Result<ReplayReport> {
    replay_messages_until(broker_cfg, request, &Stop::new()).await
}

/// [`replay_messages`], stopped early (and settled) when `stop` is set.
///
/// # Errors
/// See [`replay_messages`].
pub async fn replay_messages_until(
    broker_cfg: &BrokerConfig,
    request: &ReplayRequest,
    stop: &Stop,
) -> anyhow::Result<ReplayReport> {
    in_session!(broker_cfg, "dlq replay", |session| async {
        let mut report = ReplayReport {
            dlq: broker_cfg.dlq.clone(),
            queue: broker_cfg.queue.clone(),
            dry_run: request.dry_run,
            reason: request.filter.reason.clone(),
            limit: request.limit,
            ..ReplayReport::default()
        };
        let Some(depth) = dlq_depth(&session, broker_cfg).await? else {
            return Ok(report);
        };
        if !request.dry_run {
            ensure_inbound_queue(&session, broker_cfg).await?;
        }
        let mut chooser = Chooser {
            request,
            chosen: Vec::new(),
            rotated: 0,
        };
        let done = pass(&mut session, broker_cfg, depth, &mut chooser, stop).await;
        report.matched = chooser.chosen.len() as u64;
        report.moved = u64::from(done.replayed);
        report.kept = u64::from(done.rotated);
        report.messages = chooser.chosen;
        report.error = match (done.error, done.stopped) {
            (Some(e), _) => Some(format!("{e:#}")),
            (None, true) => Some(format!(
                "interrupted after reading {} messages; every message read and not moved is \
                 back in the DLQ",
                done.read
            )),
            (None, false) if done.replay_failed > 0 => Some(format!(
                "{} messages could not be stored in {} and stay in the DLQ",
                done.replay_failed, broker_cfg.queue
            )),
            (None, false) => None,
        };
        Ok(report)
    })
}
