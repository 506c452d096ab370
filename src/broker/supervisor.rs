//! Keeps the worker consuming across broker faults: connect → declare → QoS →
//! consume, and on any connection or channel fault, or the consumer ending,
//! mark not ready → back off → again. It never gives up while the process
//! runs; only shutdown ends it.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt};
use lapin::{
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
    Channel, Connection, Consumer,
};
use tokio::{sync::watch, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, error, info, warn};

use super::{close, close_channel, connect, publisher::Publisher, topology, BrokerError};
use crate::{
    api::backoff::Backoff, config::BrokerConfig, metrics::Metrics, ops::Health, worker::Worker,
};

/// Reconnect delays: from half a second, doubling, at most 30 s (contract).
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
/// How often the connections are checked and the DLQ depth refreshed.
const TICK: Duration = Duration::from_secs(1);
const DLQ_DEPTH_EVERY_TICKS: u32 = 5;
/// How long deliveries already sent to a cancelled consumer are waited for.
const CANCEL_DRAIN: Duration = Duration::from_secs(2);
/// Bounds the wait for a publisher confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything the supervisor needs; built by [`crate::app`].
pub struct Supervisor {
    pub broker: BrokerConfig,
    pub prefetch: u16,
    pub shutdown_grace: Duration,
    pub worker: Arc<Worker>,
    pub metrics: Metrics,
    pub health: Health,
    /// Set by held deliveries: take no new message until then.
    pub pause: watch::Receiver<Option<Instant>>,
    pub tracker: TaskTracker,
}

/// One generation of broker connections.
struct Session {
    consume_conn: Connection,
    channel: Channel,
    publish_conn: Connection,
    publisher: Arc<Publisher>,
    /// For passive declares of the DLQ: a 404 there must not close the
    /// publishing channel.
    stats: Option<Channel>,
}

enum End {
    Shutdown,
    Fault(String),
}

impl Session {
    async fn open(cfg: &BrokerConfig, prefetch: u16) -> Result<Session, BrokerError> {
        let consume_conn = connect(cfg, "consumer").await?;
        let rest = async {
            let channel = consume_conn
                .create_channel()
                .await
                .map_err(BrokerError::amqp("opening the consuming channel"))?;
            topology::declare_all(&channel, cfg).await?;
            channel
                .basic_qos(prefetch, BasicQosOptions { global: false })
                .await
                .map_err(BrokerError::amqp("setting the prefetch"))?;
            let publish_conn = connect(cfg, "publisher").await?;
            match Publisher::open(&publish_conn, CONFIRM_TIMEOUT).await {
                Ok(p) => Ok((channel, publish_conn, p)),
                Err(e) => {
                    close(&publish_conn).await;
                    Err(e)
                }
            }
        }
        .await;
        match rest {
            Ok((channel, publish_conn, publisher)) => Ok(Session {
                consume_conn,
                channel,
                publish_conn,
                publisher: Arc::new(publisher),
                stats: None,
            }),
            Err(e) => {
                close(&consume_conn).await;
                Err(e)
            }
        }
    }

