//! The worker's `bridge_dead_letter_queue_depth` gauge, refreshed every few
//! seconds on a channel of its own (a passive declare of a missing queue
//! closes its channel), every broker call bounded, until the session ends.

use std::{sync::Arc, time::Duration};

use lapin::{Channel, Connection};
use prometheus::IntGauge;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{close_channel, open_channel, topology, BrokerError, BROKER_CALL_TIMEOUT};

/// How often the gauge is refreshed.
const EVERY: Duration = Duration::from_secs(5);

/// Refreshes `gauge` with the depth of `dlq`, read on `conn`, until `token`
/// is cancelled.
pub fn spawn_gauge(
    conn: Arc<Connection>,
    token: CancellationToken,
    dlq: String,
    gauge: IntGauge,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stats: Option<Channel> = None;
        let mut every = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                _ = every.tick() => {}
            }
            let refresh = async {
                if !stats.as_ref().is_some_and(|c| c.status().connected()) {
                    stats = open_channel(&conn).await;
                }
                let Some(channel) = &stats else { return };
                match tokio::time::timeout(BROKER_CALL_TIMEOUT, topology::depth(channel, &dlq))
                    .await
                {
                    Ok(Ok(depth)) => gauge.set(i64::from(depth)),
                    Ok(Err(BrokerError::QueueMissing(_))) => gauge.set(0),
                    Ok(Err(e)) => debug!(error = %e, "cannot read the DLQ depth"),
                    Err(_) => debug!("reading the DLQ depth timed out"),
                }
            };
            tokio::select! {
                () = token.cancelled() => break,
                () = refresh => {}
            }
        }
        if let Some(channel) = &stats {
            close_channel(channel).await;
        }
    })
}
