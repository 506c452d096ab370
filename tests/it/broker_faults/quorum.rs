//! Quorum queues and the broker's delivery limit: with BRIDGE_QUEUE_TYPE=quorum
//! a message returned more often than the limit (every worker kill returns
//! it) is dead-lettered by the broker into the DLQ instead of dropped.

use std::time::Duration;

use lapin::{
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties,
};

use crate::{helpers::*, slow_api::SlowApi};

fn quorum_settings(api: &SlowApi) -> Vec<(String, String)> {
    let mut settings = vec![
        ("BRIDGE_USER_API_URL".into(), api.url()),
        ("BRIDGE_LOG_API_URL".into(), api.url()),
    ];
    settings.push(("BRIDGE_QUEUE_TYPE".into(), "quorum".into()));
    settings.push(("BRIDGE_HTTP_TIMEOUT_MS".into(), "120000".into()));
    settings
}

#[tokio::test]
async fn a_message_past_the_delivery_limit_lands_in_the_dlq_instead_of_vanishing() {
    let broker = Broker::new("qlimit").await;
    let _policy = DeliveryLimit::set(&[&broker.queue], 2);
    // The API hangs: the message is in flight whenever the worker dies.
    let api = SlowApi::start(Duration::from_secs(600)).await;
    let mut worker = Process::start(&broker, quorum_settings(&api)).await;
    broker
        .publish(
            b"{\"limit\":true}",
            BasicProperties::default().with_message_id("limit-1".into()),
        )
        .await;
    let mut kills = 0;
    // Arrivals before the current worker started.
    let mut calls = 0;
    loop {
        let landed = || async { broker.depth(&broker.dlq).await == 1 };
        // Either the current worker has the message in flight (kill it once
        // more) or the broker has dead-lettered it.
        wait_until(
            "in flight again or dead-lettered",
            Duration::from_secs(20),
            || async { api.arrived() > calls || landed().await },
        )
        .await;
        if landed().await {
            break;
        }
        worker.child.kill().unwrap();
        worker.child.wait().unwrap();
        kills += 1;
        assert!(kills <= 6, "still not dead-lettered after {kills} kills");
        calls = api.arrived();
        worker = Process::start(&broker, quorum_settings(&api)).await;
    }
    drop(worker);

    assert!(kills >= 2, "dead-lettered after {kills} kills");
    assert_eq!(broker.depth(&broker.queue).await, 0);
    let dead = broker.drain(&broker.dlq).await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.data, b"{\"limit\":true}");
    let headers = d.properties.headers().clone().unwrap_or_default();
    assert!(
        headers.inner().contains_key("x-death"),
        "the broker's dead-lettering adds x-death: {headers:?}"
    );
}

#[tokio::test]
async fn quorum_queues_carry_the_dead_letter_arguments() {
    let broker = Broker::new("qargs").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_QUEUE_TYPE".into(), "quorum".into()));
    let worker = Worker::start(&broker, settings).await;
    worker.stop().await;

    // A declare with exactly these arguments is accepted (the same queue),
    // one without the dead-letter target is refused.
    let long = |s: &str| AMQPValue::LongString(LongString::from(s));
    let mut inbound = FieldTable::default();
    for (k, v) in [
        ("x-queue-type", "quorum"),
        ("x-dead-letter-exchange", ""),
        ("x-dead-letter-routing-key", broker.dlq.as_str()),
        ("x-dead-letter-strategy", "at-least-once"),
        ("x-overflow", "reject-publish"),
    ] {
        inbound.insert(ShortString::from(k), long(v));
    }
    let mut dlq = FieldTable::default();
    dlq.insert(ShortString::from("x-queue-type"), long("quorum"));
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (queue, args, ok) in [
        (&broker.queue, inbound, true),
        (&broker.dlq, dlq.clone(), true),
        (&broker.queue, dlq, false),
    ] {
        let ch = broker.conn.create_channel().await.unwrap();
        let r = ch.queue_declare(queue.as_str().into(), durable, args).await;
        assert_eq!(r.is_ok(), ok, "{queue}: {r:?}");
        let _ = ch.close(200, "".into()).await;
    }
}
