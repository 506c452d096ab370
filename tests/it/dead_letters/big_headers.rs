//! A message with 20 KiB of headers (trace baggage, a big correlation
//! header): RabbitMQ never splits a header frame, so it only passes when the
//! connection uses the broker's frame size (128 KiB), not a small one.
//!
//! lapin's ring buffers start at two frames of that size and grow only when a
//! frame does not fit (patches/lapin): messages far bigger than the buffers,
//! and a header frame bigger than the empty send buffer, must still pass
//! through them, in and out.

use std::time::Duration;

use fanout_bridge::metrics::Outcome;
use lapin::{options::BasicPublishOptions, types::AMQPValue, BasicProperties};

use crate::helpers::*;

/// A message's properties: its id and one `x-baggage` header.
fn with_baggage(id: &str, baggage: &str) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(id.into())
        .with_headers(headers(&[("x-baggage", baggage)]))
}

#[tokio::test]
async fn a_message_with_20_kib_of_headers_is_acked_and_its_dlq_copy_stored() {
    let broker = Broker::new("bigheaders").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;
    let baggage = "b".repeat(20 * 1024);
    let props = |id: &str| with_baggage(id, &baggage);

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

/// 1.5 MiB bodies (12 body frames each, 6 × the ring buffers; the stand-in
/// API, axum, takes up to 2 MiB) with 100 KiB of headers (a header frame near
/// the frame size): every byte reaches the API, and the DLQ copy, published
/// through the worker's own send buffer, is whole.
#[tokio::test]
async fn messages_far_bigger_than_the_buffers_pass_whole_both_ways() {
    let broker = Broker::new("bigbodies").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;
    let baggage = "h".repeat(100 * 1024);
    let body = |n: u8| {
        let filler: String = (0..3 * 512 * 1024)
            .map(|i| (b'a' + ((i + n as usize) % 26) as u8) as char)
            .collect();
        format!("{{\"n\":{n},\"filler\":\"{filler}\"}}").into_bytes()
    };
    let props = |id: &str| with_baggage(id, &baggage);

    for n in 1..=3 {
        broker.publish(&body(n), props(&format!("huge-{n}"))).await;
    }
    worker.wait_settled(3).await;
    assert_eq!(worker.count(Outcome::Acked), 3);
    let mut seen: Vec<_> = user.received().into_iter().map(|r| r.body).collect();
    seen.sort();
    assert_eq!(
        seen,
        (1..=3)
            .map(|n| body(n).into())
            .collect::<Vec<bytes::Bytes>>()
    );

    log.always(Reply::status(422));
    broker.publish(&body(4), props("huge-4")).await;
    worker.wait_settled(4).await;
    assert_eq!(worker.count(Outcome::DeadLettered), 1);
    worker.stop().await;

    let dead = broker.drain(&broker.dlq).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].data, body(4));
    assert_eq!(
        header_text(&dead[0], "x-baggage").map(|b| b.len()),
        Some(baggage.len())
    );
}

/// A header frame bigger than the whole empty send buffer (300 KiB of headers
/// against 256 KiB) goes out whole, and the broker judges it: RabbitMQ closes
/// the connection with `frame_too_large` (over its frame_max), exactly as with
/// lapin's former 4 MiB buffers. Before the patch's exact rollback, the
/// frame's partial write filled the empty buffer, the rollback missed it, and
/// lapin sent the cut frame (`invalid_frame_end_marker`).
#[tokio::test]
async fn a_header_frame_bigger_than_the_send_buffer_goes_out_whole() {
    let broker = Broker::new("hugeframe").await;
    let baggage = "x".repeat(300 * 1024);
    let publish = async {
        broker
            .channel
            .basic_publish(
                "".into(),
                broker.queue.as_str().into(),
                BasicPublishOptions::default(),
                b"{}",
                BasicProperties::default().with_headers(headers(&[("x-baggage", &baggage)])),
            )
            .await?
            .await
    };
    let outcome = tokio::time::timeout(Duration::from_secs(20), publish)
        .await
        .expect("the publish of an oversized header frame hung");
    let error = format!(
        "{:?}",
        outcome.expect_err("RabbitMQ accepted a frame over its frame_max")
    );
    assert!(error.contains("frame_too_large"), "{error}");
}

