//! The spans of a delivery: the message span (child of the message's
//! `traceparent`) and one span per API attempt, whose context the API
//! receives as `traceparent`.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::Status,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::enabled;

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
pub fn attempt_span(target: &str, url: &url::Url, attempt: u32) -> Span {
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
    use super::*;

    #[test]
    fn off_costs_nothing_and_passes_traceparent_through() {
        assert!(!enabled());
        let url = url::Url::parse("http://u:p@127.0.0.1:1/x").unwrap();
        let span = attempt_span("logging", &url, 1);
        assert!(span.is_disabled());
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("00-a-b-01"));
        inject(&span, &mut headers);
        assert_eq!(headers["traceparent"], "00-a-b-01");
    }
}
