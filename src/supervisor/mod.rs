//! Keeps the worker consuming across broker faults: connect → declare → QoS →
//! consume, and on any connection or channel fault, or the consumer ending,
//! mark not ready → back off → again. It never gives up while the process
//! runs; only shutdown ends it.

mod session;
mod tasks;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions},
    types::FieldTable,
    Channel, Consumer,
};
use tokio::{sync::watch, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, error, info, warn};

use crate::in_flight::{InFlight, IN_FLIGHT};
use crate::{
    backoff::Backoff,
    broker::{close_channel, random_node, topology, BrokerError},
    config::BrokerConfig,
    delivery::DeliveryHandler,
    health::Health,
    metrics::Metrics,
};
use session::Session;
pub use tasks::{guard_delivery, Settle};
use tasks::{ConsumerTasks, REQUEUE};

/// Reconnect delays: from half a second, doubling, at most 30 s (contract).
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
/// How often the connections are checked and the DLQ depth refreshed.
const TICK: Duration = Duration::from_secs(1);
/// How often the DLQ depth gauge is refreshed, by a task of its own so no
/// broker call of it can hold up the consume loop.
const DLQ_DEPTH_EVERY: Duration = Duration::from_secs(5);
/// Bounds every broker call made on the consume path (consume, cancel, nack,
/// opening a channel): none may wait for ever on a broker that stopped
/// answering.
const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// After a hold pause, how long the old consumer's deliveries may still
/// finish before they are abandoned and the new consumer starts.
const HOLD_FINISH_GRACE: Duration = Duration::from_secs(5);
/// How long deliveries already sent to a cancelled consumer are waited for.
const CANCEL_DRAIN: Duration = Duration::from_secs(2);

/// Everything the supervisor needs; built by [`crate::app`].
pub struct Supervisor {
    pub broker: BrokerConfig,
    pub prefetch: u16,
    pub shutdown_grace: Duration,
    pub handler: Arc<DeliveryHandler>,
    pub metrics: Metrics,
    pub health: Health,
    /// Set by held deliveries: take no new message until then.
    pub pause: watch::Receiver<Option<Instant>>,
    pub tracker: TaskTracker,
}

enum End {
    Shutdown,
    Fault(String),
}

