//! Log lines on stderr, as text or JSON, filtered by `RUST_LOG` (default
//! chosen by the command: `info` for the worker, quieter for the tools); and,
//! when configured, the OpenTelemetry layer ([`crate::otel`]).
//!
//! With OpenTelemetry on, a line written inside a span that is exported (the
//! message span, an attempt span) carries that span's `trace_id` and
//! `span_id`, the ids the collector gets: top-level fields in JSON,
//! `trace_id=… span_id=…` at the end of a text line.

mod trace_ids;

use std::io::IsTerminal;

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

use crate::config::LogFormat;

/// Our log lines for `command` (`BRIDGE_LOG_FORMAT`, `RUST_LOG`), and for the
/// worker the OpenTelemetry layer when `OTEL_EXPORTER_OTLP_*` asks for it.
/// Call it before the runtime starts: the OTLP client is blocking and lives
/// on the exporter's own thread.
///
/// # Errors
/// A bad `BRIDGE_LOG_FORMAT` or OpenTelemetry setting (exit 2).
pub fn init_for(
    command: &crate::cli::Command,
    raw: &crate::config::RawConfig,
) -> Result<(), String> {
    let format = raw.log_format().map_err(|e| e.to_string())?;
    let traces = if matches!(command, crate::cli::Command::Run) {
        crate::otel::layer(raw.ca_file()).map_err(|e| format!("invalid configuration: {e}"))?
    } else {
        None
    };
    init_with(format, command.default_log_filter(), traces);
    Ok(())
}

/// Installs the global subscriber, with an extra layer (OpenTelemetry) if
/// given; a second call is a no-op. `default` is the filter used when
/// `RUST_LOG` is not set; it filters the log lines only, the extra layer has
/// its own filter.
pub fn init_with(format: LogFormat, default: &str, extra: Option<crate::otel::OtelLayer>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let lines = lines(format, std::io::stderr, std::io::stderr().is_terminal());
    let lines = Box::new(lines.with_filter(never_logged(filter)));
    let layers: Vec<crate::otel::OtelLayer> = std::iter::once(lines as _).chain(extra).collect();
    let _ = tracing_subscriber::registry().with(layers).try_init();
}

/// The layer that writes the log lines to `writer`, in `format`, with colour
/// when `terminal` (and `NO_COLOR` unset).
fn lines<W>(format: LogFormat, writer: W, terminal: bool) -> crate::otel::OtelLayer
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => Box::new(
            fmt::layer()
                .with_writer(writer)
                .with_ansi(colour(terminal, std::env::var_os("NO_COLOR")))
                .map_event_format(trace_ids::TextWithIds),
        ),
        // tracing-subscriber's JSON layout (flattened event, the current span
        // with the message's id, no span list), written by json-subscriber,
        // which can add fields: the OpenTelemetry ids, at the top level.
        LogFormat::Json => {
            let mut layer = json_subscriber::fmt::layer()
                .with_writer(writer)
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false);
            layer
                .inner_layer_mut()
                .add_multiple_dynamic_fields(|event, ctx, out| {
                    if let Some(ids) = trace_ids::of_event(ctx, event) {
                        let _ = out.write_field("trace_id", ids.trace_id());
                        let _ = out.write_field("span_id", ids.span_id());
                    }
                });
            Box::new(layer)
        }
    }
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

/// Colour only for a person at a terminal: escape codes in a file, a pipe or
/// a log collector are noise. `NO_COLOR` (any non-empty value) turns it off
/// there too (no-color.org).
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests;
