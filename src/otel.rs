//! OpenTelemetry traces over OTLP/HTTP (protobuf), on only when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
//!
//! - A span per message (the `message` span of [`crate::worker`]), child of the
//!   message's `traceparent` header when it has one ([`message_span`]).
//! - A span per API attempt with the HTTP semantic-convention attributes
//!   ([`attempt_span`]); its context is what the API receives as
//!   `traceparent` ([`inject`]).
//!
//! The exporter never blocks or fails a message: spans go into a bounded queue
//! (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048) that a background thread exports
//! in batches. A span that finds the queue full, or whose batch the collector
//! did not take, is dropped and counted in `bridge_otel_spans_dropped_total`.
//!
//! When the variables are unset nothing is installed: no layer, no thread, and
//! the helpers below return at the first branch.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, LazyLock, OnceLock,
    },
    time::Duration,
};

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{Status, TracerProvider as _},
    Context, KeyValue,
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
        SpanProcessor,
    },
    Resource,
};
use prometheus::IntCounter;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    filter::{filter_fn, LevelFilter},
    registry::Registry,
    Layer,
};

const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// `bridge_otel_spans_dropped_total`: process-wide, registered by
/// [`crate::metrics::Metrics`]; 0 while OpenTelemetry is off.
pub static SPANS_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "bridge_otel_spans_dropped_total",
        "Trace spans dropped: the export queue was full or the collector did not take them.",
    )
    .expect("valid metric")
});

/// A layer that turns the worker's spans into OpenTelemetry spans.
pub type OtelLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// True once [`layer`] installed an exporter.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Builds the exporter and the layer when an OTLP endpoint is configured.
/// Call it before the async runtime starts (the OTLP client is blocking and
/// runs on the exporter's own thread).
///
/// # Errors
/// An endpoint that is not an http(s) URL, or an exporter that cannot be built;
/// the message names the variable.
pub fn layer() -> Result<Option<OtelLayer>, String> {
    let endpoint = match (var(TRACES_ENDPOINT), var(ENDPOINT)) {
        (Some(e), _) => (TRACES_ENDPOINT, e),
        (None, Some(e)) => (ENDPOINT, e),
        (None, None) => return Ok(None),
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none")
    {
        return Ok(None);
    }
    if let Some(v) = var("OTEL_TRACES_EXPORTER").filter(|v| v.trim() != "otlp") {
        return Err(format!(
            "OTEL_TRACES_EXPORTER={v:?}: only otlp (or none) is supported"
        ));
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(v) = var(name).filter(|v| v.trim() != "http/protobuf") {
            return Err(format!("{name}={v:?}: only http/protobuf is supported"));
        }
    }
    // The value is not shown: it may carry credentials.
    let url = match url::Url::parse(endpoint.1.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        _ => return Err(format!("{}: not an http(s) URL", endpoint.0)),
    };
    let secrets: Vec<String> = [url.password().unwrap_or_default(), url.username()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let max_queue = match var(MAX_QUEUE_SIZE) {
        None => DEFAULT_MAX_QUEUE_SIZE,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("{MAX_QUEUE_SIZE}={v:?} is not a positive number")),
        },
    };
    // The endpoint, headers, timeout and compression come from the standard
    // OTEL_EXPORTER_OTLP_* variables, read by the exporter itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("{}: cannot build the OTLP exporter ({e})", endpoint.0))?;
    let pending = Arc::new(AtomicUsize::new(0));
    let batch = BatchSpanProcessor::builder(CountingExporter {
        inner: exporter,
        pending: Arc::clone(&pending),
        last_warning: std::sync::Mutex::default(),
        secrets,
    })
    // OTEL_BSP_* are read by the default; the queue size is the one we bound.
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(max_queue)
            .build(),
    )
    .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BoundedProcessor {
            inner: batch,
            pending,
            max_queue,
        })
        .with_resource(resource())
        .build();
    let tracer = provider.tracer("fanout-bridge");
    let _ = PROVIDER.set(provider);
    ENABLED.store(true, Ordering::Relaxed);
    // Only this crate's spans (not its log events, not libraries'), whatever
    // RUST_LOG says: RUST_LOG filters the log lines only.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            filter_fn(|meta| meta.is_span() && meta.target().starts_with("fanout_bridge"))
                .with_max_level_hint(LevelFilter::INFO),
        );
    Ok(Some(Box::new(layer)))
}

