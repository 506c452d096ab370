//! The Prometheus metrics of the contract, as typed handles.
//!
//! Per-target series are resolved once per target at startup
//! ([`Metrics::target`]), so an attempt bumps a counter without hashing labels.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::{DeadLetter, Reason, TargetName};

/// How a delivery ended, as the `outcome` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Acked,
    DeadLettered,
    Held,
    /// Not settled here: nacked with requeue, or the ack could not be sent
    /// because the channel was gone. Either way the broker delivers it again.
    Requeued,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Acked,
        Outcome::DeadLettered,
        Outcome::Held,
        Outcome::Requeued,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Acked => "acked",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Held => "held",
            Outcome::Requeued => "requeued",
        }
    }
}

/// The result of one HTTP attempt, as the `result` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    Success,
    TransientError,
    PermanentError,
}

impl AttemptResult {
    pub const ALL: [AttemptResult; 3] = [
        AttemptResult::Success,
        AttemptResult::TransientError,
        AttemptResult::PermanentError,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Success => "success",
            AttemptResult::TransientError => "transient_error",
            AttemptResult::PermanentError => "permanent_error",
        }
    }
}

/// Cheap to clone: every handle is an `Arc` inside.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    messages: [IntCounter; 4],
    api_requests: IntCounterVec,
    api_duration: HistogramVec,
    pub in_flight: IntGauge,
    pub broker_connected: IntGauge,
    pub dlq_depth: IntGauge,
    /// `bridge_broker_node_info{node}`: 1 for the node connected to, no
    /// series while disconnected.
    broker_node: IntGaugeVec,
    /// `bridge_dead_letters_total{reason,target}`: the DLQ's depth says how
    /// much waits, not why it keeps arriving; this says which cause.
    dead_letters: IntCounterVec,
}

/// The `target` label of a dead letter that names no target (an
/// `invalid_payload` is rejected before any target is called).
pub const NO_TARGET: &str = "none";

/// One target's `bridge_api_requests_total` and
/// `bridge_api_request_duration_seconds` series.
#[derive(Clone)]
pub struct TargetMetrics {
    /// Indexed by `AttemptResult as usize`.
    requests: [IntCounter; 3],
    duration: Histogram,
}

impl TargetMetrics {
    pub fn record_attempt(&self, result: AttemptResult, took: Duration) {
        self.requests[result as usize].inc();
        self.duration.observe(took.as_secs_f64());
    }
}

