//! `fanout-bridge dlq stats|peek|replay`: look at the dead-letter queue and
//! move messages back.
//!
//! Every command is a decision plugged into one pass over the DLQ
//! ([`crate::broker::dlq_pass`]), which never loses a message and hands none
//! back on purpose. Here: the signals and the output pipe that tell a pass
//! to stop, and the commands' own parts: `reasons` names why a message is
//! there and counts them (`stats`), `peek` renders messages as JSON,
//! `replay` moves them to the inbound queue.

use std::io::Write as _;

use anyhow::Context as _;

use crate::{
    broker::{
        dlq_pass::{Message, Stop},
        dlq_view::failed_of,
        tool_session::ToolSession,
        topology, BrokerError,
    },
    config::BrokerConfig,
    domain::failure::{group_of, Failed, Filter, Group},
};

/// Opens a session, takes the DLQ's lock (one DLQ operation at a time),
/// runs `work`, closes the session (and so frees the lock) whatever happened.
macro_rules! in_session {
    ($broker:expr, $role:expr, |$session:ident| $work:expr) => {{
        #[allow(unused_mut)]
        let mut $session = ToolSession::open($broker, $role).await?;
        let result = match crate::broker::dlq_pass::lock(&$session, &$broker.dlq).await {
            Ok(()) => $work.await,
            Err(e) => Err(e),
        };
        $session.close().await;
        result
    }};
}

pub mod export;
pub mod groups;
pub mod import;
pub mod list;
pub mod peek;
pub mod purge;
pub mod reasons;
pub mod replay;

pub use crate::broker::dlq_view::{describe, reason_of, DELIVERY_LIMIT, UNKNOWN};
pub use peek::peek;
pub use reasons::{collect_stats, stats, Stats};
pub use replay::{replay, replay_messages, Chosen, ReplayReport, ReplayRequest};

/// A stop for a pass, set by the first SIGINT or SIGTERM: the pass then
/// settles what it holds and the command exits. (A second signal exits at
/// once; what the pass held then goes back to the DLQ.)
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn stop_on_signals() -> anyhow::Result<Stop> {
    let token = crate::shutdown::on_signal().context("installing the signal handlers")?;
    Ok(Stop::following(token))
}

/// Standard output for a pass that prints as it reads: a closed pipe (`dlq
/// peek | head`) stops the pass instead of failing the process.
pub struct Output {
    stop: Stop,
    closed: bool,
}

impl Output {
    pub fn new(stop: Stop) -> Output {
        Output {
            stop,
            closed: false,
        }
    }

    /// Writes one line; after a write error (the reader went away) writes
    /// nothing more and stops the pass.
    pub fn line(&mut self, line: &str) {
        if self.closed {
            return;
        }
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            self.closed = true;
            self.stop.stop();
        }
    }

    /// True once a write failed: the reader is gone.
    pub fn closed(&self) -> bool {
        self.closed
    }
}

/// Prints a command's final lines; a reader that went away is not an error
/// worth a message (the pass is already settled).
pub fn print_lines(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
    let _ = out.flush();
}

/// The group of a message read and whether `filter` selects it.
pub fn select(filter: &Filter, d: &Message) -> (bool, Failed, Group) {
    let failed = failed_of(d);
    let group = group_of(&failed);
    (filter.matches(&failed, &group, &d.data), failed, group)
}

/// The DLQ's depth, or `None` when it does not exist (nothing to read; the
/// broker has then closed the channel).
async fn dlq_depth(
    session: &ToolSession,
    broker_cfg: &BrokerConfig,
) -> anyhow::Result<Option<u32>> {
    match topology::depth(&session.channel, &broker_cfg.dlq).await {
        Ok(d) => Ok(Some(d)),
        Err(BrokerError::QueueMissing(_)) => Ok(None),
        Err(e) => Err(anyhow::Error::from(e)).context("reading the DLQ's depth"),
    }
}

/// The error a command reports when a signal stopped its pass.
fn interrupted(read: u32) -> anyhow::Error {
    anyhow::anyhow!(
        "interrupted after reading {read} messages; every message read was put back in the DLQ \
         (nothing lost)"
    )
}
