//! Log lines on stderr, as text or JSON, filtered by `RUST_LOG` (default
//! chosen by the command: `info` for the worker, quieter for the tools).

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber; a second call is a no-op. `default` is the
/// filter used when `RUST_LOG` is not set.
pub fn init(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let filter = never_logged(filter);
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// Silences what must never reach a log whatever `RUST_LOG` says: lapin logs
/// every message the broker returns as unroutable, body included, at `warn`
/// (`lapin::returned_messages`). A directive added last wins over the user's
/// for the same target.
pub fn never_logged(filter: EnvFilter) -> EnvFilter {
    match "lapin::returned_messages=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}
