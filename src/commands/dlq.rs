//! `fanout-bridge dlq stats|peek|replay`: look at the dead-letter queue and
//! move messages back.
//!
//! # Reading costs no delivery attempt
//!
//! A quorum queue counts every message that goes back to it unacked (a
//! nack-requeue, a `basic.recover`, a closed channel) against its delivery
//! limit and drops, or dead-letters, a message past it. So nothing here ever
//! hands a message back on the success path: each message read is
//! *rotated*. It is copied to the DLQ's tail (same body and properties,
//! `mandatory`, confirmed), and only then is the original acked. The copy is
//! a new message with a fresh count. A read of the whole DLQ is one full
//! rotation and leaves the order as it was; a read of the first N moves them
//! behind the others.
//!
//! Every pass reads at most the depth seen when it started: what workers
//! dead-letter meanwhile, and our own copies, land behind that, so a pass
//! always ends and never sees a message twice. When a copy is not confirmed
//! (nacked, returned, timed out) the original is nack-requeued (the one case
//! that spends an attempt, and the alternative would be losing it) and the
//! pass stops with an error. Which copy came back is known for each message
//! (see [`super::confirm_batch`]), so a message is removed only when its own
//! copy is stored.
//!
//! The parts: `pass` reads and settles (rotation), `reasons` names why a
//! message is there and counts them (`stats`), `peek` renders messages as
//! JSON, `replay` moves them to the inbound queue.

use anyhow::Context as _;

use super::broker_session::Session;
use crate::{
    broker::{topology, BrokerError},
    config::BrokerConfig,
};

/// Opens a session, runs `work`, closes the session whatever happened.
macro_rules! in_session {
    ($broker:expr, $role:expr, |$session:ident| $work:expr) => {{
        let $session = Session::open($broker, $role).await?;
        let result = $work.await;
        $session.close().await;
        result
    }};
}

mod pass;
pub mod peek;
pub mod reasons;
pub mod replay;

pub use peek::{describe, peek};
pub use reasons::{collect_stats, reason_of, stats, Stats, DELIVERY_LIMIT, UNKNOWN};
pub use replay::{replay, replay_messages, Chosen, ReplayReport, ReplayRequest};

/// The DLQ's depth, or `None` when it does not exist (nothing to read; the
/// broker has then closed the channel).
async fn dlq_depth(session: &Session, broker_cfg: &BrokerConfig) -> anyhow::Result<Option<u32>> {
    match topology::depth(&session.channel, &broker_cfg.dlq).await {
        Ok(d) => Ok(Some(d)),
        Err(BrokerError::QueueMissing(_)) => Ok(None),
        Err(e) => Err(anyhow::Error::from(e)).context("reading the DLQ's depth"),
    }
}
