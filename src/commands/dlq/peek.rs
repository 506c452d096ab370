//! `dlq peek`: the first messages of the DLQ as JSON lines.

use std::process::ExitCode;

use super::{dlq_depth, interrupted, select, stop_on_signals, Output, ToolSession};
use crate::{
    broker::{
        dlq_pass::{pass, Fate, Message, Reader},
        dlq_view::describe,
    },
    config::BrokerConfig,
    domain::failure::Filter,
};

// === peek ===

struct Printer<'a> {
    out: Output,
    filter: &'a Filter,
    limit: u32,
    printed: u32,
}

impl Reader for Printer<'_> {
    fn decide(&mut self, d: &Message) -> Fate {
        if self.printed < self.limit && select(self.filter, d).0 {
            self.printed += 1;
            self.out.line(&describe(d).to_string());
        }
        Fate::Rotate
    }

    /// Without a filter the messages read are the ones printed: stop at the
    /// limit. With one, the pass goes round the whole DLQ so that the
    /// messages it skipped keep their order.
    fn done(&self) -> bool {
        self.filter.is_empty() && self.printed >= self.limit
    }
}

/// Prints the first `limit` messages as JSON lines; they move to the DLQ's
/// tail, behind the others (a limit of at least the depth reads them all and
/// leaves the order as it was). Going round the rest just to restore the
/// order would make a peek at one message cost a pass over the whole DLQ.
///
/// A reader that closes the pipe (`dlq peek | head -n 1`) ends the peek
/// early, with every message read back in the DLQ, and exit code 0.
///
/// # Errors
/// When the broker cannot be reached, a copy is not confirmed, or a signal
/// interrupted it.
pub async fn peek(
    broker_cfg: &BrokerConfig,
    limit: u32,
    filter: &Filter,
) -> anyhow::Result<ExitCode> {
    let stop = stop_on_signals()?;
    in_session!(broker_cfg, "dlq peek", |session| async {
        let Some(depth) = dlq_depth(&session, broker_cfg).await? else {
            return Ok(ExitCode::SUCCESS);
        };
        let mut printer = Printer {
            out: Output::new(stop.clone()),
            filter,
            limit,
            printed: 0,
        };
        let done = pass(&mut session, broker_cfg, depth, &mut printer, &stop).await;
        match done.error {
            Some(e) => Err(e),
            None if done.stopped && !printer.out.closed() => Err(interrupted(done.read)),
            None => Ok(ExitCode::SUCCESS),
        }
    })
}
