//! Dropped-span accounting: a bounded queue in front of the batch processor
//! and an exporter wrapper, so every span that is not exported (queue full,
//! collector refusing a batch) is counted in `bridge_otel_spans_dropped_total`.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, LazyLock,
    },
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{BatchConfig, BatchSpanProcessor, SpanData, SpanExporter, SpanProcessor},
    Resource,
};
use prometheus::IntCounter;

/// `bridge_otel_spans_dropped_total`: process-wide, registered by
/// [`crate::metrics::Metrics`]; 0 while OpenTelemetry is off.
pub static SPANS_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "bridge_otel_spans_dropped_total",
        "Trace spans dropped: the export queue was full or the collector did not take them.",
    )
    .expect("valid metric")
});

/// Counts spans between `on_end` and the exporter and refuses (counting) a
/// span that would overflow the batch processor's queue, so every drop is
/// seen here.
#[derive(Debug)]
pub(super) struct BoundedProcessor {
    inner: BatchSpanProcessor,
    /// Spans handed to `inner` and not yet given to the exporter: at least
    /// what its queue holds.
    pending: Arc<AtomicUsize>,
    max_queue: usize,
}

impl BoundedProcessor {
    /// A batch processor with `config` (whose queue size must be
    /// `max_queue`) exporting through `exporter`, every drop counted;
    /// `secrets` are kept out of the export errors it logs.
    pub(super) fn new<E: SpanExporter + 'static>(
        exporter: E,
        secrets: Vec<String>,
        max_queue: usize,
        config: BatchConfig,
    ) -> Self {
        let pending = Arc::new(AtomicUsize::new(0));
        let inner = BatchSpanProcessor::builder(CountingExporter {
            inner: exporter,
            pending: Arc::clone(&pending),
            last_warning: std::sync::Mutex::default(),
            secrets,
        })
        .with_batch_config(config)
        .build();
        BoundedProcessor {
            inner,
            pending,
            max_queue,
        }
    }
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            SPANS_DROPPED.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting the spans of a batch the collector did not take.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    pending: Arc<AtomicUsize>,
    last_warning: std::sync::Mutex<Option<std::time::Instant>>,
    /// The endpoint's user and password, kept out of the log line.
    secrets: Vec<String>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.pending.fetch_sub(n, Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            SPANS_DROPPED.inc_by(n as u64);
            // One line per minute at most: a collector that is down must not
            // flood the log.
            let now = std::time::Instant::now();
            let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
                *last = Some(now);
                let mut error = e.to_string();
                for secret in &self.secrets {
                    error = error.replace(secret.as_str(), "[redacted]");
                }
                tracing::warn!(%error, dropped = n, "OpenTelemetry export failed; spans dropped (bridge_otel_spans_dropped_total)");
            }
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Condvar, Mutex},
        time::Instant,
    };

    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::{BatchConfigBuilder, SdkTracerProvider};

    use super::*;

    /// An exporter stuck until the gate opens: a collector that hangs.
    #[derive(Debug, Clone)]
    struct Stuck(Arc<(Mutex<bool>, Condvar)>);

    impl SpanExporter for Stuck {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            let (open, cv) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            Ok(())
        }
    }

    #[test]
    fn a_hanging_collector_never_blocks_and_every_drop_is_counted() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let processor = BoundedProcessor::new(
            Stuck(Arc::clone(&gate)),
            Vec::new(),
            8,
            BatchConfigBuilder::default()
                .with_max_queue_size(8)
                .with_max_export_batch_size(2)
                .with_scheduled_delay(Duration::from_millis(5))
                .build(),
        );
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        let before = SPANS_DROPPED.get();
        let started = Instant::now();
        for _ in 0..200 {
            tracer.start("span").end();
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never blocks");
        let dropped = SPANS_DROPPED.get() - before;
        // At most the queue (8) and the batch stuck in the exporter (2) are
        // held; everything else is dropped and counted.
        assert!((190..=200).contains(&dropped), "dropped {dropped}");
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
        let _ = provider.shutdown();
    }
}
