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

use lapin::{message::Delivery, options::BasicGetOptions, BasicProperties};
use tokio_util::sync::CancellationToken;

pub use super::dlq_copies::{
    filtered_headers, replayed_properties, replays_of, rotated_properties, DELIVERY_COUNT,
};
pub use super::dlq_lock::{lock, lock_name, DlqBusy};
use super::{fields, tool_session::ToolSession};
use crate::config::BrokerConfig;

/// Messages taken before their copies' confirms are awaited: enough to keep
/// the broker busy (copies are pipelined), few enough that a `kill -9` hands
/// back little.
pub const WINDOW_MESSAGES: usize = 16;

/// Body bytes taken before the window is settled. A single message bigger
/// than this is still read, alone.
pub const WINDOW_BYTES: usize = 8 * 1024 * 1024;

/// A message a pass read: the tools read it through [`super::dlq_view`] and
/// [`super::record`].
pub type Message = Delivery;

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
    fn decide(&mut self, delivery: &Message) -> Fate;
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
pub(super) struct Taken {
    pub(super) delivery: Delivery,
    pub(super) fate: Fate,
    pub(super) copy: Option<Copy>,
}

/// Where a copy went and what it carried, to match a `basic.return`.
pub(super) struct Copy {
    pub(super) queue: String,
    pub(super) props: BasicProperties,
}

/// Reads up to `max` messages from the head of the DLQ and settles each as
/// `reader` decides (see the module doc). Ends early when `reader` is done,
/// when `stop` is set, or on a broker error; in every case what was taken is
/// settled before it returns.
pub async fn pass(
    session: &mut ToolSession,
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
        super::dlq_settle::settle(session, broker_cfg, window, confirms, &mut out).await;
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
pub(super) fn copy_for(
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
