//! Keeps the worker consuming across broker faults: connect → declare → QoS →
//! consume, and on any connection or channel fault, or the consumer ending,
//! mark not ready → back off → again. It never gives up while the process
//! runs; only shutdown ends it.

pub mod budget;
mod stopping;
mod tasks;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tokio::{sync::watch, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, error, info, warn};

use crate::broker::worker_session::{Consumer, Delivery, WorkerSession};
use crate::in_flight::{InFlight, IN_FLIGHT};
use crate::{
    backoff::Backoff,
    broker::{
        self, random_node,
        settlement::{HandBack, Settlement},
        BrokerError,
    },
    config::BrokerConfig,
    delivery::DeliveryHandler,
    health::Health,
    metrics::Metrics,
};
pub use tasks::guard_delivery;
use tasks::ConsumerTasks;

/// Reconnect delays: from half a second, doubling, at most 30 s (contract).
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
/// How often the connections are checked.
const TICK: Duration = Duration::from_secs(1);
/// After a hold pause, how long the old consumer's deliveries may still
/// finish before they are abandoned and the new consumer starts.
const HOLD_FINISH_GRACE: Duration = Duration::from_secs(5);
/// How long deliveries already sent to a cancelled consumer are waited for.
const CANCEL_DRAIN: Duration = Duration::from_secs(2);
/// On shutdown, how long deliveries still running when the grace ends may
/// take to go back to the queue with their done targets (a republish and its
/// confirm: milliseconds on a healthy broker). A hard cap, so shutdown takes
/// at most the grace plus this (plus closing); the deployment manifests'
/// termination periods leave room for it.
const SHUTDOWN_WRAP_UP: Duration = Duration::from_secs(5);

/// Everything the supervisor needs; built by [`crate::app`].
pub struct Supervisor {
    pub broker: BrokerConfig,
    pub prefetch: u16,
    /// `BRIDGE_MAX_IN_FLIGHT_BYTES` and the sizes seen; sizes every
    /// consumer's prefetch.
    pub budget: budget::ByteBudget,
    pub shutdown_grace: Duration,
    pub handler: Arc<DeliveryHandler>,
    pub metrics: Metrics,
    pub health: Health,
    /// Set by held deliveries: take no new message until then.
    pub pause: watch::Receiver<Option<Instant>>,
    pub tracker: TaskTracker,
}

/// Why a consumer stopped taking messages, short of shutdown or a fault.
enum Stop {
    /// A hold pause, until then.
    Pause(Instant),
    /// The byte budget asks for this prefetch.
    Resize(u16),
}