impl Supervisor {
    /// Runs until `shutdown` is cancelled, then lets in-flight deliveries
    /// finish for the grace period.
    ///
    /// # Errors
    /// Only a configuration error met before the first successful start
    /// (a queue that exists with other arguments); everything else is retried.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BrokerError> {
        let mut failures = 0u32;
        let mut ever_started = false;
        // A random first node spreads replicas over a cluster; after a failed
        // attempt or a lost session the next one starts one node further.
        let mut next = random_node(&self.broker);
        while !shutdown.is_cancelled() {
            let opened = tokio::select! {
                r = Session::open(&self.broker, self.prefetch, next) => r,
                () = shutdown.cancelled() => break,
            };
            match opened {
                Ok(mut session) => {
                    ever_started = true;
                    failures = 0;
                    next = session.index + 1;
                    self.health.set_connected(true);
                    self.metrics.set_broker_node(Some(&session.node));
                    info!(node = %session.node, queue = %self.broker.queue, dlq = %self.broker.dlq, prefetch = self.prefetch, "connected to the broker");
                    session.depth_task = Some(self.spawn_dlq_depth(&session));
                    let end = self.consume(&mut session, &shutdown).await;
                    self.health.set_consuming(false);
                    match end {
                        End::Shutdown => {
                            self.drain().await;
                            session.close().await;
                            self.health.set_connected(false);
                            self.metrics.set_broker_node(None);
                            return Ok(());
                        }
                        End::Fault(why) => {
                            self.health.set_connected(false);
                            self.metrics.set_broker_node(None);
                            warn!(node = %session.node, cause = %why, "broker session lost; reconnecting (unacked messages will be redelivered)");
                            session.close().await;
                        }
                    }
                }
                Err(e) if e.is_configuration() && !ever_started => return Err(e),
                Err(e) if e.is_configuration() => error!(error = %e, "cannot resume consuming"),
                Err(e) => {
                    next += 1;
                    warn!(error = %e, "cannot reach the broker");
                }
            }
            failures = failures.saturating_add(1);
            let delay = RECONNECT.delay(failures, &mut rand::rng());
            info!(
                retry_in_ms = delay.as_millis() as u64,
                "next broker connection attempt"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => break,
            }
        }
        self.drain().await;
        Ok(())
    }

    /// Consumes until shutdown or a fault. A `hold` pause cancels the
    /// consumer (handing back what it had prefetched) and consumes again once
    /// the pause is over.
    async fn consume(&self, session: &mut Session, shutdown: &CancellationToken) -> End {
        let mut tick = tokio::time::interval(TICK);
        let mut pause = self.pause.clone();
        pause.mark_unchanged();
        loop {
            let tag = format!(
                "fanout-bridge-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            );
            let consumed = tokio::time::timeout(
                BROKER_CALL_TIMEOUT,
                session.channel.basic_consume(
                    self.broker.queue.as_str().into(),
                    tag.into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await;
            let mut consumer = match consumed {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    return End::Fault(format!("cannot consume from {:?}: {e}", self.broker.queue))
                }
                Err(_) => {
                    return End::Fault(format!("consuming from {:?} timed out", self.broker.queue))
                }
            };
            let tasks = ConsumerTasks::new(session);
            self.health.set_consuming(true);
            let mut until = loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => {
                        info!("shutdown: no longer taking messages");
                        self.health.set_consuming(false);
                        self.stop_consumer(session, &mut consumer).await;
                        return End::Shutdown;
                    }
                    Ok(()) = pause.changed() => {
                        if let Some(until) = *pause.borrow_and_update() {
                            if until > Instant::now() {
                                break until;
                            }
                        }
                    }
                    delivery = consumer.next() => match delivery {
                        Some(Ok(delivery)) => self.dispatch(delivery, session, &tasks),
                        Some(Err(e)) => {
                            tasks.abandon().await;
                            return End::Fault(format!("consumer failed: {e}"));
                        }
                        None => {
                            tasks.abandon().await;
                            return End::Fault(format!(
                                "the broker cancelled the consumer (was queue {:?} deleted?)",
                                self.broker.queue
                            ));
                        }
                    },
                    _ = tick.tick() => {
                        if let Some(why) = session.fault() {
                            tasks.abandon().await;
                            return End::Fault(why.to_owned());
                        }
                    }
                }
            };
            warn!(
                pause_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64,
                "an API is unavailable: pausing intake (outage policy hold)"
            );
            self.stop_consumer(session, &mut consumer).await;
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return End::Shutdown,
                    () = tokio::time::sleep_until(until) => break,
                    Ok(()) = pause.changed() => {
                        if let Some(later) = *pause.borrow_and_update() {
                            until = until.max(later);
                        }
                    }
                    _ = tick.tick() => {
                        if let Some(why) = session.fault() {
                            tasks.abandon().await;
                            return End::Fault(why.to_owned());
                        }
                    }
                }
            }
            // The old consumer's tasks must be gone before the new consumer
            // gets a fresh prefetch window: they may still finish for a
            // moment, then they stop their calls and hold their messages with
            // the targets done so far.
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return End::Shutdown,
                () = tasks.finish(HOLD_FINISH_GRACE) => {}
            }
            info!("outage pause over: taking messages again");
        }
    }

    /// Spawns the task that owns one delivery until it is settled, abandoned
    /// (its consumer or session is gone) or its handler panics.
    fn dispatch(&self, delivery: Delivery, session: &Session, tasks: &ConsumerTasks) {
        let handler = Arc::clone(&self.handler);
        let publisher = Arc::clone(&session.publisher);
        let channel = session.channel.clone();
        let acker = delivery.acker.clone();
        let tag = delivery.delivery_tag;
        let acks = session.acks.clone();
        session.acks.register(tag);
        let token = tasks.token.clone();
        let slot = InFlight::new(self.metrics.in_flight.clone());
        // Boxed once here: the handler's future is several kilobytes, and
        // every wrapper below (guard, in-flight scope, tracker, the task
        // itself) would otherwise copy it whole.
        let handled =
            Box::pin(handler.handle(delivery, publisher, acks.clone(), tasks.wrap_up.clone()));
        let task = guard_delivery(handled, Settle { acks, tag, acker }, channel, token);
        tasks
            .tasks
            .spawn(self.tracker.track_future(IN_FLIGHT.scope(slot, task)));
    }

    /// Cancels the consumer and hands back, unprocessed, what the broker had
    /// already sent it, so those messages wait in the queue (for this or
    /// another worker) rather than in this worker's prefetch.
    async fn stop_consumer(&self, session: &Session, consumer: &mut Consumer) {
        let cancel = session
            .channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default());
        match tokio::time::timeout(BROKER_CALL_TIMEOUT, cancel).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(error = %e, "cancelling the consumer failed");
                return;
            }
            Err(_) => {
                debug!("cancelling the consumer timed out");
                return;
            }
        }
        let deadline = Instant::now() + CANCEL_DRAIN;
        let mut returned = 0u32;
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, consumer.next()).await
        {
            let tag = delivery.delivery_tag;
            session.acks.register(tag);
            let nack = session.acks.nack(tag, &delivery.acker, REQUEUE);
            if let Ok(Ok(true)) = tokio::time::timeout_at(deadline, nack).await {
                returned += 1;
            }
        }
        if returned > 0 {
            debug!(returned, "handed prefetched messages back to the queue");
        }
    }

    /// Refreshes the DLQ depth gauge every few seconds on a channel of its
    /// own (a passive declare of a missing queue closes its channel), every
    /// broker call bounded, until the session ends.
    fn spawn_dlq_depth(&self, session: &Session) -> tokio::task::JoinHandle<()> {
        let conn = Arc::clone(&session.publish_conn);
        let token = session.token.clone();
        let dlq = self.broker.dlq.clone();
        let gauge = self.metrics.dlq_depth.clone();
        tokio::spawn(async move {
            let mut stats: Option<Channel> = None;
            let mut every = tokio::time::interval(DLQ_DEPTH_EVERY);
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = every.tick() => {}
                }
                let refresh = async {
                    if !stats.as_ref().is_some_and(|c| c.status().connected()) {
                        stats = tokio::time::timeout(BROKER_CALL_TIMEOUT, conn.create_channel())
                            .await
                            .ok()
                            .and_then(Result::ok);
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

    /// Waits for in-flight deliveries, at most the grace period.
    async fn drain(&self) {
        self.tracker.close();
        let in_flight = self.tracker.len();
        if in_flight > 0 {
            info!(
                in_flight,
                grace_ms = self.shutdown_grace.as_millis() as u64,
                "waiting for in-flight messages"
            );
        }
        match tokio::time::timeout(self.shutdown_grace, self.tracker.wait()).await {
            Ok(()) => info!("all in-flight messages settled"),
            Err(_) => warn!(
                unfinished = self.tracker.len(),
                "grace period over: unfinished messages stay unacked and will be redelivered"
            ),
        }
    }
}
