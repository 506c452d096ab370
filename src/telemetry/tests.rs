use std::sync::{Arc, Mutex};

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt as _};

use super::*;

#[test]
fn colour_only_at_a_terminal_without_no_color() {
    assert!(colour(true, None));
    assert!(colour(true, Some("".into())));
    assert!(!colour(true, Some("1".into())));
    assert!(!colour(false, None));
}

/// Lines written into memory.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

/// (trace id, span id) of a span, as the exporter sends them.
fn otel_ids(span: &tracing::Span) -> (String, String) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.trace_id().to_string(), sc.span_id().to_string())
}

/// Runs `f` with our lines in `format` into a buffer, with an OpenTelemetry
/// layer (no exporter) when `otel`.
fn capture(format: LogFormat, otel: bool, f: impl FnOnce()) -> Vec<String> {
    let buffer = Buffer::default();
    let mut layers = vec![lines(format, buffer.clone(), false)];
    if otel {
        let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .build()
            .tracer("test");
        layers.push(Box::new(tracing_opentelemetry::layer().with_tracer(tracer)));
    }
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layers), f);
    buffer.lines()
}

/// The worker's per-message span, its outcome line, an attempt span inside.
fn a_message() -> (tracing::Span, tracing::Span) {
    tracing::info!(n = 1, "outside any span");
    let message = tracing::info_span!("message", message_id = %"m-1");
    let attempt = message.in_scope(|| {
        let attempt = tracing::info_span!("POST", bridge.target = "logging");
        attempt.in_scope(|| tracing::warn!(attempt = 1, "API attempt failed"));
        tracing::info!(
            message_id = %"m-1",
            outcome = "dead_lettered",
            latency_ms = "user-management=1.5 logging=2.0",
            total_ms = 3.5,
            redelivered = false,
            "message settled"
        );
        attempt
    });
    (message, attempt)
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn json_lines_keep_tracing_subscribers_layout() {
    let lines = capture(LogFormat::Json, false, || {
        a_message();
    });
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let outside = json(&lines[0]);
    assert_eq!(outside["level"], "INFO");
    assert_eq!(outside["message"], "outside any span");
    assert_eq!(outside["n"], 1);
    assert_eq!(outside["target"], module_path!());
    assert!(outside["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(outside.get("span").is_none() && outside.get("spans").is_none());

    let attempt = json(&lines[1]);
    assert_eq!(attempt["level"], "WARN");
    assert_eq!(attempt["span"]["name"], "POST");
    assert_eq!(attempt["span"]["bridge.target"], "logging");

    let settled = json(&lines[2]);
    assert_eq!(settled["message"], "message settled");
    assert_eq!(settled["outcome"], "dead_lettered");
    assert_eq!(settled["latency_ms"], "user-management=1.5 logging=2.0");
    assert_eq!(settled["total_ms"], 3.5);
    assert_eq!(settled["redelivered"], false);
    assert_eq!(
        settled["span"],
        serde_json::json!({"name": "message", "message_id": "m-1"})
    );
    // Off: no ids.
    for line in &lines {
        assert!(!line.contains("trace_id") && !line.contains("span_id"));
    }
}

#[test]
fn json_lines_in_an_exported_span_carry_its_ids() {
    let mut spans = None;
    let lines = capture(LogFormat::Json, true, || spans = Some(a_message()));
    let (message, attempt) = spans.unwrap();
    let (trace, message_id) = otel_ids(&message);
    let (attempt_trace, attempt_id) = otel_ids(&attempt);
    assert_eq!(trace, attempt_trace);
    assert_eq!(trace.len(), 32);
    assert_eq!(message_id.len(), 16);
    assert_ne!(message_id, attempt_id);

    let outside = json(&lines[0]);
    assert!(outside.get("trace_id").is_none(), "{outside}");
    let failed = json(&lines[1]);
    assert_eq!(failed["trace_id"], trace.as_str());
    assert_eq!(failed["span_id"], attempt_id.as_str(), "the attempt's span");
    let settled = json(&lines[2]);
    assert_eq!(settled["trace_id"], trace.as_str());
    assert_eq!(
        settled["span_id"],
        message_id.as_str(),
        "the message's span"
    );
    assert_eq!(settled["outcome"], "dead_lettered");
}

#[test]
fn text_lines_in_an_exported_span_end_with_its_ids() {
    let mut spans = None;
    let lines = capture(LogFormat::Text, true, || spans = Some(a_message()));
    let (message, attempt) = spans.unwrap();
    let (trace, message_id) = otel_ids(&message);
    let (_, attempt_id) = otel_ids(&attempt);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(!lines[0].contains("trace_id"), "{}", lines[0]);
    assert!(
        lines[1].ends_with(&format!(" trace_id={trace} span_id={attempt_id}")),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("message settled")
            && lines[2].contains("outcome=\"dead_lettered\"")
            && lines[2].ends_with(&format!(" trace_id={trace} span_id={message_id}")),
        "{}",
        lines[2]
    );
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "no colour: {line:?}");
    }
}

#[test]
fn text_lines_without_opentelemetry_are_unchanged() {
    let lines = capture(LogFormat::Text, false, || {
        a_message();
    });
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[2].contains("message{message_id=m-1}"), "{}", lines[2]);
    assert!(lines[2].ends_with("redelivered=false"), "{}", lines[2]);
}

/// What the worker's per-message span and outcome line cost, into a sink: a
/// measurement, not a check (it asserts nothing).
/// `cargo test --release --lib log_line_cost -- --ignored --nocapture`
#[test]
#[ignore = "a measurement; run it with --release --ignored --nocapture"]
fn log_line_cost() {
    const LINES: u32 = 200_000;
    let per_line = |format: LogFormat, otel: bool| {
        let mut layers = vec![lines(format, std::io::sink, false)];
        if otel {
            let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .build()
                .tracer("cost");
            layers.push(Box::new(tracing_opentelemetry::layer().with_tracer(tracer)));
        }
        let sub = tracing_subscriber::registry().with(layers);
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
    };
    for _ in 0..3 {
        eprintln!(
            "span + line: json {:?}, json+otel {:?}, text {:?}, text+otel {:?}",
            per_line(LogFormat::Json, false),
            per_line(LogFormat::Json, true),
            per_line(LogFormat::Text, false),
            per_line(LogFormat::Text, true),
        );
    }
}
