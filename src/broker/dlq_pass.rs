//! The one engine every DLQ command runs on: a **pass** reads messages from
//! the head of the DLQ and settles each as the command decides (keep it,
//! move it to the inbound queue, remove it), never losing one.
//!
//! # Why a pass is shaped like this
//!
//! A queue cannot be browsed, so reading is taking: `basic.get`, then either
//! an ack (gone) or a hand-back (nack, closed channel). A quorum queue counts
//! every hand-back against its delivery limit (RabbitMQ 4: 20 by default;
//! before 4.3 every return counts) and drops a message past it, and a DLQ
//! has no dead-letter target of its own. So a pass never hands a message
//! back on purpose:
//!
//! - **Keep** is a *rotation*: a copy goes to the DLQ's tail (mandatory,
//!   confirmed, a fresh message with a fresh delivery count), then the
//!   original is acked. A pass over the whole DLQ leaves its order as it was.
//! - **Replay** is a copy to the inbound queue, then the ack. If that copy is
//!   not stored (returned, nacked, timed out), the message is rotated instead:
//!   it stays in the DLQ without spending an attempt.
//! - **Remove** is an ack with no copy.
//! - A copy whose confirm is uncertain (timeout, channel error, a return that
//!   matches no publish) is published again, alone, on a fresh channel: a
//!   duplicate in the DLQ is possible, a loss is not.
//!
//! What is taken and not yet settled is a small **window**: at most
//! [`WINDOW_MESSAGES`] messages and, unless one message alone is bigger,
//! [`WINDOW_BYTES`] of bodies. The window bounds the memory (8 MiB bodies do
//! not take gigabytes) and what a `kill -9`, an out-of-memory kill or a lost
//! connection can hand back (the only hand-backs left, one attempt each). A
//! message that already carries the broker's `x-delivery-count` was handed
//! back before: its window closes on it, so it is held for one round trip.
//!
//! An interruption ([`Stop`]: Ctrl-C, SIGTERM, a closed output pipe) is
//! checked before every read: the pass stops reading, settles its window as
//! usual and returns, so nothing is handed back.
//!
//! Every pass reads at most the depth seen when it started: what workers
//! dead-letter meanwhile, and the pass's own copies, land behind that, so a
//! pass always ends and never sees a message twice.

use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicGetOptions, BasicNackOptions},
    types::{AMQPValue, FieldTable},
    BasicProperties,
};
use tokio_util::sync::CancellationToken;

use super::{
    confirm_batch, fields,
    publisher::PublishError,
    tool_session::{Session, CONFIRM_TIMEOUT},
};
use crate::{config::BrokerConfig, domain::dead_letter};

/// Messages taken before their copies' confirms are awaited: enough to keep
/// the broker busy (copies are pipelined), few enough that a `kill -9` hands
/// back little.
pub const WINDOW_MESSAGES: usize = 16;

/// Body bytes taken before the window is settled. A single message bigger
/// than this is still read, alone.
pub const WINDOW_BYTES: usize = 8 * 1024 * 1024;

/// The broker's delivery count of a quorum queue's message: a copy drops it
/// (the broker keeps its own, and an old one must not look like a new
/// attempt).
pub const DELIVERY_COUNT: &str = "x-delivery-count";

/// How many times a copy is published again, alone, after an uncertain or
/// refused confirm before the pass gives up on it (and hands it back).
const RESENDS: usize = 3;

/// Headers the broker writes when it dead-letters a message. A replayed
/// message starts a new history without them.
const DEATH_HEADERS: [&str; 1] = ["x-death"];
const DEATH_PREFIXES: [&str; 2] = ["x-first-death-", "x-last-death-"];

/// Another DLQ operation holds the lock: this one did nothing.
#[derive(Debug, thiserror::Error)]
#[error(
    "another DLQ operation is running on {dlq} (a dlq command or the console holds {lock}); \
     try again when it is done"
)]
pub struct DlqBusy {
    pub dlq: String,
    pub lock: String,
}

