//! Both APIs accept: the message is acked; the requests are what the contract
//! prescribes; the two calls overlap.

use std::time::Duration;

use fanout_bridge::metrics::Outcome;
use lapin::BasicProperties;

use crate::helpers::*;

#[tokio::test]
async fn both_accept_then_ack_with_contract_requests() {
    let broker = Broker::new("fanout").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_USER_API_TOKEN".into(), "user-secret".into()));
    settings.push(("BRIDGE_LOG_API_TOKEN".into(), "log-secret".into()));
    let worker = Worker::start(&broker, settings).await;

    // Key order, a number beyond f64 and 1e400 must survive byte for byte.
    let body =
        br#"  {"z":1,"email":"ada@example.com","big":123456789012345678901234567890,"huge":1e400}
"#;
    let props = BasicProperties::default()
        .with_message_id("msg-1".into())
        .with_correlation_id("corr-1".into())
        .with_headers(headers(&[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("tracestate", "vendor=1"),
        ]));
    broker.publish(body, props).await;
    worker.wait_settled(1).await;

    assert_eq!(worker.count(Outcome::Acked), 1);
    let u = &user.received()[0];
    assert_eq!(
        &u.body[..],
        &body[..],
        "user-management gets the body byte for byte"
    );
    assert_eq!(
        u.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(u.header("idempotency-key").as_deref(), Some("msg-1"));
    assert_eq!(u.header("x-correlation-id").as_deref(), Some("corr-1"));
    assert_eq!(
        u.header("traceparent").as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(u.header("tracestate").as_deref(), Some("vendor=1"));
    assert_eq!(
        u.header("authorization").as_deref(),
        Some("Bearer user-secret")
    );

    let l = &log.received()[0];
    assert_eq!(
        std::str::from_utf8(&l.body).unwrap(),
        r#"{"event":"user.registered","data":{"z":1,"email":"ada@example.com","big":123456789012345678901234567890,"huge":1e400},"message_id":"msg-1"}"#
    );
    assert_eq!(l.header("idempotency-key").as_deref(), Some("msg-1"));
    assert_eq!(
        l.header("authorization").as_deref(),
        Some("Bearer log-secret")
    );
    assert_eq!(
        l.header("content-type").as_deref(),
        Some("application/json")
    );

    worker.stop().await;
    assert_eq!(broker.depth(&broker.queue).await, 0, "acked, not requeued");
    assert_eq!(broker.depth(&broker.dlq).await, 0);
}

#[tokio::test]
async fn the_two_calls_overlap_in_time() {
    let broker = Broker::new("overlap").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    user.always(Reply::ok().delay(Duration::from_millis(400)));
    log.always(Reply::ok().delay(Duration::from_millis(400)));
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;

    broker
        .publish(b"{\"n\":1}", BasicProperties::default())
        .await;
    worker.wait_settled(1).await;

    let (u, l) = (&user.received()[0], &log.received()[0]);
    // Each call started before the other one was answered.
    assert!(
        u.started < l.answered && l.started < u.answered,
        "calls ran one after the other"
    );
    worker.stop().await;
}

#[tokio::test]
async fn without_message_id_the_key_is_a_stable_body_hash_and_type_is_the_event() {
    let broker = Broker::new("hashkey").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;

    broker
        .publish(
            b"[1,2,3]",
            BasicProperties::default().with_type("user.deleted".into()),
        )
        .await;
    broker.publish(b"[1,2,3]", BasicProperties::default()).await;
    broker
        .publish(b"\"other\"", BasicProperties::default())
        .await;
    worker.wait_settled(3).await;

    // The three are processed concurrently, so arrival order says nothing.
    let mut per_key: Vec<usize> = user.per_key().into_values().collect();
    per_key.sort_unstable();
    assert_eq!(
        per_key,
        [1, 2],
        "same body, same key; another body, another"
    );
    let events: Vec<String> = log
        .received()
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(events.contains(&"user.deleted".to_owned()));
    assert!(events.contains(&"user.registered".to_owned()));
    for r in log.received() {
        assert_eq!(
            r.json()["message_id"].as_str(),
            r.header("idempotency-key").as_deref()
        );
    }
    worker.stop().await;
}

#[tokio::test]
async fn a_slow_message_does_not_hold_back_the_others() {
    let broker = Broker::new("slow").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    // The first request hangs for 3 s; the rest answer at once.
    user.then(Reply::ok().delay(Duration::from_secs(3)));
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;

    for i in 0..10 {
        broker
            .publish(
                format!("{{\"i\":{i}}}").as_bytes(),
                BasicProperties::default(),
            )
            .await;
    }
    wait_until(
        "nine fast messages acked while one is slow",
        Duration::from_secs(2),
        || {
            let acked = worker.count(Outcome::Acked);
            async move { acked >= 9 }
        },
    )
    .await;
    worker.wait_settled(10).await;
    worker.stop().await;
}

#[tokio::test]
async fn quorum_queues_are_declared_and_used() {
    let broker = Broker::new("quorum").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_QUEUE_TYPE".into(), "quorum".into()));
    let worker = Worker::start(&broker, settings).await;

    broker
        .publish(b"{\"q\":1}", BasicProperties::default())
        .await;
    broker
        .publish(b"not json", BasicProperties::default())
        .await;
    worker.wait_settled(2).await;
    worker.stop().await;
    assert_eq!(
        broker.drain(&broker.dlq).await.len(),
        1,
        "one dead-lettered into the quorum DLQ"
    );

    // The queues really are quorum queues: declaring them classic is refused.
    let ch = broker.conn.create_channel().await.unwrap();
    let classic = ch
        .queue_declare(
            broker.queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await;
    assert!(classic.is_err(), "{classic:?}");
}
