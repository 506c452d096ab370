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