/// The name of a DLQ's lock queue.
pub fn lock_name(dlq: &str) -> String {
    format!("{dlq}.lock")
}

/// Takes the DLQ's lock for as long as `session` is open: an exclusive,
/// auto-deleted queue `<dlq>.lock`, which the broker gives one connection at
/// a time and drops when that connection goes (a `kill -9` included), so two
/// readers never read each other's copies and a crashed one frees it.
///
/// # Errors
/// [`DlqBusy`] when another connection holds it; a broker error otherwise.
pub async fn lock(session: &Session, dlq: &str) -> anyhow::Result<()> {
    let name = lock_name(dlq);
    let channel = session.scratch_channel().await?;
    let declared = channel
        .queue_declare(
            name.as_str().into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    super::close_channel(&channel).await;
    match declared {
        Ok(_) => Ok(()),
        Err(e) if super::is_resource_locked(&e) => Err(DlqBusy {
            dlq: dlq.to_owned(),
            lock: name,
        }
        .into()),
        Err(e) => Err(anyhow::Error::from(e).context("taking the DLQ's lock")),
    }
}

/// What a pass does with one message it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// A copy to the DLQ's tail, then the original acked.
    Rotate,
    /// A copy to the inbound queue (replay headers), then the original acked.
    Replay,
    /// The original acked, no copy: gone for good.
    Remove,
}

