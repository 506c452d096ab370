//! `/metrics`, `/healthz` and `/readyz` after a known mix of outcomes.

use std::time::Duration;

use lapin::BasicProperties;

use crate::helpers::*;

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l[series.len()..].trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_a_known_mix_of_outcomes() {
    let broker = Broker::new("metrics").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    // Message 1 and 2 succeed; message 3 fails at logging (400); 4 is not JSON.
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;
    assert_eq!(http_get(worker.ops, "/readyz").await.0, 200);
    assert_eq!(http_get(worker.ops, "/healthz").await.0, 200);

    broker
        .publish(b"{\"n\":1}", BasicProperties::default())
        .await;
    broker
        .publish(b"{\"n\":2}", BasicProperties::default())
        .await;
    worker.wait_settled(2).await;
    log.then(Reply::status(400));
    broker
        .publish(b"{\"n\":3}", BasicProperties::default())
        .await;
    broker.publish(b"nope", BasicProperties::default()).await;
    worker.wait_settled(4).await;

    let (status, text) = http_get(worker.ops, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        value(&text, "bridge_messages_total{outcome=\"acked\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "bridge_messages_total{outcome=\"dead_lettered\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "bridge_messages_total{outcome=\"held\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "bridge_messages_total{outcome=\"requeued\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "bridge_api_requests_total{result=\"success\",target=\"user-management\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            "bridge_api_requests_total{result=\"success\",target=\"logging\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "bridge_api_requests_total{result=\"permanent_error\",target=\"logging\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "bridge_api_request_duration_seconds_count{target=\"logging\"}"
        ),
        Some(3.0)
    );
    assert_eq!(value(&text, "bridge_messages_in_flight"), Some(0.0));
    assert_eq!(value(&text, "bridge_broker_connected"), Some(1.0));
    assert!(text.contains("# TYPE bridge_api_request_duration_seconds histogram"));

    wait_until(
        "the DLQ depth gauge shows 2",
        Duration::from_secs(15),
        || async {
            let (_, text) = http_get(worker.ops, "/metrics").await;
            value(&text, "bridge_dead_letter_queue_depth") == Some(2.0)
        },
    )
    .await;
    worker.stop().await;
}

/// `bridge_dead_letters_total` says why messages are dead-lettered: one count
/// per failed target, `target="none"` for a body that is not JSON.
#[tokio::test]
async fn dead_letters_are_counted_per_reason_and_failed_target() {
    let broker = Broker::new("deadletters").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    // "a" fails at logging alone; "b" at both; "c" is not JSON.
    log.for_key("a", Reply::status(400));
    user.for_key("b", Reply::status(400));
    log.for_key("b", Reply::status(400));
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;
    for (id, body) in [
        ("a", &b"{\"n\":1}"[..]),
        ("b", b"{\"n\":2}"),
        ("c", b"nope"),
    ] {
        let props = BasicProperties::default().with_message_id(id.into());
        broker.publish(body, props).await;
    }
    worker.wait_settled(3).await;
    assert_eq!(
        worker.count(fanout_bridge::metrics::Outcome::DeadLettered),
        3
    );

    let (_, text) = http_get(worker.ops, "/metrics").await;
    let count = |reason: &str, target: &str| {
        value(
            &text,
            &format!("bridge_dead_letters_total{{reason=\"{reason}\",target=\"{target}\"}}"),
        )
    };
    assert_eq!(count("api_failed", "logging"), Some(2.0), "{text}");
    assert_eq!(count("api_failed", "user-management"), Some(1.0), "{text}");
    assert_eq!(count("invalid_payload", "none"), Some(1.0), "{text}");
    assert!(
        text.contains("# TYPE bridge_dead_letters_total counter"),
        "{text}"
    );
    worker.stop().await;
}
