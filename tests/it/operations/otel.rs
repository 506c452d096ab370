//! OpenTelemetry: the worker runs as a process (the tracer provider is
//! process-wide) and exports to an OTLP/HTTP receiver started here, which
//! decodes the protobuf and records every span; over HTTPS, the receiver sits
//! behind a TLS terminator with a certificate of a private CA.
//!
//! `.ci/run` also runs these against the binary built with the release
//! feature set (`BRIDGE_TEST_BIN`): the HTTPS cases are the ones that broke
//! there while passing under `cargo test`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, routing::post, Router};
use lapin::BasicProperties;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value,
};
use prost::Message;
use tokio::net::TcpListener;

use crate::{
    helpers::*,
    network::tls::{Pki, Terminator},
};

/// One span as the receiver got it; ids in lowercase hex.
#[derive(Clone, Debug)]
struct ReceivedSpan {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
    service_name: String,
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

async fn receive(State(c): State<Collector>, body: Bytes) -> &'static [u8] {
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut spans = c.spans.lock().unwrap();
    for rs in request.resource_spans {
        let service_name = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                spans.push(ReceivedSpan {
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    attributes: s
                        .attributes
                        .iter()
                        .map(|kv| {
                            (
                                kv.key.clone(),
                                text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                            )
                        })
                        .collect(),
                    service_name: service_name.clone(),
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse.
    b""
}

impl Collector {
    async fn start() -> (Collector, SocketAddr) {
        let c = Collector::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(c.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (c, addr)
    }

    fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// `traceparent` → (trace id, span id).
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn spans_per_message_and_attempt_reach_the_collector_and_the_apis() {
    let (collector, addr) = Collector::start().await;
    let broker = Broker::new("otel").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    // The logging API fails once: two attempts, two attempt spans.
    log.then(Reply::status(503));
    let mut settings = fast_settings(&user, &log);
    settings.extend([
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://{addr}"),
        ),
        ("OTEL_SERVICE_NAME".into(), "bridge-under-test".into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ]);
    let worker = Process::start(&broker, settings).await;

    let props = BasicProperties::default()
        .with_message_id("otel-1".into())
        .with_headers(headers(&[(
            "traceparent",
            &format!("00-{TRACE_ID}-{PARENT_ID}-01"),
        )]));
    broker.publish(br#"{"traced":true}"#, props).await;
    // The logging API's one 503 must go to otel-1: the second message is
    // published once the first is settled.
    wait_until("otel-1 acked", Duration::from_secs(20), || async {
        worker
            .metric("bridge_messages_total{outcome=\"acked\"}")
            .await
            == 1.0
    })
    .await;
    // A message without traceparent starts a trace of its own.
    broker
        .publish(
            br#"{"traced":false}"#,
            BasicProperties::default().with_message_id("otel-2".into()),
        )
        .await;
    wait_until("both messages acked", Duration::from_secs(20), || async {
        worker
            .metric("bridge_messages_total{outcome=\"acked\"}")
            .await
            == 2.0
    })
    .await;
    // 2 message spans + (1 + 2) attempts for otel-1 + 2 attempts for otel-2.
    wait_until("the spans are exported", Duration::from_secs(20), || {
        let n = collector.spans().len();
        async move { n >= 7 }
    })
    .await;
    let spans = collector.spans();
    let log_text = worker.log_text();

    // The message span: a child of the message's traceparent.
    let message = spans
        .iter()
        .find(|s| s.name == "message" && s.trace_id == TRACE_ID)
        .unwrap_or_else(|| panic!("no message span in trace {TRACE_ID}: {spans:#?}\n{log_text}"));
    assert_eq!(message.parent_span_id, PARENT_ID);
    assert_eq!(message.service_name, "bridge-under-test");
    assert_eq!(message.attributes["messaging.system"], "rabbitmq");
    assert_eq!(message.attributes["message_id"], "otel-1");

    // Every request an API got carries the span id of one attempt span, a
    // child of the message span, with the HTTP attributes.
    let requests: Vec<(String, Received)> = user
        .received()
        .into_iter()
        .map(|r| ("user".to_owned(), r))
        .chain(log.received().into_iter().map(|r| ("log".to_owned(), r)))
        .filter(|(_, r)| r.header("idempotency-key").as_deref() == Some("otel-1"))
        .collect();
    assert_eq!(requests.len(), 3, "one user call, two logging attempts");
    for (api, request) in &requests {
        let traceparent = request.header("traceparent").expect("traceparent sent");
        let (trace, span_id) = ids(&traceparent);
        assert_eq!(
            trace, TRACE_ID,
            "the API's request stays in the message's trace"
        );
        assert_ne!(span_id, PARENT_ID, "not passed through verbatim");
        let attempt = spans
            .iter()
            .find(|s| s.span_id == span_id)
            .unwrap_or_else(|| panic!("{api}: no exported span {span_id}: {spans:#?}"));
        assert_eq!(attempt.trace_id, TRACE_ID);
        assert_eq!(
            attempt.parent_span_id, message.span_id,
            "{api}: child of the message span"
        );
        assert_eq!(attempt.name, "POST");
        assert_eq!(attempt.attributes["http.request.method"], "POST");
        assert_eq!(attempt.attributes["server.address"], "127.0.0.1");
        let url = &attempt.attributes["url.full"];
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with("/api"),
            "{url}"
        );
        assert_eq!(
            attempt.attributes["http.response.status_code"],
            request.status.to_string()
        );
    }
    let statuses: Vec<u16> = requests.iter().map(|(_, r)| r.status).collect();
    assert!(
        statuses.contains(&503) && statuses.contains(&200),
        "{statuses:?}"
    );

    // Without a traceparent: a root message span, its attempts under it.
    let root = spans
        .iter()
        .find(|s| {
            s.name == "message"
                && s.attributes.get("message_id").map(String::as_str) == Some("otel-2")
        })
        .expect("message span of otel-2");
    assert_eq!(root.parent_span_id, "", "a root span");
    let under_root = spans
        .iter()
        .filter(|s| s.parent_span_id == root.span_id && s.name == "POST")
        .count();
    assert_eq!(under_root, 2);
    assert_eq!(worker.metric("bridge_otel_spans_dropped_total").await, 0.0);
}

#[tokio::test]
async fn a_collector_that_is_down_costs_spans_not_messages() {
    let broker = Broker::new("otel.down").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let mut settings = fast_settings(&user, &log);
    settings.extend([
        // Nothing listens here.
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(),
            format!("http://127.0.0.1:{}/v1/traces", free_port()),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ]);
    let worker = Process::start(&broker, settings).await;
    let ids = broker.publish_numbered("down", 0..10).await;
    wait_delivered(&user, &log, &ids, Duration::from_secs(20)).await;
    wait_until("all acked", Duration::from_secs(20), || async {
        worker
            .metric("bridge_messages_total{outcome=\"acked\"}")
            .await
            == 10.0
    })
    .await;
    wait_until(
        "the spans the collector did not take are counted",
        Duration::from_secs(20),
        || async { worker.metric("bridge_otel_spans_dropped_total").await >= 30.0 },
    )
    .await;
    assert!(
        worker.log_text().contains("OpenTelemetry export failed"),
        "{}",
        worker.log_text()
    );
    // The message's own traceparent is not needed for the API to get one.
    let r = &user.received()[0];
    assert!(r.header("traceparent").is_some());
}

#[tokio::test]
async fn a_bad_otlp_endpoint_is_exit_2_naming_it() {
    let vars = [
        (
            "BRIDGE_USER_API_URL".to_owned(),
            "http://127.0.0.1:1/u".to_owned(),
        ),
        (
            "BRIDGE_LOG_API_URL".to_owned(),
            "http://127.0.0.1:1/l".to_owned(),
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            "not a url".to_owned(),
        ),
    ];
    let (code, _, err) = run_bin(&["run"], &vars, b"").await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{err}");
    assert!(!err.contains("not a url"), "the value is not echoed: {err}");

    // gRPC is not spoken: refused rather than silently sent to the wrong port.
    let mut vars = vars.to_vec();
    vars[2].1 = "http://127.0.0.1:4317".into();
    vars.push(("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()));
    let (code, _, err) = run_bin(&["run"], &vars, b"").await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");

    // A certificate file that is not there stops the start, as the other TLS
    // files do, rather than every export failing later.
    vars.pop();
    vars[2].1 = "https://127.0.0.1:4318".into();
    vars.push((
        "OTEL_EXPORTER_OTLP_CERTIFICATE".into(),
        "/nonexistent/otlp-ca.pem".into(),
    ));
    let (code, _, err) = run_bin(&["run"], &vars, b"").await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") && err.contains("cannot read"),
        "{err}"
    );
}

/// A worker exporting to `https://` the collector behind a terminator with
/// `pki`'s server certificate; `vars` say which CA to trust. One message goes
/// through; returns once it is acked.
async fn over_https(
    name: &str,
    pki: &Pki,
    vars: Vec<(String, String)>,
) -> (Collector, Terminator, Process) {
    let (collector, addr) = Collector::start().await;
    let terminator = Terminator::start(addr, pki.server_config(false)).await;
    let broker = Broker::new(name).await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let mut settings = fast_settings(&user, &log);
    settings.extend(vars);
    settings.extend([
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("https://127.0.0.1:{}", terminator.port()),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ]);
    let worker = Process::start(&broker, settings).await;
    broker
        .publish(
            br#"{"over":"https"}"#,
            BasicProperties::default().with_message_id(format!("{name}-1").into()),
        )
        .await;
    wait_until("the message is acked", Duration::from_secs(20), || async {
        worker
            .metric("bridge_messages_total{outcome=\"acked\"}")
            .await
            == 1.0
    })
    .await;
    (collector, terminator, worker)
}

/// The message span and its two attempts reach the collector, none dropped.
async fn assert_all_spans_arrive(collector: &Collector, worker: &Process) {
    // Polled here rather than with wait_until: a failure shows the worker's
    // log, which says why the exports failed.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while collector.spans().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "spans did not arrive over HTTPS: {:?}\n{}",
            collector.spans(),
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(worker.metric("bridge_otel_spans_dropped_total").await, 0.0);
}

#[tokio::test]
async fn an_https_collector_of_a_private_ca_is_trusted_through_bridge_ca_file() {
    let pki = Pki::new("otel-ca-file");
    let (collector, _terminator, worker) =
        over_https("otel.https.ca", &pki, vec![pki.ca_var()]).await;
    assert_all_spans_arrive(&collector, &worker).await;
}

#[tokio::test]
async fn an_https_collector_is_trusted_through_otel_exporter_otlp_certificate() {
    let pki = Pki::new("otel-certificate");
    let vars = vec![("OTEL_EXPORTER_OTLP_CERTIFICATE".into(), pki.path("ca.pem"))];
    let (collector, _terminator, worker) = over_https("otel.https.cert", &pki, vars).await;
    assert_all_spans_arrive(&collector, &worker).await;
}

#[tokio::test]
async fn otel_exporter_otlp_certificate_replaces_the_other_roots() {
    // BRIDGE_CA_FILE would trust the collector; the OTLP certificate, when
    // set, is the only trust anchor of the exporter, and it is another CA.
    let (pki, other) = (Pki::new("otel-right"), Pki::new("otel-other"));
    let vars = vec![
        pki.ca_var(),
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE".into(),
            other.path("ca.pem"),
        ),
    ];
    let (collector, terminator, worker) = over_https("otel.https.only", &pki, vars).await;
    wait_until(
        "the spans of the refused handshakes are counted as dropped",
        Duration::from_secs(20),
        || async { worker.metric("bridge_otel_spans_dropped_total").await >= 3.0 },
    )
    .await;
    assert!(terminator.failures() >= 1, "no handshake was refused");
    assert!(collector.spans().is_empty(), "{:?}", collector.spans());
}

/// Contract revision 3: with OpenTelemetry on, the log lines written while a
/// message is handled carry its trace and span ids, so a line leads to its
/// trace. A message whose logging call fails for good is dead-lettered: its
/// warn line (the failed attempt) and its info line (the outcome) carry the
/// ids of the exported message span, in JSON and in text.
#[tokio::test]
async fn log_lines_of_a_dead_lettered_message_carry_its_trace_and_span_ids() {
    for format in ["json", "text"] {
        let (collector, addr) = Collector::start().await;
        let broker = Broker::new(&format!("otel.logs.{format}")).await;
        let (user, log) = (FakeApi::start().await, FakeApi::start().await);
        log.then(Reply::status(400));
        let mut settings = fast_settings(&user, &log);
        settings.extend([
            ("BRIDGE_LOG_FORMAT".into(), format.into()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("http://{addr}"),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ]);
        let worker = Process::start(&broker, settings).await;
        let id = format!("logs-{format}");
        broker
            .publish(
                br#"{"doomed":true}"#,
                BasicProperties::default().with_message_id(id.clone().into()),
            )
            .await;
        broker
            .wait_depth(&broker.dlq, 1, Duration::from_secs(20))
            .await;
        wait_until(
            "the message span is exported",
            Duration::from_secs(20),
            || {
                let found = collector.spans().iter().any(|s| s.name == "message");
                async move { found }
            },
        )
        .await;
        let spans = collector.spans();
        let message = spans.iter().find(|s| s.name == "message").unwrap();
        let text = worker.log_text();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(&id)).collect();
        let failed = lines
            .iter()
            .find(|l| l.contains("API attempt failed"))
            .unwrap_or_else(|| panic!("no warn line for {id}:\n{text}"));
        let settled = lines
            .iter()
            .find(|l| l.contains("message settled"))
            .unwrap_or_else(|| panic!("no outcome line for {id}:\n{text}"));
        for line in [failed, settled] {
            let (trace_id, span_id) = if format == "json" {
                let v: serde_json::Value = serde_json::from_str(line).expect(line);
                (
                    v["trace_id"].as_str().unwrap_or_default().to_owned(),
                    v["span_id"].as_str().unwrap_or_default().to_owned(),
                )
            } else {
                let field = |name: &str| {
                    line.split(' ')
                        .find_map(|w| w.strip_prefix(&format!("{name}=")))
                        .unwrap_or_default()
                        .to_owned()
                };
                (field("trace_id"), field("span_id"))
            };
            assert_eq!(trace_id, message.trace_id, "{format}: {line}");
            assert_eq!(span_id, message.span_id, "{format}: {line}");
        }
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(settled).unwrap();
            assert_eq!(v["level"], "INFO");
            assert_eq!(v["outcome"], "dead_lettered");
            assert_eq!(v["message_id"], id.as_str());
            assert_eq!(v["span"]["message_id"], id.as_str());
            let v: serde_json::Value = serde_json::from_str(failed).unwrap();
            assert_eq!(v["level"], "WARN");
        }
        // Lines outside a message (start-up) carry none.
        let first = text.lines().next().unwrap_or_default();
        assert!(!first.contains("trace_id"), "{first}");
    }
}