/// The command-specific part of a pass over the DLQ.
pub trait Reader {
    /// Called for each message read, in DLQ order, before its copy is sent.
    fn decide(&mut self, delivery: &Delivery) -> Fate;
    /// Checked before each read: true ends the pass before its bound.
    fn done(&self) -> bool {
        false
    }
    /// The least time between two replayed copies (`--rate`), if any.
    fn replay_interval(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Tells a pass to stop reading and settle what it holds. Cloned into signal
/// handlers and output writers.
#[derive(Debug, Clone, Default)]
pub struct Stop(CancellationToken);

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    /// A stop that follows `token` (e.g. the signal handler's).
    pub fn following(token: CancellationToken) -> Stop {
        Stop(token)
    }

    pub fn stop(&self) {
        self.0.cancel();
    }

    pub fn is_stopped(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct Pass {
    pub read: u32,
    /// Copied to the DLQ's tail (kept), including replays that fell back.
    pub rotated: u32,
    pub replayed: u32,
    pub removed: u32,
    /// Chosen for replay but kept in the DLQ because the copy to the inbound
    /// queue was not stored (counted in `rotated` too).
    pub replay_failed: u32,
    /// The pass was told to stop before its bound.
    pub stopped: bool,
    /// Why the pass stopped early; every message it had not settled is back
    /// in the DLQ.
    pub error: Option<anyhow::Error>,
}

/// A message taken and the copy sent for it.
struct Taken {
    delivery: Delivery,
    fate: Fate,
    copy: Option<Copy>,
}

/// Where a copy went and what it carried, to match a `basic.return`.
struct Copy {
    queue: String,
    props: BasicProperties,
}

/// Reads up to `max` messages from the head of the DLQ and settles each as
/// `reader` decides (see the module doc). Ends early when `reader` is done,
/// when `stop` is set, or on a broker error; in every case what was taken is
/// settled before it returns.
pub async fn pass(
    session: &mut Session,
    broker_cfg: &BrokerConfig,
    max: u32,
    reader: &mut (dyn Reader + Send),
    stop: &Stop,
) -> Pass {
    let mut out = Pass::default();
    let mut empty = false;
    let mut last_replay: Option<tokio::time::Instant> = None;
    while !empty && out.read < max && !reader.done() && !stop.is_stopped() {
        let mut window: Vec<Taken> = Vec::with_capacity(WINDOW_MESSAGES);
        let mut confirms = Vec::with_capacity(WINDOW_MESSAGES);
        let mut bytes = 0usize;
        while window.len() < WINDOW_MESSAGES
            && bytes < WINDOW_BYTES
            && out.read < max
            && !reader.done()
            && !stop.is_stopped()
        {
            let got = match session
                .channel
                .basic_get(
                    broker_cfg.dlq.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await
            {
                Ok(got) => got,
                Err(e) => {
                    out.error = Some(anyhow::Error::from(e).context("reading from the DLQ"));
                    break;
                }
            };
            // Someone else emptied it meanwhile: nothing more to read.
            let Some(got) = got else {
                empty = true;
                break;
            };
            let delivery = got.delivery;
            out.read += 1;
            bytes += delivery.data.len();
            let handed_back_before =
                fields::header_int(delivery.properties.headers().as_ref(), DELIVERY_COUNT)
                    .is_some_and(|n| n > 0);
            let fate = reader.decide(&delivery);
            let copy = copy_for(
                fate,
                &delivery.properties,
                broker_cfg,
                session.publisher.frame_max(),
            );
            // Paced replays are settled one by one, so a slow rate never
            // holds a window of taken messages while it waits.
            let paced = fate == Fate::Replay && reader.replay_interval().is_some();
            if let (true, Some(interval)) = (paced, reader.replay_interval()) {
                if let Some(last) = last_replay {
                    tokio::select! {
                        () = tokio::time::sleep_until(last + interval) => {}
                        () = stop.0.cancelled() => {}
                    }
                }
                last_replay = Some(tokio::time::Instant::now());
            }
            let mut unsent = false;
            if let Some(copy) = &copy {
                let sent = session
                    .publisher
                    .send(&copy.queue, &delivery.data, copy.props.clone())
                    .await;
                // Not even sent: the publishing channel is gone, and so would
                // the next copies be. Settle what was taken and stop reading.
                unsent = sent.is_err();
                confirms.push(sent);
            }
            window.push(Taken {
                delivery,
                fate,
                copy,
            });
            if unsent || handed_back_before || paced {
                break;
            }
        }
        settle(session, broker_cfg, window, confirms, &mut out).await;
        if out.error.is_some() {
            break;
        }
    }
    out.stopped = stop.is_stopped();
    out
}

/// The copy a fate sends, if any.
/// A copy always fits the connection's frame (a replay adds a header): the
/// largest original headers are left out otherwise and named in
/// `x-bridge-headers-dropped`, never the body.
fn copy_for(
    fate: Fate,
    props: &BasicProperties,
    broker_cfg: &BrokerConfig,
    frame_max: u32,
) -> Option<Copy> {
    let (queue, props) = match fate {
        Fate::Rotate => (broker_cfg.dlq.clone(), rotated_properties(props)),
        Fate::Replay => (broker_cfg.queue.clone(), replayed_properties(props)),
        Fate::Remove => return None,
    };
    let (props, _dropped) = fields::fit_frame(props, frame_max);
    Some(Copy { queue, props })
}

/// Awaits the window's confirms and settles each message taken: acked once
/// its own copy is stored (or at once for a removal); a copy not stored is
/// sent again alone, and a replay that cannot be stored is rotated instead.
async fn settle(
    session: &mut Session,
    broker_cfg: &BrokerConfig,
    window: Vec<Taken>,
    confirms: Vec<Result<lapin::PublisherConfirm, PublishError>>,
    out: &mut Pass,
) {
    let copies: Vec<(&str, &[u8], &BasicProperties)> = window
        .iter()
        .filter_map(|t| {
            t.copy
                .as_ref()
                .map(|c| (c.queue.as_str(), &t.delivery.data[..], &c.props))
        })
        .collect();
    let (results, uncertain) = confirm_batch::outcomes(confirms, |i, returned| {
        let (queue, body, props) = copies[i];
        returned.delivery.routing_key.as_str() == queue
            && returned.delivery.data == body
            && &returned.delivery.properties == props
    })
    .await;
    drop(copies);
    if uncertain {
        // A late confirm or return on this channel could be taken for a
        // later publish's.
        if let Err(e) = session.renew_publisher().await {
            out.error
                .get_or_insert(e.context("opening a new publishing channel"));
        }
    }
    let mut results = results.into_iter();
    for taken in window {
        let first = match taken.copy {
            Some(_) => results
                .next()
                .unwrap_or_else(|| Err(PublishError::Channel("no confirm for this copy".into()))),
            None => Ok(()),
        };
        let kept = match first {
            Ok(()) => Ok(taken.fate),
            Err(e) => resend(session, broker_cfg, &taken, e).await,
        };
        match kept {
            Ok(fate) => {
                if fate != taken.fate {
                    out.replay_failed += 1;
                }
                ack(&taken.delivery, fate, out).await;
            }
            Err(e) => {
                // Nothing stored it: the one hand-back left, and only after
                // every copy failed.
                let _ = taken
                    .delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                out.error.get_or_insert(e);
            }
        }
    }
}

/// After a copy was not stored: publishes it again, alone (one publish in
/// flight, so its return is its own), and a replay that still cannot be
/// stored becomes a rotation. Returns the fate that was stored.
async fn resend(
    session: &mut Session,
    broker_cfg: &BrokerConfig,
    taken: &Taken,
    first: PublishError,
) -> anyhow::Result<Fate> {
    let mut last = first;
    let mut fates = vec![taken.fate];
    if taken.fate == Fate::Replay {
        fates.push(Fate::Rotate);
    }
    for fate in fates {
        let Some(copy) = copy_for(
            fate,
            &taken.delivery.properties,
            broker_cfg,
            session.publisher.frame_max(),
        ) else {
            return Ok(fate);
        };
        for _ in 0..RESENDS {
            // A return means the queue is not there: sending it there again
            // will not help.
            if matches!(last, PublishError::Returned(_)) && fate == taken.fate {
                break;
            }
            match session
                .publisher
                .publish(&copy.queue, &taken.delivery.data, copy.props.clone())
                .await
            {
                Ok(()) => return Ok(fate),
                Err(e) => {
                    let stale = !matches!(e, PublishError::Returned(_) | PublishError::Nacked);
                    last = e;
                    if stale {
                        if let Err(e) = session.renew_publisher().await {
                            return Err(e.context("opening a new publishing channel"));
                        }
                    }
                }
            }
        }
    }
    let target = match taken.fate {
        Fate::Rotate | Fate::Remove => "the DLQ's tail",
        Fate::Replay => "the inbound queue or the DLQ's tail",
    };
    Err(anyhow::Error::from(last).context(format!(
        "copying a message to {target} (no confirm within {CONFIRM_TIMEOUT:?} each try, or refused)"
    )))
}

async fn ack(delivery: &Delivery, fate: Fate, out: &mut Pass) {
    match delivery.acker.ack(BasicAckOptions::default()).await {
        Ok(true) => match fate {
            Fate::Rotate => out.rotated += 1,
            Fate::Replay => out.replayed += 1,
            Fate::Remove => out.removed += 1,
        },
        // Not sent (channel gone) or refused: the copy is stored and the
        // original comes back to the DLQ: a duplicate, never a loss.
        Ok(false) => {
            out.error.get_or_insert_with(|| {
                anyhow::anyhow!("the channel closed before a read message was removed")
            });
        }
        Err(e) => {
            out.error.get_or_insert_with(|| {
                anyhow::Error::from(e).context("acking a message read from the DLQ")
            });
        }
    }
}

/// The properties of a rotated copy: the original's, persistent, without
/// `user_id` (the broker refuses a publish whose `user_id` is not the
/// publishing user's, and the tool may run as another user) and without the
/// broker's delivery count.
pub fn rotated_properties(props: &BasicProperties) -> BasicProperties {
    let headers = filtered_headers(props.headers().as_ref(), |k| k != DELIVERY_COUNT);
    fields::copied_properties(props, headers)
}

/// The properties of a replayed message: `x-bridge-done-targets` and the
/// message's own headers are kept (see [`fields::replay_properties`]),
/// `x-bridge-replays` counts this replay; the broker's dead-lettering history
/// goes, so a replayed message is a new start and a later dead-lettering is
/// not mistaken for an old one.
pub fn replayed_properties(props: &BasicProperties) -> BasicProperties {
    let replays = replays_of(props.headers().as_ref());
    let replayed = fields::replay_properties(props);
    let mut headers = filtered_headers(replayed.headers().as_ref(), |k| {
        k != DELIVERY_COUNT
            && !DEATH_HEADERS.contains(&k)
            && !DEATH_PREFIXES.iter().any(|p| k.starts_with(p))
    });
    headers.insert(
        dead_letter::REPLAYS.into(),
        AMQPValue::LongLongInt(replays + 1),
    );
    replayed.with_headers(headers)
}

/// How many times a message was replayed (or imported) before.
pub fn replays_of(headers: Option<&FieldTable>) -> i64 {
    fields::header_int(headers, dead_letter::REPLAYS)
        .unwrap_or(0)
        .max(0)
}

pub fn filtered_headers(headers: Option<&FieldTable>, keep: impl Fn(&str) -> bool) -> FieldTable {
    let mut out = FieldTable::default();
    for (key, value) in headers.into_iter().flatten() {
        if keep(key.as_str()) {
            out.insert(key.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(*k), v.clone());
        }
        t
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    fn death(reason: &str) -> AMQPValue {
        AMQPValue::FieldTable(table(&[
            ("reason", text(reason)),
            ("queue", text("inbound")),
            ("count", AMQPValue::LongLongInt(1)),
        ]))
    }

    #[test]
    fn a_rotated_copy_keeps_everything_but_user_id_and_the_delivery_count() {
        let props = BasicProperties::default()
            .with_message_id("m".into())
            .with_correlation_id("c".into())
            .with_type("t".into())
            .with_content_type("application/json".into())
            .with_user_id("someone".into())
            .with_timestamp(7)
            .with_headers(table(&[
                ("x-bridge-reason", text("api_failed")),
                ("x-delivery-count", AMQPValue::LongInt(1)),
                (
                    "x-death",
                    AMQPValue::FieldArray(FieldArray::from(vec![death("delivery_limit")])),
                ),
            ]));
        let out = rotated_properties(&props);
        assert!(out.user_id().is_none());
        assert_eq!(out.delivery_mode(), &Some(fields::PERSISTENT));
        assert_eq!(out.message_id(), props.message_id());
        assert_eq!(out.correlation_id(), props.correlation_id());
        assert_eq!(out.kind(), props.kind());
        assert_eq!(out.content_type(), props.content_type());
        assert_eq!(out.timestamp(), &Some(7));
        let h = out.headers().as_ref().unwrap();
        assert!(h.contains_key("x-bridge-reason") && h.contains_key("x-death"));
        assert!(!h.contains_key("x-delivery-count"));
    }

    #[test]
    fn replay_drops_the_broker_history_keeps_done_targets_and_counts_replays() {
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
                ("x-bridge-replays", AMQPValue::LongInt(2)),
                ("tenant", text("acme")),
            ]));
        let out = replayed_properties(&props);
        let h = out.headers().as_ref().unwrap();
        let mut keys: Vec<_> = h.inner().keys().map(|k| k.as_str().to_owned()).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["tenant", "x-bridge-done-targets", "x-bridge-replays"]
        );
        assert_eq!(replays_of(Some(h)), 3);
        assert_eq!(out.message_id().as_ref().unwrap().as_str(), "m");
        let first = replayed_properties(&BasicProperties::default());
        assert_eq!(replays_of(first.headers().as_ref()), 1);
    }
}
