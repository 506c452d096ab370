//! Log lines on stderr, as text or JSON, filtered by `RUST_LOG` (default
//! chosen by the command: `info` for the worker, quieter for the tools); and,
//! when configured, the OpenTelemetry layer ([`crate::otel`]).

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

use crate::config::LogFormat;

/// Installs the global subscriber; a second call is a no-op. `default` is the
/// filter used when `RUST_LOG` is not set.
pub fn init(format: LogFormat, default: &str) {
    init_with(format, default, None);
}

/// [`init`], plus an extra layer (OpenTelemetry). `RUST_LOG` filters the log
/// lines only; the extra layer has its own filter.
pub fn init_with(format: LogFormat, default: &str, extra: Option<crate::otel::OtelLayer>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let lines = fmt::layer().with_writer(std::io::stderr);
    let lines: crate::otel::OtelLayer = match format {
        LogFormat::Text => Box::new(lines.with_filter(filter)),
        LogFormat::Json => Box::new(
            lines
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_filter(filter),
        ),
    };
    let layers: Vec<crate::otel::OtelLayer> = std::iter::once(lines).chain(extra).collect();
    let _ = tracing_subscriber::registry().with(layers).try_init();
}
