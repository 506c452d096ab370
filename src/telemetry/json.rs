//! JSON log lines (`BRIDGE_LOG_FORMAT=json`), written straight into the
//! line's buffer.
//!
//! The output is tracing-subscriber's own JSON format as we configure it
//! (flattened event, current span, no span list), byte for byte: the test
//! below renders the same events through both. Its formatter builds each
//! line through serde (span fields are stored as JSON text and parsed back on
//! every line); this one writes each field once, escaped on the way, which
//! matters for the one line every message produces at `info`.

use std::fmt::{self, Write as _};

use tracing::{
    field::{Field, Visit},
    span::Record,
    Event, Subscriber,
};
use tracing_subscriber::{
    field::RecordFields,
    fmt::{
        format::Writer,
        time::{FormatTime, SystemTime},
        FmtContext, FormatEvent, FormatFields, FormattedFields,
    },
    registry::LookupSpan,
};

/// The event half: `{"timestamp":…,"level":…,<fields>,"target":…,"span":{…}}`.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLine;

/// The span half: a span's fields as the inside of a JSON object, sorted by
/// name (tracing-subscriber keeps them in a sorted map), stored once when the
/// span is created and copied into each line written inside it.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonSpanFields;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = EventFields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, meta.target())?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            writer.write_str(",\"span\":{")?;
            let ext = span.extensions();
            if let Some(stored) = ext.get::<FormattedFields<N>>() {
                if !stored.is_empty() {
                    writer.write_str(stored)?;
                    writer.write_char(',')?;
                }
            }
            writer.write_str("\"name\":")?;
            string(&mut writer, span.metadata().name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// An event's fields in the order they were recorded, each after a comma.
/// Numbers and booleans stay JSON numbers and booleans; everything else is
/// its `Debug` text as a string (what tracing-serde does).
struct EventFields<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl EventFields<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self
                .out
                .write_char(',')
                .and_then(|()| string(self.out, field.name()))
                .and_then(|()| self.out.write_char(':'))
                .and_then(|()| value(self.out));
        }
    }
}

impl Visit for EventFields<'_, '_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |w| float(w, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write!(w, "{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write!(w, "{value}"));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| w.write_str(if value { "true" } else { "false" }));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| string(w, value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| debug_string(w, value));
    }
}

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut collected = SpanFields::default();
        fields.record(&mut collected);
        collected.write_sorted(&mut writer)
    }

    /// Fields recorded after the span was created: merged by name, the
    /// later value winning, still sorted. Only spans that record fields
    /// later (the OpenTelemetry attempt spans) come here.
    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let mut collected = SpanFields::default();
        fields.record(&mut collected);
        if current.fields.is_empty() {
            return collected.write_sorted(&mut current.as_writer());
        }
        let old: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&format!("{{{}}}", current.fields)).map_err(|_| fmt::Error)?;
        let mut merged: Vec<(String, String)> = old
            .into_iter()
            .filter(|(k, _)| !collected.0.iter().any(|(n, _)| n == k))
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        merged.extend(collected.0.into_iter().map(|(k, v)| (k.to_owned(), v)));
        merged.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::with_capacity(current.fields.len() + 32);
        write_entries(
            &mut out,
            merged.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        current.fields = out;
        Ok(())
    }
}

/// A span's fields as (name, JSON value text), later values replacing
/// earlier ones of the same name.
#[derive(Default)]
struct SpanFields(Vec<(&'static str, String)>);

impl SpanFields {
    fn put(&mut self, name: &'static str, value: String) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    fn put_with(&mut self, field: &Field, render: impl FnOnce(&mut String) -> fmt::Result) {
        let mut value = String::new();
        if render(&mut value).is_ok() {
            self.put(field.name(), value);
        }
    }

    fn write_sorted(mut self, out: &mut impl fmt::Write) -> fmt::Result {
        self.0.sort_by(|a, b| a.0.cmp(b.0));
        write_entries(out, self.0.iter().map(|(k, v)| (*k, v.as_str())))
    }
}

fn write_entries<'a>(
    out: &mut impl fmt::Write,
    entries: impl Iterator<Item = (&'a str, &'a str)>,
) -> fmt::Result {
    for (i, (name, value)) in entries.enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        string(out, name)?;
        out.write_char(':')?;
        out.write_str(value)?;
    }
    Ok(())
}

