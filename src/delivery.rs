//! One delivery, start to finish: parse once, call every target at once,
//! decide, and settle. `settle` is the only code that acks, nacks or republishes a
//! delivery.

mod inline_str;

use inline_str::InlineStr;
use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{stream::FuturesUnordered, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::{
    api::{ApiClient, CallReport, Endpoint},
    broker::{
        fields::{self, BasicProperties},
        publisher::Publisher,
        settlement::{Settlement, Told},
        worker_session::Delivery,
    },
    config::{OutagePolicy, WorkerConfig},
    domain::{
        dead_letter, decide, message::validate_json, CallOutcome, DeadLetter, Disposition,
        InboundMessage, TargetSet,
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
pub struct DeliveryHandler {
    api: ApiClient,
    metrics: Metrics,
    queue: String,
    dlq: String,
    logging_api_event: String,
    hold_on_outage: bool,
    outage_pause: Duration,
    pause: PauseSender,
}

/// Each target's call report, in the configured order; `None` when the
/// target was not called (an earlier delivery got it accepted). Empty when no
/// target was called because the body was rejected.
type Calls = Vec<Option<CallReport>>;

/// What a target that was not called counts as.
static ALREADY_DONE: CallOutcome = CallOutcome::AlreadyDone;

impl DeliveryHandler {
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(cfg: &WorkerConfig, metrics: Metrics, pause: PauseSender) -> anyhow::Result<Self> {
        Ok(DeliveryHandler {
            api: ApiClient::new(cfg, &metrics)?,
            metrics,
            queue: cfg.broker.queue.clone(),
            dlq: cfg.broker.dlq.clone(),
            logging_api_event: cfg.log_event.clone(),
            hold_on_outage: cfg.outage_policy == OutagePolicy::Hold,
            outage_pause: cfg.outage_pause,
            pause,
        })
    }

    /// Handles one delivery to its end and returns how it ended. Never panics
    /// on input; a failure to settle leaves the delivery unacked, so the broker
    /// delivers it again.
    /// It is settled through `settlement` (acks coalesced on its channel).
    /// When `wrap_up` is cancelled, calls still running are dropped and the
    /// message goes back to the inbound queue with the targets done so far
    /// ([`Disposition::Return`]).
    pub async fn handle(
        self: Arc<Self>,
        delivery: Delivery,
        publisher: Arc<Publisher>,
        settlement: Settlement,
        wrap_up: CancellationToken,
    ) -> Outcome {
        let started = Instant::now();
        let Delivery {
            data,
            properties,
            redelivered,
            ..
        } = delivery;
        let settler = Settler(settlement);
        let (msg, malformed) = fields::inbound_message(&properties, Bytes::from(data));
        let span = tracing::info_span!("message", message_id = %msg.message_id);
        // OpenTelemetry: child of the message's traceparent (no-op when off).
        crate::otel::message_span(
            &span,
            msg.traceparent.as_deref(),
            msg.tracestate.as_deref(),
            &self.queue,
        );
        async move {
            self.warn_unknown_done(&msg, &malformed);
            let (disposition, calls) = self.process(&msg, &wrap_up).await;
            let reason = match &disposition {
                Disposition::DeadLetter(dl) => Some(dl.reason.as_str()),
                _ => None,
            };
            let outcome = self
                .settle(&settler, &publisher, &properties, &msg, disposition)
                .await;
            self.metrics.count_outcome(outcome);
            info!(
                message_id = %msg.message_id,
                outcome = outcome.as_str(),
                reason,
                // A string, so text logs quote it; formatted on the stack,
                // only when the line is written (the macro checks the level
                // first).
                latency_ms = InlineStr::display(&Latencies {
                    endpoints: self.api.endpoints(),
                    calls: &calls,
                    done: &msg.done,
                })
                .as_str(),
                total_ms = millis(started.elapsed()),
                redelivered,
                "message settled"
            );
            outcome
        }
        .instrument(span)
        .await
    }

    /// Names in `x-bridge-done-targets` that are no configured target are
    /// ignored (a target removed since, or a hand-written header); the
    /// configured targets not yet done are called.
    fn warn_unknown_done(&self, msg: &InboundMessage, malformed: &[String]) {
        if msg.done.is_empty() && malformed.is_empty() {
            return;
        }
        let endpoints = self.api.endpoints();
        let unknown: Vec<&str> = msg
            .done
            .iter()
            .filter(|name| !endpoints.iter().any(|e| e.name() == *name))
            .map(|name| name.as_str())
            // Malformed items are whatever a publisher wrote: bounded, so a
            // huge header cannot flood the log.
            .chain(malformed.iter().map(|s| prefix(s, 64)))
            .take(16)
            .collect();
        if !unknown.is_empty() {
            warn!(
                ?unknown,
                "ignoring names in x-bridge-done-targets that are not configured targets"
            );
        }
    }

    /// Validates, calls what still needs calling, and decides.
    async fn process(
        &self,
        msg: &InboundMessage,
        wrap_up: &CancellationToken,
    ) -> (Disposition, Calls) {
        let requests = match validate_json(&msg.body) {
            Err(why) => Err(why.0),
            Ok(json) => self
                .api
                .requests(msg, &msg.body[json], msg.event(&self.logging_api_event))
                .map_err(|e| e.to_string()),
        };
        let requests = match requests {
            Ok(r) => r,
            Err(why) => {
                debug!(%why, "invalid payload");
                let dl = DeadLetter::invalid_payload(why);
                return (Disposition::DeadLetter(dl), Vec::new());
            }
        };
        let endpoints = self.api.endpoints();
        let mut calls: Calls = endpoints.iter().map(|_| None).collect();
        // Every call starts at once; each retries on its own.
        let mut running: FuturesUnordered<_> = endpoints
            .iter()
            .enumerate()
            .filter(|(_, endpoint)| !msg.done.contains(endpoint.name().as_str()))
            .map(|(i, endpoint)| {
                let requests = &requests;
                async move { (i, self.api.call(endpoint, requests).await) }
            })
            .collect();
        loop {
            tokio::select! {
                biased;
                ended = running.next() => match ended {
                    Some((i, report)) => calls[i] = Some(report),
                    None => break,
                },
                () = wrap_up.cancelled() => {
                    // What was accepted so far travels with the message, so
                    // the next delivery does not call those targets again.
                    let done = endpoints
                        .iter()
                        .zip(&calls)
                        .filter(|(_, call)| {
                            matches!(call, Some(r) if matches!(r.outcome, CallOutcome::Succeeded { .. }))
                        })
                        .map(|(endpoint, _)| endpoint.name().clone())
                        .collect::<TargetSet>()
                        .union(&msg.done);
                    return (Disposition::Return { done }, calls);
                }
            }
        }
        let outcomes = endpoints.iter().zip(&calls).map(|(endpoint, call)| {
            let outcome = call.as_ref().map_or(&ALREADY_DONE, |r| &r.outcome);
            (endpoint.name(), outcome)
        });
        let disposition = decide(&msg.done, outcomes, self.hold_on_outage);
        (disposition, calls)
    }

    /// Carries out a disposition. The ack always comes last: until then the
    /// broker owns the message.
    async fn settle(
        &self,
        settler: &Settler,
        publisher: &Publisher,
        props: &BasicProperties,
        msg: &InboundMessage,
        disposition: Disposition,
    ) -> Outcome {
        match disposition {
            Disposition::Ack => settler.ack(Outcome::Acked).await,
            Disposition::DeadLetter(dl) => {
                let headers = dead_letter::headers(&dl, time::OffsetDateTime::now_utc());
                let props = fields::dead_letter_properties(props, msg, headers);
                let props = fit_frame(props, publisher);
                match publisher
                    .publish_dead_letter(&self.dlq, &msg.body, props)
                    .await
                {
                    Ok(()) => {
                        // Counted once the copy is stored: a copy not
                        // confirmed is requeued and dead-lettered again later.
                        self.metrics.count_dead_letter(&dl);
                        settler.ack(Outcome::DeadLettered).await
                    }
                    Err(e) => {
                        warn!(error = %e, dlq = %self.dlq, "dead-letter publish not confirmed; requeueing the message");
                        settler.requeue().await
                    }
                }
            }
            Disposition::Hold { done } => {
                // Pause first: the API is down whether or not the republish works.
                let until = tokio::time::Instant::now() + self.outage_pause;
                self.pause.send_replace(Some(until));
                self.hold(settler, publisher, props, msg, done).await
            }
            Disposition::Return { done } => {
                // Intake resumes after a hold pause, or shutdown's grace is over.
                info!(%done, "calls stopped before they ended: back to the queue with the targets done so far");
                self.hold(settler, publisher, props, msg, done).await
            }
        }
    }

    /// Republishes the message to the inbound queue with the targets that
    /// accepted it, confirmed, then acks the original.
    async fn hold(
        &self,
        settler: &Settler,
        publisher: &Publisher,
        props: &BasicProperties,
        msg: &InboundMessage,
        done: TargetSet,
    ) -> Outcome {
        let props = fit_frame(fields::held_properties(props, msg, done), publisher);
        match publisher.publish(&self.queue, &msg.body, props).await {
            Ok(()) => settler.ack(Outcome::Held).await,
            Err(e) => {
                warn!(error = %e, "hold republish not confirmed; requeueing the message");
                settler.requeue().await
            }
        }
    }
}

/// The copy as it can be published: one header frame over the connection's
/// frame size would make the broker close the publishing connection.
fn fit_frame(props: BasicProperties, publisher: &Publisher) -> BasicProperties {
    let (props, dropped) = fields::fit_frame(props, publisher.frame_max());
    if !dropped.is_empty() {
        warn!(
            ?dropped,
            frame_max = publisher.frame_max(),
            "headers left out of the copy so that it fits the frame size (listed in x-bridge-headers-dropped)"
        );
    }
    props
}

/// The per-target latencies of the log line, as one value
/// (`user-management=12.3 logging=done`): target names belong in values, not
/// in field names.
struct Latencies<'a> {
    endpoints: &'a [Endpoint],
    calls: &'a [Option<CallReport>],
    /// What was done before this delivery; a target neither in it nor
    /// called to its end was stopped.
    done: &'a TargetSet,
}

impl fmt::Display for Latencies<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (endpoint, call)) in self.endpoints.iter().zip(self.calls).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            match call {
                Some(report) => write!(
                    f,
                    "{}={:.1}",
                    endpoint.name(),
                    report.elapsed.as_secs_f64() * 1000.0
                )?,
                None if self.done.contains(endpoint.name().as_str()) => {
                    write!(f, "{}=done", endpoint.name())?;
                }
                None => write!(f, "{}=stopped", endpoint.name())?,
            }
        }
        Ok(())
    }
}

/// At most the first `max` bytes of `s`, cut at a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Milliseconds with one decimal, for log lines.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// How settling a delivery counts: an ack that did not reach the broker is
/// a redelivery to come (`requeued`), never an ack.
struct Settler(Settlement);

impl Settler {
    async fn ack(&self, outcome: Outcome) -> Outcome {
        crate::in_flight::settling();
        match self.0.ack().await {
            Told::Sent => outcome,
            Told::ChannelGone => {
                warn!("ack not sent: the channel is closed; the broker will redeliver");
                Outcome::Requeued
            }
            Told::Failed(e) => {
                warn!(error = %e, "ack failed; the broker will redeliver");
                Outcome::Requeued
            }
        }
    }

    async fn requeue(&self) -> Outcome {
        tokio::time::sleep(REQUEUE_DELAY).await;
        crate::in_flight::settling();
        if let Told::Failed(e) = self.0.requeue().await {
            warn!(error = %e, "nack failed; the broker will redeliver when the channel closes");
        }
        Outcome::Requeued
    }
}
