//! The OpenTelemetry ids of the span a log line is written in, for the line
//! itself: a log line leads to its trace.
//!
//! A span has ids once the OpenTelemetry layer exported it (only this crate's
//! spans, and only when `OTEL_EXPORTER_OTLP_*` is set) and it was entered; the
//! ids are those of the innermost such span around the event: an attempt
//! span inside the message span, else the message span. With OpenTelemetry
//! off no span has them and nothing is added.

use std::fmt;

use opentelemetry::trace::{SpanId, TraceId};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OtelData;
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    layer::Context,
    registry::{LookupSpan, Scope},
};

/// A trace id and a span id, written as lowercase hex (32 and 16 digits), as
/// the collector and `traceparent` show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    trace: TraceId,
    span: SpanId,
}

impl Ids {
    pub fn trace_id(&self) -> Hex<TraceId> {
        Hex(self.trace)
    }

    pub fn span_id(&self) -> Hex<SpanId> {
        Hex(self.span)
    }
}

/// An id that serialises as its hex string without an allocation.
pub struct Hex<T>(T);

/// `TraceId`'s and `SpanId`'s `Display` is the zero-padded hex (their
/// `LowerHex` is not padded).
impl<T: fmt::Display> fmt::Display for Hex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: fmt::Display> serde::Serialize for Hex<T> {
    fn serialize<Se: serde::Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        serializer.collect_str(self)
    }
}

/// The ids of the innermost span of `scope` (leaf first) that has them.
fn of_scope<S>(scope: Option<Scope<'_, S>>) -> Option<Ids>
where
    S: for<'a> LookupSpan<'a>,
{
    scope?.find_map(|span| {
        let ext = span.extensions();
        let data = ext.get::<OtelData>()?;
        Some(Ids {
            trace: data.trace_id().filter(|t| *t != TraceId::INVALID)?,
            span: data.span_id().filter(|s| *s != SpanId::INVALID)?,
        })
    })
}

/// The ids for `event`, from a layer's context.
pub fn of_event<S>(ctx: &Context<'_, S>, event: &Event<'_>) -> Option<Ids>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    of_scope(ctx.event_scope(event))
}

/// A text line as `F` writes it, with ` trace_id=… span_id=…` at its end when
/// it was written inside an exported span. Such a line is formatted into a
/// buffer first and loses its colours (only with OpenTelemetry on, at a
/// terminal); the others are written as `F` writes them.
pub struct TextWithIds<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for TextWithIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(ids) = of_scope(ctx.event_scope()) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        writeln!(
            writer,
            "{line} trace_id={} span_id={}",
            ids.trace_id(),
            ids.span_id()
        )
    }
}