/// What tracing-subscriber's span visitor records: `Debug` fields named
/// `log.*` are skipped and a raw identifier's `r#` is dropped; bytes become an
/// array of numbers.
impl Visit for SpanFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put_with(field, |w| float(w, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put_with(field, |w| write!(w, "{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put_with(field, |w| write!(w, "{value}"));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put_with(field, |w| w.write_str(if value { "true" } else { "false" }));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put_with(field, |w| string(w, value));
    }
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.put_with(field, |w| {
            w.write_char('[')?;
            for (i, b) in value.iter().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                write!(w, "{b}")?;
            }
            w.write_char(']')
        });
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        let mut text = String::new();
        if debug_string(&mut text, value).is_ok() {
            self.put(name.strip_prefix("r#").unwrap_or(name), text);
        }
    }
}

/// A JSON number as serde_json writes it (shortest round trip, `1.0` not
/// `1`, `1e+21`), by serde_json's own formatter into a stack buffer;
/// not-a-number and infinities are `null`.
fn float(w: &mut impl fmt::Write, value: f64) -> fmt::Result {
    use serde_json::ser::Formatter as _;
    if !value.is_finite() {
        return w.write_str("null");
    }
    let mut buf = [0u8; 32];
    let mut rest = &mut buf[..];
    serde_json::ser::CompactFormatter
        .write_f64(&mut rest, value)
        .map_err(|_| fmt::Error)?;
    let len = 32 - rest.len();
    w.write_str(std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?)
}

/// `value`'s `Debug` text as a JSON string, escaped as it is formatted.
fn debug_string(w: &mut impl fmt::Write, value: &dyn fmt::Debug) -> fmt::Result {
    w.write_char('"')?;
    write!(Escaping(w), "{value:?}")?;
    w.write_char('"')
}

/// A JSON string.
fn string(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    escape(w, s)?;
    w.write_char('"')
}

/// Writes through to `W`, escaping for the inside of a JSON string.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s)
    }
}

