//! A message with 20 KiB of headers (trace baggage, a big correlation
//! header): RabbitMQ never splits a header frame, so it only passes when the
//! connection uses the broker's frame size (128 KiB), not a small one.

use fanout_bridge::metrics::Outcome;
use lapin::BasicProperties;

use crate::helpers::*;

#[tokio::test]
async fn a_message_with_20_kib_of_headers_is_acked_and_its_dlq_copy_stored() {
    let broker = Broker::new("bigheaders").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;
    let baggage = "b".repeat(20 * 1024);
    let props = |id: &str| {
        BasicProperties::default()
            .with_message_id(id.into())
            .with_headers(headers(&[("x-baggage", &baggage)]))
    };

    broker.publish(b"{\"n\":1}", props("big-1")).await;
    worker.wait_settled(1).await;
    assert_eq!(worker.count(Outcome::Acked), 1);
    assert_eq!(user.count(), 1);

    // The DLQ copy carries the same 20 KiB plus the x-bridge-* headers.
    log.always(Reply::status(422));
    broker.publish(b"{\"n\":2}", props("big-2")).await;
    worker.wait_settled(2).await;
    assert_eq!(worker.count(Outcome::DeadLettered), 1);
    worker.stop().await;

    let dead = broker.drain(&broker.dlq).await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(
        header_text(d, "x-baggage").as_deref(),
        Some(baggage.as_str())
    );
    assert_eq!(
        header_text(d, "x-bridge-reason").as_deref(),
        Some("api_failed")
    );
    assert_eq!(
        header_text(d, "x-bridge-failed-targets").as_deref(),
        Some("logging")
    );
    assert_eq!(broker.depth(&broker.queue).await, 0);
}
