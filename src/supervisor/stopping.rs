//! Stopping: a consumer that hands back what it was sent but not given to a
//! task, and the drain of in-flight deliveries on shutdown.

use super::*;

impl Supervisor {
    /// Cancels the consumer and hands back, unprocessed, what the broker had
    /// already sent it, so those messages wait in the queue (for this or
    /// another worker) rather than in this worker's prefetch.
    pub(super) async fn stop_consumer(&self, session: &WorkerSession, consumer: &mut Consumer) {
        if let Err(e) = session.cancel(consumer).await {
            debug!(error = %e, "the consumer was not cancelled");
            return;
        }
        let deadline = Instant::now() + CANCEL_DRAIN;
        let mut returned = 0u32;
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, consumer.next()).await
        {
            let settlement = Settlement::register(
                session.acks.clone(),
                delivery.delivery_tag,
                delivery.acker.clone(),
            );
            let left = deadline.saturating_duration_since(Instant::now());
            if settlement.hand_back(left).await == HandBack::Sent {
                returned += 1;
            }
        }
        if returned > 0 {
            debug!(returned, "handed prefetched messages back to the queue");
        }
    }

    /// Waits for in-flight deliveries, at most the grace period; then has
    /// those of `tasks` (the last consumer's) still running stop their calls
    /// and go back to the queue with the targets done so far, for at most
    /// [`SHUTDOWN_WRAP_UP`]. Left unacked instead, they would be redelivered
    /// without that record and the APIs that had accepted them called again.
    pub(super) async fn drain(&self, tasks: Option<&ConsumerTasks>) {
        self.tracker.close();
        let in_flight = self.tracker.len();
        if in_flight > 0 {
            info!(
                in_flight,
                grace_ms = self.shutdown_grace.as_millis() as u64,
                "waiting for in-flight messages"
            );
        }
        if tokio::time::timeout(self.shutdown_grace, self.tracker.wait())
            .await
            .is_ok()
        {
            info!("all in-flight messages settled");
            return;
        }
        if let Some(tasks) = tasks {
            info!(
                unfinished = self.tracker.len(),
                "grace period over: stopping the calls of unfinished messages; they go back to the queue with the targets done so far"
            );
            tasks.wrap_up.cancel();
            if tokio::time::timeout(SHUTDOWN_WRAP_UP, self.tracker.wait())
                .await
                .is_ok()
            {
                info!("all in-flight messages settled");
                return;
            }
        }
        warn!(
            unfinished = self.tracker.len(),
            "unfinished messages stay unacked and will be redelivered"
        );
    }
}