/// serde_json's escaping: `"` and `\`, the short forms `\b \t \n \f \r`, and
/// `\u00XX` (lower-case hex) for the other control characters.
fn escape(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every byte matched above is ASCII, so `i` is a char boundary.
        w.write_str(&s[start..i])?;
        if short.is_empty() {
            w.write_str("\\u00")?;
            w.write_char(char::from(HEX[usize::from(b >> 4)]))?;
            w.write_char(char::from(HEX[usize::from(b & 0xf)]))?;
        } else {
            w.write_str(short)?;
        }
        start = i + 1;
    }
    w.write_str(&s[start..])
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    impl Buf {
        /// The lines, each without its timestamp (the two formatters read
        /// the clock a few microseconds apart).
        fn lines(&self) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).expect(l);
                    let ts = v["timestamp"].as_str().expect(l);
                    assert!(ts.ends_with('Z') && ts.len() == 27, "{ts}");
                    l.replacen(ts, "T", 1)
                })
                .collect()
        }
    }

    #[derive(Debug)]
    struct Odd;
    impl fmt::Display for Odd {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("quote \" backslash \\ nl \n tab \t nul \0 bell \x07 del \x7f é 😀")
        }
    }

    #[test]
    fn lines_match_tracing_subscribers_json_byte_for_byte() {
        let (ours, theirs) = (Buf::default(), Buf::default());
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(ours.clone())
                    .event_format(JsonLine)
                    .fmt_fields(JsonSpanFields),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(theirs.clone())
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(n = 1, "no span");
            let span = tracing::info_span!("message", message_id = %"m-1");
            let _in = span.enter();
            let latency = "user-management=1.5 logging=2.0";
            tracing::info!(
                message_id = %"m-1",
                outcome = "acked",
                reason = None::<&str>,
                latency_ms = latency,
                total_ms = 3.0,
                big = 1e21,
                tiny = 0.000_012_5,
                nan = f64::NAN,
                neg = -7_i64,
                max = u64::MAX,
                wide = 1_u128 << 100,
                redelivered = false,
                odd = %Odd,
                dbg = ?Odd,
                "message settled"
            );
            tracing::warn!(error = %"HTTP 503", "API attempt failed: {}", Odd);
            let empty = tracing::info_span!("empty");
            empty.in_scope(|| tracing::error!("inside an empty span"));
            let later = tracing::info_span!(
                "POST",
                z.last = 1,
                a.first = "x",
                status = tracing::field::Empty,
                r#type = ?"raw",
                bytes = &b"\x01\x02"[..],
            );
            later.record("status", 503);
            later.record("z.last", 2);
            later.in_scope(|| tracing::info!("recorded later"));
        });
        let (ours, theirs) = (ours.lines(), theirs.lines());
        assert_eq!(ours.len(), 5);
        for (o, t) in ours.iter().zip(&theirs) {
            assert_eq!(o, t);
        }
        assert_eq!(ours.len(), theirs.len());
    }

    #[test]
    fn escaping_matches_serde_json() {
        let all: String = (0u8..0x80)
            .map(char::from)
            .chain(['é', '\u{2028}'])
            .collect();
        let mut ours = String::new();
        string(&mut ours, &all).unwrap();
        assert_eq!(ours, serde_json::to_string(&all).unwrap());
        for v in [0.0, -0.0, 1.0, 24.6, 1e21, 1e-7, f64::MAX, f64::INFINITY] {
            let mut ours = String::new();
            float(&mut ours, v).unwrap();
            assert_eq!(ours, serde_json::json!(v).to_string(), "{v}");
        }
    }
}
/// What a line costs, ours against tracing-subscriber's, into a sink: a
/// measurement, not a check (it asserts nothing).
/// `cargo test --release --lib json_line_cost -- --ignored --nocapture`
#[cfg(test)]
mod cost {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    const LINES: u32 = 200_000;

    /// The worker's per-message span and line, `LINES` times.
    fn per_line(sub: impl Subscriber + Send + Sync + 'static) -> std::time::Duration {
        tracing::subscriber::with_default(sub, || {
            let id = "28a871c8-9624-4814-99e2-4360e3ada72c";
            let started = std::time::Instant::now();
            for i in 0..LINES {
                let span = tracing::info_span!("message", message_id = %id);
                let _in = span.enter();
                tracing::info!(
                    message_id = %id,
                    outcome = "acked",
                    reason = None::<&str>,
                    latency_ms = "user-management=24.3 logging=24.3",
                    total_ms = 24.6 + f64::from(i),
                    redelivered = false,
                    "message settled"
                );
            }
            started.elapsed() / LINES
        })
    }

    #[test]
    #[ignore = "a measurement; run it with --release --ignored --nocapture"]
    fn json_line_cost() {
        let fmt = || tracing_subscriber::fmt::layer().with_writer(std::io::sink);
        for _ in 0..3 {
            let ours = per_line(
                tracing_subscriber::registry()
                    .with(fmt().event_format(JsonLine).fmt_fields(JsonSpanFields)),
            );
            let theirs = per_line(
                tracing_subscriber::registry().with(
                    fmt()
                        .json()
                        .flatten_event(true)
                        .with_current_span(true)
                        .with_span_list(false),
                ),
            );
            eprintln!("span + line: ours {ours:?}, tracing-subscriber's {theirs:?}");
        }
    }
}
