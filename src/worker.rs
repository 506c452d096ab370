//! One delivery, start to finish: parse once, call both APIs at once, decide,
//! and settle. `settle` is the only code that acks, nacks or republishes a
//! delivery.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions},
    Acker, BasicProperties,
};
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use crate::{
    api::{ApiClient, CallReport, Requests},
    broker::{fields, publisher::Publisher},
    config::{OutagePolicy, WorkerConfig},
    domain::{
        dead_letter, decide, message::validate_json, CallOutcome, DeadLetter, Disposition,
        InboundMessage, Target,
    },
    metrics::{Metrics, Outcome},
};

/// How long a message whose DLQ publish failed waits before it is nacked back
/// into the queue, so a missing DLQ does not turn into a hot loop.
const REQUEUE_DELAY: Duration = Duration::from_secs(1);

/// Tells the consumer to stop taking messages until an instant; written by
/// deliveries that were held, read by the supervisor.
pub type PauseSender = watch::Sender<Option<tokio::time::Instant>>;

/// What every delivery task shares.
#[derive(Debug)]
pub struct Worker {
    api: ApiClient,
    metrics: Metrics,
    queue: String,
    dlq: String,
    log_event: String,
    hold_on_outage: bool,
    outage_pause: Duration,
    pause: PauseSender,
}

/// Each API's call report, indexed by `Target as usize`; `None` when the API
/// was not called.
type Calls = [Option<CallReport>; 2];

impl Worker {
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(cfg: &WorkerConfig, metrics: Metrics, pause: PauseSender) -> anyhow::Result<Self> {
        Ok(Worker {
            api: ApiClient::new(cfg, metrics.clone())?,
            metrics,
            queue: cfg.broker.queue.clone(),
            dlq: cfg.broker.dlq.clone(),
            log_event: cfg.log_event.clone(),
            hold_on_outage: cfg.outage_policy == OutagePolicy::Hold,
            outage_pause: cfg.outage_pause,
            pause,
        })
    }

    /// Handles one delivery to its end and returns how it ended. Never panics
    /// on input; a failure to settle leaves the delivery unacked, so the broker
    /// delivers it again.
    pub async fn handle(self: Arc<Self>, delivery: Delivery, publisher: Arc<Publisher>) -> Outcome {
        let started = Instant::now();
        let Delivery {
            data,
            properties,
            acker,
            redelivered,
            ..
        } = delivery;
        let (msg, unknown) = fields::inbound_message(&properties, Bytes::from(data));
        let span = tracing::info_span!("message", message_id = %msg.message_id);
        async move {
            if !unknown.is_empty() {
                warn!(?unknown, "ignoring unknown names in x-bridge-done-targets");
            }
            let (disposition, calls) = self.process(&msg).await;
            let reason = match &disposition {
                Disposition::DeadLetter(dl) => Some(dl.reason.as_str()),
                _ => None,
            };
            let outcome = self
                .settle(&acker, &publisher, &properties, &msg, disposition)
                .await;
            self.metrics.count_outcome(outcome);
            let ms = |t: Target| calls[t as usize].as_ref().map(|r| millis(r.elapsed));
            info!(
                message_id = %msg.message_id,
                outcome = outcome.as_str(),
                reason,
                user_management_ms = ms(Target::UserManagement),
                logging_ms = ms(Target::Logging),
                total_ms = millis(started.elapsed()),
                redelivered,
                "message settled"
            );
            outcome
        }
        .instrument(span)
        .await
    }

    /// Validates, calls what still needs calling, and decides.
    async fn process(&self, msg: &InboundMessage) -> (Disposition, Calls) {
        let requests = match validate_json(&msg.body) {
            Err(why) => Err(why.0),
            Ok(json) => Requests::build(msg, &msg.body[json], msg.event(&self.log_event))
                .map_err(|e| e.to_string()),
        };
        let requests = match requests {
            Ok(r) => r,
            Err(why) => {
                debug!(%why, "invalid payload");
                let dl = DeadLetter::invalid_payload(why);
                return (Disposition::DeadLetter(dl), [None, None]);
            }
        };
        let call = |target: Target| {
            let requests = &requests;
            async move {
                if msg.done.contains(target) {
                    None
                } else {
                    Some(self.api.call(target, requests).await)
                }
            }
        };
        // Both requests start together; each retries on its own.
        let (user, log) = tokio::join!(call(Target::UserManagement), call(Target::Logging));
        let calls = [user, log];
        let outcomes: Vec<(Target, CallOutcome)> = Target::ALL
            .iter()
            .map(|&t| {
                let outcome = calls[t as usize]
                    .as_ref()
                    .map_or(CallOutcome::AlreadyDone, |r| r.outcome.clone());
                (t, outcome)
            })
            .collect();
        (decide(msg.done, &outcomes, self.hold_on_outage), calls)
    }

    /// Carries out a disposition. The ack always comes last: until then the
    /// broker owns the message.
    async fn settle(
        &self,
        acker: &Acker,
        publisher: &Publisher,
        props: &BasicProperties,
        msg: &InboundMessage,
        disposition: Disposition,
    ) -> Outcome {
        match disposition {
            Disposition::Ack => ack(acker, Outcome::Acked).await,
            Disposition::DeadLetter(dl) => {
                let headers = dead_letter::headers(&dl, time::OffsetDateTime::now_utc());
                let props = fields::dead_letter_properties(props, msg, headers);
                match publisher
                    .publish_dead_letter(&self.dlq, &msg.body, props)
                    .await
                {
                    Ok(()) => ack(acker, Outcome::DeadLettered).await,
                    Err(e) => {
                        warn!(error = %e, dlq = %self.dlq, "dead-letter publish not confirmed; requeueing the message");
                        requeue(acker).await
                    }
                }
            }
            Disposition::Hold { done } => {
                // Pause first: the API is down whether or not the republish works.
                let until = tokio::time::Instant::now() + self.outage_pause;
                self.pause.send_replace(Some(until));
                let props = fields::held_properties(props, msg, done);
                match publisher.publish(&self.queue, &msg.body, props).await {
                    Ok(()) => ack(acker, Outcome::Held).await,
                    Err(e) => {
                        warn!(error = %e, "hold republish not confirmed; requeueing the message");
                        requeue(acker).await
                    }
                }
            }
        }
    }
}

/// Milliseconds with one decimal, for log lines.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

async fn ack(acker: &Acker, outcome: Outcome) -> Outcome {
    crate::broker::supervisor::settling();
    match acker.ack(BasicAckOptions::default()).await {
        Ok(true) => outcome,
        // The channel is gone: this delivery's tag is void and the broker
        // delivers the message again.
        Ok(false) => {
            warn!("ack not sent: the channel is closed; the broker will redeliver");
            Outcome::Requeued
        }
        Err(e) => {
            warn!(error = %e, "ack failed; the broker will redeliver");
            Outcome::Requeued
        }
    }
}

async fn requeue(acker: &Acker) -> Outcome {
    tokio::time::sleep(REQUEUE_DELAY).await;
    let nack = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    crate::broker::supervisor::settling();
    if let Err(e) = acker.nack(nack).await {
        warn!(error = %e, "nack failed; the broker will redeliver when the channel closes");
    }
    Outcome::Requeued
}
