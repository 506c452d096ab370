//! A panic in a delivery task hands its message back to the queue. No input
//! is known to make the worker panic, so the handler is injected: a real
//! delivery from the real broker, handled by a future that panics.

use std::time::Duration;

use fanout_bridge::{
    broker::{acks::Acks, settlement::Settlement},
    metrics::Outcome,
    supervisor::guard_delivery,
};
use futures::StreamExt;
use lapin::{
    options::{BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
    BasicProperties,
};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

#[tokio::test]
async fn a_panicking_delivery_task_hands_its_message_back() {
    let broker = Broker::new("panic").await;
    broker.declare().await;
    broker
        .publish(b"{\"boom\":1}", BasicProperties::default())
        .await;

    let channel = broker.conn.create_channel().await.unwrap();
    channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            broker.queue.as_str().into(),
            "panic-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!first.redelivered);

    let len = first.data.len();
    let handler = async move {
        if len > 1 {
            panic!("injected panic in a delivery handler");
        }
        Outcome::Acked
    };
    let acks = Acks::new(channel.clone(), CancellationToken::new());
    let settle = Settlement::register(acks.clone(), first.delivery_tag, first.acker.clone());
    let guarded = tokio::spawn(guard_delivery(
        handler,
        settle,
        channel.clone(),
        CancellationToken::new(),
    ));
    guarded.await.expect("the guard catches the panic");

    // The same consumer gets it again at once (prefetch 1: it was nacked,
    // not left stuck in the prefetch slot).
    let again = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the message came back")
        .unwrap()
        .unwrap();
    assert!(again.redelivered);
    assert_eq!(again.data, first.data);
    let _ = channel.close(200, "".into()).await;
    broker
        .wait_depth(&broker.queue, 1, Duration::from_secs(10))
        .await;
}