/// One header of 130,900 bytes: the message fits RabbitMQ's 128 KiB frame on
/// its way in, its copy with the `x-bridge-*` headers added would not.
const NEARLY_A_FRAME: usize = 130_900;
const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until `done`, failing as soon as the worker's broker connection
/// drops (an oversized header frame makes RabbitMQ close it).
async fn wait_connected(what: &str, watch: &ConnectionWatch, done: impl Fn() -> bool) {
    wait_until(what, DEADLINE, || {
        assert!(
            !watch.dropped(),
            "the worker lost its broker connection (bridge_broker_connected left 1)"
        );
        let done = done();
        async move { done }
    })
    .await;
}

#[tokio::test]
async fn a_dlq_copy_too_big_for_the_frame_leaves_the_largest_header_out() {
    let broker = Broker::new("fitdlq").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    log.always(Reply::status(422));
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;
    let watch = ConnectionWatch::start(&worker.metrics);
    let baggage = "b".repeat(NEARLY_A_FRAME);
    let body = b"{\"n\":1, \"kept\": \"byte for byte\"}\n";
    let mut props = with_baggage("fit-1", &baggage);
    let mut table = props.headers().clone().unwrap();
    table.insert("tenant".into(), AMQPValue::LongString("acme".into()));
    props = props.with_headers(table);
    broker.publish(body, props).await;
    // The message behind it must not wait for a reconnect.
    broker
        .publish(b"{\"n\":2}", with_baggage("fit-2", "small"))
        .await;
    wait_connected("both dead-lettered", &watch, || {
        worker.count(Outcome::DeadLettered) == 2
    })
    .await;
    assert_eq!(worker.count(Outcome::Requeued), 0);
    assert!(!watch.dropped(), "the worker kept its broker connection");
    worker.stop().await;

    let dead = broker.drain(&broker.dlq).await;
    assert_eq!(dead.len(), 2);
    let d = dead
        .iter()
        .find(|d| d.properties.message_id().as_ref().map(|m| m.as_str()) == Some("fit-1"))
        .expect("the big one's copy, message_id kept");
    assert_eq!(&d.data[..], &body[..], "the body, byte for byte");
    assert_eq!(header_text(d, "x-baggage"), None);
    assert_eq!(
        header_text(d, "x-bridge-headers-dropped").as_deref(),
        Some("x-baggage")
    );
    assert_eq!(header_text(d, "tenant").as_deref(), Some("acme"));
    assert_eq!(
        header_text(d, "x-bridge-reason").as_deref(),
        Some("api_failed")
    );
    let other = dead
        .iter()
        .find(|d| d.properties.message_id().as_ref().map(|m| m.as_str()) == Some("fit-2"))
        .unwrap();
    assert_eq!(header_text(other, "x-baggage").as_deref(), Some("small"));
    assert_eq!(header_text(other, "x-bridge-headers-dropped"), None);
    assert_eq!(broker.depth(&broker.queue).await, 0);
}

#[tokio::test]
async fn a_hold_copy_too_big_for_the_frame_leaves_the_largest_header_out() {
    let broker = Broker::new("fithold").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    // Logging is down for the big message's two attempts.
    log.then(Reply::status(503)).then(Reply::status(503));
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_OUTAGE_POLICY".into(), "hold".into()));
    settings.push(("BRIDGE_OUTAGE_PAUSE_MS".into(), "300".into()));
    settings.push(("BRIDGE_MAX_ATTEMPTS".into(), "2".into()));
    let worker = Worker::start(&broker, settings).await;
    let watch = ConnectionWatch::start(&worker.metrics);
    // The hold copy adds only x-bridge-done-targets (42 bytes): 131,000
    // bytes of baggage leave the message 21 bytes under the frame on its way
    // in and its hold copy 21 over.
    let baggage = "h".repeat(131_000);
    broker
        .publish(b"{\"held\":1}", with_baggage("fit-held", &baggage))
        .await;
    wait_connected("held", &watch, || worker.count(Outcome::Held) == 1).await;
    broker
        .publish(b"{\"n\":2}", with_baggage("fit-next", "small"))
        .await;
    wait_connected("both acked after the pause", &watch, || {
        worker.count(Outcome::Acked) == 2
    })
    .await;
    assert_eq!(worker.count(Outcome::Requeued), 0);
    worker.stop().await;

    assert_eq!(
        user.per_key().get("fit-held"),
        Some(&1),
        "the held copy kept its done target"
    );
    assert_eq!(log.per_key().get("fit-held"), Some(&3));
    assert_eq!(broker.depth(&broker.dlq).await, 0);
    assert_eq!(broker.depth(&broker.queue).await, 0);
}