impl std::fmt::Debug for TargetMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetMetrics").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        // Names and help texts are constants; registration into a fresh
        // registry can only fail on a duplicate name, which is a programming
        // error caught by the unit test below.
        let messages_vec = IntCounterVec::new(
            Opts::new(
                "bridge_messages_total",
                "Messages settled, by outcome (acked, dead_lettered, held, requeued).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let api_requests = IntCounterVec::new(
            Opts::new(
                "bridge_api_requests_total",
                "HTTP attempts to the downstream APIs, by target and result.",
            ),
            &["target", "result"],
        )
        .expect("valid metric");
        let api_duration_vec = HistogramVec::new(
            HistogramOpts::new(
                "bridge_api_request_duration_seconds",
                "Duration of one HTTP attempt to a downstream API.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["target"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new(
            "bridge_messages_in_flight",
            "Deliveries being processed by this worker.",
        )
        .expect("valid metric");
        let broker_connected = IntGauge::new(
            "bridge_broker_connected",
            "1 while the worker is connected to the broker, else 0.",
        )
        .expect("valid metric");
        let dlq_depth = IntGauge::new(
            "bridge_dead_letter_queue_depth",
            "Messages waiting in the dead-letter queue (refreshed every few seconds).",
        )
        .expect("valid metric");
        let broker_node = IntGaugeVec::new(
            Opts::new(
                "bridge_broker_node_info",
                "1 for the broker node (host:port) this worker is connected to.",
            ),
            &["node"],
        )
        .expect("valid metric");
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "bridge_dead_letters_total",
                "Messages dead-lettered (DLQ copy confirmed), one count per failed target, by reason and target (\"none\" for invalid_payload).",
            ),
            &["reason", "target"],
        )
        .expect("valid metric");
        // A series present from the start, so a first increase shows in rate().
        let _ = dead_letters.with_label_values(&[Reason::InvalidPayload.as_str(), NO_TARGET]);
        let build_info = IntGaugeVec::new(
            Opts::new("bridge_build_info", "1, labelled with the version running."),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry
            .register(Box::new(broker_node.clone()))
            .expect("unique metric names");
        registry
            .register(Box::new(build_info))
            .expect("unique metric names");
        for c in [
            Box::new(messages_vec.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(api_requests.clone()),
            Box::new(api_duration_vec.clone()),
            Box::new(in_flight.clone()),
            Box::new(broker_connected.clone()),
            Box::new(dlq_depth.clone()),
            Box::new(dead_letters.clone()),
            // Process-wide (src/otel/dropped.rs); 0 while OpenTelemetry is off.
            Box::new(crate::otel::SPANS_DROPPED.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        // process_*: CPU seconds, resident memory, open file descriptors,
        // threads and start time of this process (read from /proc at scrape).
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric names");
        Metrics {
            registry,
            messages: Outcome::ALL.map(|o| messages_vec.with_label_values(&[o.as_str()])),
            api_requests,
            api_duration: api_duration_vec,
            in_flight,
            broker_connected,
            dlq_depth,
            broker_node,
            dead_letters,
        }
    }

    /// Counts a dead letter whose DLQ copy the broker confirmed: once per
    /// failed target, so a message two targets refused shows under both.
    pub fn count_dead_letter(&self, dl: &DeadLetter) {
        let reason = dl.reason.as_str();
        if dl.failed.is_empty() {
            self.dead_letters
                .with_label_values(&[reason, NO_TARGET])
                .inc();
        }
        for target in dl.failed.iter() {
            self.dead_letters
                .with_label_values(&[reason, target.as_str()])
                .inc();
        }
    }

    /// `bridge_dead_letters_total` for one reason and target (`demo` and
    /// tests read it).
    pub fn dead_letter_count(&self, reason: &str, target: &str) -> u64 {
        self.dead_letters.with_label_values(&[reason, target]).get()
    }

    /// Records the node connected to (`None`: disconnected); the previous
    /// node's series goes away, so only one node is ever 1.
    pub fn set_broker_node(&self, node: Option<&str>) {
        self.broker_node.reset();
        if let Some(node) = node {
            self.broker_node.with_label_values(&[node]).set(1);
        }
    }

    pub fn count_outcome(&self, outcome: Outcome) {
        self.messages[outcome as usize].inc();
    }

    pub fn outcome_count(&self, outcome: Outcome) -> u64 {
        self.messages[outcome as usize].get()
    }

    /// The series of one target, resolved once. Resolving every label
    /// combination also makes a scrape show zeros from the start.
    pub fn target(&self, target: &TargetName) -> TargetMetrics {
        let _ = self
            .dead_letters
            .with_label_values(&[Reason::ApiFailed.as_str(), target.as_str()]);
        TargetMetrics {
            requests: AttemptResult::ALL.map(|r| {
                self.api_requests
                    .with_label_values(&[target.as_str(), r.as_str()])
            }),
            duration: self.api_duration.with_label_values(&[target.as_str()]),
        }
    }

    /// Attempts to `target` with `result` so far (`demo` reports retries).
    pub fn attempt_count(&self, target: &str, result: AttemptResult) -> u64 {
        self.api_requests
            .with_label_values(&[target, result.as_str()])
            .get()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on an invalid metric family, which the
        // registry never holds.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_contract_metric() {
        let m = Metrics::new();
        m.count_outcome(Outcome::DeadLettered);
        let name = |s| TargetName::parse(s).unwrap();
        let _ = m.target(&name("user-management"));
        m.target(&name("logging"))
            .record_attempt(AttemptResult::TransientError, Duration::from_millis(3));
        let text = m.render();
        for needle in [
            "# TYPE bridge_messages_total counter",
            "bridge_messages_total{outcome=\"acked\"} 0",
            "bridge_messages_total{outcome=\"dead_lettered\"} 1",
            "bridge_messages_total{outcome=\"held\"} 0",
            "bridge_messages_total{outcome=\"requeued\"} 0",
            "bridge_api_requests_total{result=\"transient_error\",target=\"logging\"} 1",
            "bridge_api_requests_total{result=\"success\",target=\"user-management\"} 0",
            "# TYPE bridge_api_request_duration_seconds histogram",
            "bridge_api_request_duration_seconds_bucket{target=\"logging\",le=\"0.005\"} 1",
            "# TYPE bridge_messages_in_flight gauge",
            "# TYPE bridge_broker_connected gauge",
            "# TYPE bridge_dead_letter_queue_depth gauge",
            "bridge_build_info{version=\"",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn dead_letters_count_once_per_failed_target() {
        let m = Metrics::new();
        let name = |s| TargetName::parse(s).unwrap();
        let _ = m.target(&name("user-management"));
        let dl = DeadLetter {
            reason: Reason::ApiFailed,
            failed: ["user-management", "logging"]
                .map(name)
                .into_iter()
                .collect(),
            done: crate::domain::TargetSet::empty(),
            errors: Vec::new(),
            attempts: 1,
        };
        m.count_dead_letter(&dl);
        m.count_dead_letter(&DeadLetter::invalid_payload("EOF".into()));
        let text = m.render();
        for needle in [
            "# TYPE bridge_dead_letters_total counter",
            "bridge_dead_letters_total{reason=\"api_failed\",target=\"user-management\"} 1",
            "bridge_dead_letters_total{reason=\"api_failed\",target=\"logging\"} 1",
            "bridge_dead_letters_total{reason=\"invalid_payload\",target=\"none\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn node_info_names_only_the_current_node() {
        let m = Metrics::new();
        m.set_broker_node(Some("a:5672"));
        m.set_broker_node(Some("b:5672"));
        let text = m.render();
        assert!(
            text.contains("bridge_broker_node_info{node=\"b:5672\"} 1"),
            "{text}"
        );
        assert!(!text.contains("a:5672"), "{text}");
        m.set_broker_node(None);
        assert!(!m.render().contains("b:5672"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn renders_the_process_metrics() {
        let text = Metrics::new().render();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
    }
}
