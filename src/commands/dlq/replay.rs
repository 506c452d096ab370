//! `dlq replay`: messages back to the inbound queue, each removed from the
//! DLQ only once its own copy there is confirmed.

use std::process::ExitCode;

use anyhow::Context;
use lapin::{message::Delivery, BasicProperties};
use serde::Serialize;

use super::{
    dlq_depth,
    pass::{filtered_headers, pass, Fate, Reader, DELIVERY_COUNT},
    reasons::reason_of,
    Session,
};
use crate::{
    broker::{self, fields, topology, BrokerError},
    cli::OutputFormat,
    config::BrokerConfig,
};

/// Headers the broker writes when it dead-letters a message. A replayed
/// message starts a new history without them (and without the delivery
/// count).
const DEATH_HEADERS: [&str; 1] = ["x-death"];
const DEATH_PREFIXES: [&str; 2] = ["x-first-death-", "x-last-death-"];

/// The properties of a replayed message: `x-bridge-done-targets` and the
/// message's own headers are kept (see [`fields::replay_properties`]); the
/// broker's dead-lettering history goes too, so a replayed message is a new
/// start and a later dead-lettering is not mistaken for an old one.
pub(super) fn replayed_properties(props: &BasicProperties) -> BasicProperties {
    let replayed = fields::replay_properties(props);
    let headers = filtered_headers(replayed.headers().as_ref(), |k| {
        k != DELIVERY_COUNT
            && !DEATH_HEADERS.contains(&k)
            && !DEATH_PREFIXES.iter().any(|p| k.starts_with(p))
    });
    replayed.with_headers(headers)
}

// === replay ===

/// Which messages `dlq replay` moves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayRequest {
    /// At most this many (default: every one there at start).
    pub limit: Option<u32>,
    /// Only those whose reason (as [`reason_of`] reports it) is this.
    pub reason: Option<String>,
    /// Move nothing; report what would move.
    pub dry_run: bool,
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
    fn decide(&mut self, d: &Delivery) -> Fate {
        let reason = reason_of(d.properties.headers().as_ref());
        let wanted = self.request.reason.as_ref().is_none_or(|r| *r == reason)
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
    let report = replay_messages(broker_cfg, request).await?;
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string(&report)?),
        OutputFormat::Text if report.dry_run => {
            for m in &report.messages {
                println!(
                    "would replay message_id={} reason={}",
                    m.message_id.as_deref().unwrap_or("-"),
                    m.reason
                );
            }
            println!(
                "dry run: {} messages would be replayed from {} to {}; nothing moved",
                report.matched, report.dlq, report.queue
            );
        }
        OutputFormat::Text => {
            println!(
                "{} messages replayed from {} to {}",
                report.moved, report.dlq, report.queue
            );
            if report.kept > 0 {
                println!("{} messages read stay in the DLQ, in order", report.kept);
            }
        }
    }
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
async fn ensure_inbound_queue(session: &Session, broker_cfg: &BrokerConfig) -> anyhow::Result<()> {
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
    in_session!(broker_cfg, "dlq replay", |session| async {
        let mut report = ReplayReport {
            dlq: broker_cfg.dlq.clone(),
            queue: broker_cfg.queue.clone(),
            dry_run: request.dry_run,
            reason: request.reason.clone(),
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
        let done = pass(&session, broker_cfg, depth, &mut chooser).await;
        report.matched = chooser.chosen.len() as u64;
        report.moved = u64::from(done.replayed);
        report.kept = u64::from(done.rotated);
        report.messages = chooser.chosen;
        report.error = done.error.map(|e| format!("{e:#}"));
        Ok(report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::dlq::reasons::tests::{death, table, text};
    use lapin::types::{AMQPValue, FieldArray};

    #[test]
    fn replay_drops_the_broker_history_and_keeps_done_targets() {
        let props = BasicProperties::default()
            .with_message_id("m".into())
            .with_headers(table(&[
                (
                    "x-death",
                    AMQPValue::FieldArray(FieldArray::from(vec![death("delivery_limit")])),
                ),
                ("x-first-death-reason", text("delivery_limit")),
                ("x-first-death-queue", text("inbound")),
                ("x-last-death-reason", text("delivery_limit")),
                ("x-delivery-count", AMQPValue::LongInt(3)),
                ("x-bridge-done-targets", text("logging")),
                ("x-bridge-reason", text("api_failed")),
                ("tenant", text("acme")),
            ]));
        let out = replayed_properties(&props);
        let h = out.headers().as_ref().unwrap();
        let mut keys: Vec<_> = h.inner().keys().map(|k| k.as_str().to_owned()).collect();
        keys.sort();
        assert_eq!(keys, ["tenant", "x-bridge-done-targets"]);
        assert_eq!(out.message_id().as_ref().unwrap().as_str(), "m");
    }
}
