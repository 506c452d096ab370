//! The delivery tasks of a consumer: their lifetime ([`ConsumerTasks`]),
//! their slot in `bridge_messages_in_flight` ([`crate::in_flight`]), and the guard
//! that hands a message back when its task is abandoned or panics.

use std::{panic::AssertUnwindSafe, time::Duration};

use futures::FutureExt;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, error, warn};

use crate::broker::{
    worker_session::{Channel, WorkerSession},
    BROKER_CALL_TIMEOUT,
};
use crate::{
    broker::{
        close_channel,
        settlement::{HandBack, Settlement},
    },
    in_flight::settling,
    metrics::Outcome,
};

/// How long abandoned delivery tasks are waited for before consuming again
/// (they stop at their next await; this is a safety net).
const ABANDON_WAIT: Duration = Duration::from_secs(5);

/// The deliveries of one consumer: cancelled (and waited for) when the
/// consumer is replaced, so at no moment do two consumers' deliveries add up
/// past the prefetch.
pub(super) struct ConsumerTasks {
    pub(super) token: CancellationToken,
    /// Asks the handlers to stop their calls and settle what they have.
    pub(super) wrap_up: CancellationToken,
    pub(super) tasks: TaskTracker,
}

/// How long handlers asked to wrap up may take to settle (a republish and
/// its confirm) before what is left is handed back.
const WRAP_UP_WAIT: Duration = Duration::from_secs(20);

impl ConsumerTasks {
    pub(super) fn new(session: &WorkerSession) -> Self {
        ConsumerTasks {
            token: session.token.child_token(),
            wrap_up: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Lets the tasks finish on their own for up to `grace` (their channel
    /// is alive and no consumer takes new messages meanwhile), then has the
    /// rest stop their calls and settle (back to the queue with the targets
    /// done so far: a nack would lose that record, and call those APIs
    /// again), and abandons what still runs after that.
    pub(super) async fn finish(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            debug!(
                running = self.tasks.len(),
                "deliveries outlived the grace: stopping their calls"
            );
            self.wrap_up.cancel();
            let _ = tokio::time::timeout(WRAP_UP_WAIT, self.tasks.wait()).await;
        }
        self.abandon().await;
    }

    /// Makes every task still running drop its work (handing its message
    /// back if the channel is still open) and waits for them to end.
    pub(super) async fn abandon(&self) {
        self.token.cancel();
        self.tasks.close();
        let running = self.tasks.len();
        if running > 0 {
            debug!(running, "abandoning the deliveries of a replaced consumer");
        }
        if tokio::time::timeout(ABANDON_WAIT, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                running = self.tasks.len(),
                "abandoned deliveries did not stop in time"
            );
        }
    }
}

/// The life of one delivery task: `handled` (the handler working on the
/// delivery) runs to its end unless `token` is cancelled first (its consumer
/// or session is gone: the work is dropped and, on a live channel, the
/// message handed back); a panic hands the message back to the queue, or
/// closes the channel if the nack cannot be sent, so it never stays stuck in
/// this channel's prefetch.
pub async fn guard_delivery<F>(
    handled: F,
    settlement: Settlement,
    channel: Channel,
    token: CancellationToken,
) where
    F: std::future::Future<Output = Outcome>,
{
    let handled = AssertUnwindSafe(handled).catch_unwind();
    tokio::select! {
        biased;
        () = token.cancelled() => {
            settling();
            if channel.status().connected() {
                settlement.hand_back(BROKER_CALL_TIMEOUT).await;
            }
        }
        handled = handled => {
            if handled.is_err() {
                settling();
                match settlement.hand_back(BROKER_CALL_TIMEOUT).await {
                    HandBack::AlreadySettled => {
                        error!("a delivery task panicked after settling its message");
                    }
                    HandBack::Sent => {
                        error!("a delivery task panicked; its message was handed back to the queue");
                    }
                    HandBack::NotSent => {
                    // A nack that cannot be sent would leave the message
                    // stuck in this channel's prefetch: closing the channel
                    // makes the broker requeue it (and the supervisor
                    // reconnects).
                    error!("a delivery task panicked and its message could not be handed back; closing the channel");
                    close_channel(&channel).await;
                    }
                }
            }
        }
    }
}