    /// Why this session can no longer be used, if it cannot.
    fn fault(&self) -> Option<&'static str> {
        if !self.consume_conn.status().connected() {
            Some("the consuming connection was lost")
        } else if !self.channel.status().connected() {
            Some("the broker closed the consuming channel")
        } else if !self.publish_conn.status().connected() {
            Some("the publishing connection was lost")
        } else if !self.publisher.is_open() {
            Some("the broker closed the publishing channel")
        } else {
            None
        }
    }

    async fn close(&self) {
        if let Some(stats) = &self.stats {
            close_channel(stats).await;
        }
        close_channel(self.publisher.channel()).await;
        close_channel(&self.channel).await;
        close(&self.consume_conn).await;
        close(&self.publish_conn).await;
    }
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
        while !shutdown.is_cancelled() {
            let opened = tokio::select! {
                r = Session::open(&self.broker, self.prefetch) => r,
                () = shutdown.cancelled() => break,
            };
            match opened {
                Ok(mut session) => {
                    ever_started = true;
                    failures = 0;
                    self.health.set_connected(true);
                    info!(queue = %self.broker.queue, dlq = %self.broker.dlq, prefetch = self.prefetch, "connected to the broker");
                    let end = self.consume(&mut session, &shutdown).await;
                    self.health.set_consuming(false);
                    match end {
                        End::Shutdown => {
                            self.drain().await;
                            session.close().await;
                            self.health.set_connected(false);
                            return Ok(());
                        }
                        End::Fault(why) => {
                            self.health.set_connected(false);
                            warn!(cause = %why, "broker session lost; reconnecting (unacked messages will be redelivered)");
                            session.close().await;
                        }
                    }
                }
                Err(e) if e.is_configuration() && !ever_started => return Err(e),
                Err(e) if e.is_configuration() => error!(error = %e, "cannot resume consuming"),
                Err(e) => warn!(error = %e, "cannot reach the broker"),
            }
            failures = failures.saturating_add(1);
            let delay = RECONNECT.delay(failures, &mut rand::thread_rng());
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
        let mut ticks = 0u32;
        self.refresh_dlq_depth(session).await;
        let mut pause = self.pause.clone();
        pause.mark_unchanged();
        loop {
            let tag = format!(
                "fanout-bridge-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            );
            let mut consumer = match session
                .channel
                .basic_consume(
                    self.broker.queue.as_str().into(),
                    tag.into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    return End::Fault(format!("cannot consume from {:?}: {e}", self.broker.queue))
                }
            };
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
                        Some(Ok(delivery)) => self.dispatch(delivery, &session.publisher),
                        Some(Err(e)) => return End::Fault(format!("consumer failed: {e}")),
                        None => return End::Fault(format!(
                            "the broker cancelled the consumer (was queue {:?} deleted?)",
                            self.broker.queue
                        )),
                    },
                    _ = tick.tick() => {
                        if let Some(why) = session.fault() {
                            return End::Fault(why.to_owned());
                        }
                        ticks += 1;
                        if ticks % DLQ_DEPTH_EVERY_TICKS == 0 {
                            self.refresh_dlq_depth(session).await;
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
                            return End::Fault(why.to_owned());
                        }
                    }
                }
            }
            info!("outage pause over: taking messages again");
        }
    }

    /// Spawns the task that owns one delivery until it is settled.
    fn dispatch(&self, delivery: Delivery, publisher: &Arc<Publisher>) {
        let worker = Arc::clone(&self.worker);
        let publisher = Arc::clone(publisher);
        let metrics = self.metrics.clone();
        metrics.in_flight.inc();
        self.tracker.spawn(async move {
            let handled = AssertUnwindSafe(worker.handle(delivery, publisher))
                .catch_unwind()
                .await;
            metrics.in_flight.dec();
            if handled.is_err() {
                error!(
                    "a delivery task panicked; its message stays unacked and will be redelivered"
                );
            }
        });
    }

    /// Cancels the consumer and hands back, unprocessed, what the broker had
    /// already sent it, so those messages wait in the queue (for this or
    /// another worker) rather than in this worker's prefetch.
    async fn stop_consumer(&self, session: &Session, consumer: &mut Consumer) {
        if let Err(e) = session
            .channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
        {
            debug!(error = %e, "cancelling the consumer failed");
            return;
        }
        let deadline = Instant::now() + CANCEL_DRAIN;
        let requeue = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        let mut returned = 0u32;
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, consumer.next()).await
        {
            if delivery.acker.nack(requeue).await.is_ok() {
                returned += 1;
            }
        }
        if returned > 0 {
            debug!(returned, "handed prefetched messages back to the queue");
        }
    }

    async fn refresh_dlq_depth(&self, session: &mut Session) {
        if !session
            .stats
            .as_ref()
            .is_some_and(|c| c.status().connected())
        {
            session.stats = session.publish_conn.create_channel().await.ok();
        }
        let Some(stats) = &session.stats else { return };
        match tokio::time::timeout(TICK, topology::depth(stats, &self.broker.dlq)).await {
            Ok(Ok(depth)) => self.metrics.dlq_depth.set(i64::from(depth)),
            Ok(Err(BrokerError::QueueMissing(_))) => self.metrics.dlq_depth.set(0),
            Ok(Err(e)) => debug!(error = %e, "cannot read the DLQ depth"),
            Err(_) => debug!("reading the DLQ depth timed out"),
        }
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