/// `service.name` is `OTEL_SERVICE_NAME` (or `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`), else `fanout-bridge`.
fn resource() -> Resource {
    let builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    let named = var("OTEL_SERVICE_NAME").is_some()
        || var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    if named {
        builder.build()
    } else {
        builder.with_service_name("fanout-bridge").build()
    }
}

/// Exports what is still queued (bounded by the exporter's timeout). Called
/// once, at exit.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
    }
}

// === The bounded queue and the drop count ===

/// Counts spans between `on_end` and the exporter and refuses (counting) a
/// span that would overflow the batch processor's queue, so every drop is
/// seen here.
#[derive(Debug)]
struct BoundedProcessor {
    inner: BatchSpanProcessor,
    /// Spans handed to `inner` and not yet given to the exporter: at least
    /// what its queue holds.
    pending: Arc<AtomicUsize>,
    max_queue: usize,
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

// === Spans of the worker ===

/// Makes the message span a child of the message's `traceparent` (and
/// `tracestate`) and adds the messaging attributes. Nothing when off.
pub fn message_span(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>, queue: &str) {
    if !enabled() {
        return;
    }
    if let Some(traceparent) = traceparent {
        let carrier = Carrier {
            traceparent,
            tracestate,
        };
        let cx = TraceContextPropagator::new().extract(&carrier);
        let _ = span.set_parent(cx);
    }
    span.set_attribute("messaging.system", "rabbitmq");
    span.set_attribute("messaging.operation.type", "process");
    span.set_attribute("messaging.destination.name", queue.to_owned());
}

struct Carrier<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The span of one HTTP attempt (a child of the current, message, span), or
/// a disabled span when OpenTelemetry is off.
pub fn attempt_span(target: &str, url: &reqwest::Url, attempt: u32) -> Span {
    if !enabled() {
        return Span::none();
    }
    // url.full without credentials (the spec's rule: never user:password).
    let mut full = url.clone();
    let _ = full.set_username("");
    let _ = full.set_password(None);
    tracing::info_span!(
        "POST",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = "POST",
        url.full = %full,
        server.address = url.host_str().unwrap_or_default(),
        server.port = url.port_or_known_default().unwrap_or_default(),
        http.response.status_code = tracing::field::Empty,
        http.request.resend_count = attempt.saturating_sub(1),
        error.type = tracing::field::Empty,
        bridge.target = target,
    )
}

/// Sends `span`'s context as `traceparent`/`tracestate`, replacing the ones
/// passed through from the message. Nothing when off.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if !enabled() || span.is_disabled() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Records the answer of an attempt: its status, and an error status for a
/// status the contract does not count as success.
pub fn record_status(span: &Span, status: u16) {
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", status);
    if !(200..300).contains(&status) {
        span.record("error.type", status.to_string());
        span.set_status(Status::error(format!("HTTP {status}")));
    }
}

/// Records a transport failure (connection refused, TLS, timeout).
pub fn record_error(span: &Span, kind: &'static str, description: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("error.type", kind);
    span.set_status(Status::error(description.to_owned()));
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Condvar, Mutex},
        time::Instant,
    };

    use opentelemetry::trace::{Span as _, Tracer as _};

    use super::*;

    #[test]
    fn off_costs_nothing_and_passes_traceparent_through() {
        assert!(!enabled());
        let url = reqwest::Url::parse("http://u:p@127.0.0.1:1/x").unwrap();
        let span = attempt_span("logging", &url, 1);
        assert!(span.is_disabled());
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("00-a-b-01"));
        inject(&span, &mut headers);
        assert_eq!(headers["traceparent"], "00-a-b-01");
    }

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
        let pending = Arc::new(AtomicUsize::new(0));
        let batch = BatchSpanProcessor::builder(CountingExporter {
            inner: Stuck(Arc::clone(&gate)),
            pending: Arc::clone(&pending),
            last_warning: Mutex::default(),
            secrets: Vec::new(),
        })
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(8)
                .with_max_export_batch_size(2)
                .with_scheduled_delay(Duration::from_millis(5))
                .build(),
        )
        .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BoundedProcessor {
                inner: batch,
                pending,
                max_queue: 8,
            })
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