enum End {
    /// With the deliveries of the consumer that was running, if any.
    Shutdown(Option<ConsumerTasks>),
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
                r = WorkerSession::open(&self.broker, self.budget.target(), next) => r,
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
                    session.depth_task = Some(broker::dlq_depth::spawn_gauge(
                        Arc::clone(&session.publish_conn),
                        session.token.clone(),
                        self.broker.dlq.clone(),
                        self.metrics.dlq_depth.clone(),
                    ));
                    let end = self.consume(&mut session, &shutdown).await;
                    self.health.set_consuming(false);
                    match end {
                        End::Shutdown(tasks) => {
                            self.drain(tasks.as_ref()).await;
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
        self.drain(None).await;
        Ok(())
    }

    /// Consumes until shutdown or a fault. A `hold` pause cancels the
    /// consumer (handing back what it had prefetched) and consumes again once
    /// the pause is over. When the byte budget asks for another prefetch
    /// ([`budget`]), the consumer is replaced by one with that prefetch: what
    /// the old one had been sent is processed, and the new one starts when
    /// what is in flight leaves it room.
    async fn consume(&self, session: &mut WorkerSession, shutdown: &CancellationToken) -> End {
        let mut tick = tokio::time::interval(TICK);
        let mut pause = self.pause.clone();
        pause.mark_unchanged();
        let mut tasks = ConsumerTasks::new(session);
        let mut prefetch = session.qos;
        loop {
            if prefetch != session.qos {
                if let Err(e) = session.set_prefetch(prefetch).await {
                    tasks.abandon().await;
                    return End::Fault(e);
                }
            }
            let consumed = session.consume(&self.broker.queue).await;
            let mut consumer = match consumed {
                Ok(c) => c,
                Err(e) => {
                    tasks.abandon().await;
                    return End::Fault(e);
                }
            };
            self.health.set_consuming(true);
            let stop = loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => {
                        info!("shutdown: no longer taking messages");
                        self.health.set_consuming(false);
                        self.stop_consumer(session, &mut consumer).await;
                        return End::Shutdown(Some(tasks));
                    }
                    Ok(()) = pause.changed() => {
                        if let Some(until) = *pause.borrow_and_update() {
                            if until > Instant::now() {
                                break Stop::Pause(until);
                            }
                        }
                    }
                    delivery = consumer.next() => match delivery {
                        Some(Ok(delivery)) => {
                            self.dispatch(delivery, session, &tasks);
                            if let Some(to) = self.budget.resize(prefetch) {
                                break Stop::Resize(to);
                            }
                        }
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
                        // Growth that had no room under load, once there is.
                        if let Some(to) = self.budget.resize(prefetch) {
                            break Stop::Resize(to);
                        }
                    }
                }
            };
            match stop {
                Stop::Resize(to) => {
                    debug!(
                        from = prefetch,
                        to,
                        bytes_in_flight = self.budget.bytes_in_flight(),
                        "the sizes seen ask for another prefetch: replacing the consumer"
                    );
                    if let Err(why) = self.retire_consumer(session, &mut consumer, &tasks).await {
                        tasks.abandon().await;
                        return End::Fault(why);
                    }
                    // Room for the next consumer: what is in flight ends on
                    // its own (no message waits on another), so this ends.
                    // Growing never waits: it takes what there is room for.
                    let growing = to > prefetch;
                    loop {
                        let want = self.budget.target();
                        if self.budget.room_for(want) {
                            prefetch = want;
                            break;
                        }
                        if growing {
                            if let Some(n) = self.budget.resize(0) {
                                prefetch = n;
                                break;
                            }
                        }
                        tokio::select! {
                            biased;
                            () = shutdown.cancelled() => {
                                info!("shutdown: no longer taking messages");
                                return End::Shutdown(Some(tasks));
                            }
                            () = self.budget.freed() => {}
                            _ = tick.tick() => {
                                if let Some(why) = session.fault() {
                                    tasks.abandon().await;
                                    return End::Fault(why.to_owned());
                                }
                            }
                        }
                    }
                    // A hold pause that began meanwhile is seen by the next
                    // consumer's loop at once.
                }
                Stop::Pause(mut until) => {
                    warn!(
                        pause_ms =
                            until.saturating_duration_since(Instant::now()).as_millis() as u64,
                        "an API is unavailable: pausing intake (outage policy hold)"
                    );
                    self.stop_consumer(session, &mut consumer).await;
                    loop {
                        tokio::select! {
                            biased;
                            () = shutdown.cancelled() => return End::Shutdown(Some(tasks)),
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
                        () = shutdown.cancelled() => return End::Shutdown(Some(tasks)),
                        () = tasks.finish(HOLD_FINISH_GRACE) => {}
                    }
                    tasks = ConsumerTasks::new(session);
                    prefetch = self.budget.target();
                    info!("outage pause over: taking messages again");
                }
            }
        }
    }

    /// Cancels the consumer and processes what the broker had already sent
    /// it (those bodies are in memory anyway; handing them back would cost
    /// each a delivery attempt).
    async fn retire_consumer(
        &self,
        session: &WorkerSession,
        consumer: &mut Consumer,
        tasks: &ConsumerTasks,
    ) -> Result<(), String> {
        session.cancel(consumer).await?;
        // The consumer's stream ends after the deliveries sent before the
        // cancel-ok; the deadline is a safety net.
        let deadline = Instant::now() + CANCEL_DRAIN;
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, consumer.next()).await
        {
            self.dispatch(delivery, session, tasks);
        }
        Ok(())
    }

    /// Spawns the task that owns one delivery until it is settled, abandoned
    /// (its consumer or session is gone) or its handler panics.
    fn dispatch(&self, delivery: Delivery, session: &WorkerSession, tasks: &ConsumerTasks) {
        let handler = Arc::clone(&self.handler);
        let publisher = Arc::clone(&session.publisher);
        let channel = session.channel.clone();
        let settlement = Settlement::register(
            session.acks.clone(),
            delivery.delivery_tag,
            delivery.acker.clone(),
        );
        let token = tasks.token.clone();
        let slot = InFlight::new(self.metrics.in_flight.clone());
        // Its share of the byte budget, given back when the task ends and
        // the body is freed.
        let charge = self.budget.charge(delivery.data.len());
        // Boxed once here: the handler's future is several kilobytes, and
        // every wrapper below (guard, in-flight scope, tracker, the task
        // itself) would otherwise copy it whole.
        let handled = Box::pin(handler.handle(
            delivery,
            publisher,
            settlement.clone(),
            tasks.wrap_up.clone(),
        ));
        let task = guard_delivery(handled, settlement, channel, token);
        let task = async move {
            task.await;
            drop(charge);
        };
        tasks
            .tasks
            .spawn(self.tracker.track_future(IN_FLIGHT.scope(slot, task)));
    }
}
