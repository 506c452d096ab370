//! OpenTelemetry traces over OTLP/HTTP (protobuf), on only when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
//!
//! - A span per message (the `message` span of [`crate::delivery`]), child of the
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

mod client;
mod dropped;
mod spans;

use dropped::BoundedProcessor;
pub use dropped::SPANS_DROPPED;
pub use spans::{attempt_span, inject, message_span, record_error, record_status};

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        OnceLock,
    },
    time::Duration,
};

use opentelemetry::{trace::TracerProvider as _, KeyValue};
use opentelemetry_otlp::WithHttpConfig;
use opentelemetry_sdk::{
    trace::{BatchConfigBuilder, SdkTracerProvider},
    Resource,
};
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
/// `ca_file` is `BRIDGE_CA_FILE`, trusted for an `https://` collector on top
/// of the platform's roots (unless `OTEL_EXPORTER_OTLP_CERTIFICATE` is set).
///
/// # Errors
/// An endpoint that is not an http(s) URL, a certificate file that is not
/// usable, or an exporter that cannot be built; the message names the
/// variable.
pub fn layer(ca_file: Option<&str>) -> Result<Option<OtelLayer>, String> {
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
    // The endpoint, headers and compression come from the standard
    // OTEL_EXPORTER_OTLP_* variables, read by the exporter itself; the
    // client's trust and timeout from ours (client.rs).
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client::build(ca_file)?)
        .build()
        .map_err(|e| format!("{}: cannot build the OTLP exporter ({e})", endpoint.0))?;
    // OTEL_BSP_* are read by the default; the queue size is the one we bound.
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(max_queue)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BoundedProcessor::new(exporter, secrets, max_queue, config))
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
