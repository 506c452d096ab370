//! Each confirm and each return matched to its own publish: many tasks
//! publish at once through the worker's Publisher, some to a queue that
//! exists, some to one that does not. lapin hands a `basic.return` to
//! whichever confirm it resolves next, so on a shared channel an unroutable
//! publish could be reported as stored (and a DLQ copy lost): with the old
//! shared channel this test found such a publish in every run.

use std::{sync::Arc, time::Duration};

use fanout_bridge::{
    broker::publisher::{PublishError, Publisher},
    config::RawConfig,
};
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::helpers::*;

async fn concurrent_mix(publisher: Arc<Publisher>, routable: String, rounds: usize) -> Vec<String> {
    let missing = unique("nowhere");
    let mut tasks = Vec::new();
    for i in 0..rounds {
        let (publisher, routable, missing) =
            (Arc::clone(&publisher), routable.clone(), missing.clone());
        tasks.push(tokio::spawn(async move {
            let to_missing = i % 5 == 1;
            let queue = if to_missing { &missing } else { &routable };
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(format!("c-{i}").into());
            let body = format!("{{\"i\":{i}}}");
            match (
                to_missing,
                publisher.publish(queue, body.as_bytes(), props).await,
            ) {
                (false, Ok(())) | (true, Err(PublishError::Returned(_))) => None,
                (to_missing, r) => Some(format!("#{i} unroutable={to_missing}: {r:?}")),
            }
        }));
    }
    let mut wrong = Vec::new();
    for t in tasks {
        if let Some(w) = t.await.unwrap() {
            wrong.push(w);
        }
    }
    wrong
}

#[tokio::test]
async fn concurrent_routable_and_unroutable_publishes_are_each_reported_right() {
    let broker = Broker::new("confirms").await;
    broker.declare().await;
    let config = RawConfig::from_vars(broker.vars()).broker_config().unwrap();
    let conn = Arc::new(
        Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .unwrap(),
    );
    let publisher = Arc::new(
        Publisher::pooled(Arc::clone(&conn), config, Duration::from_secs(15))
            .await
            .unwrap(),
    );
    let mut wrong = Vec::new();
    for _ in 0..3 {
        wrong.extend(concurrent_mix(Arc::clone(&publisher), broker.queue.clone(), 2000).await);
    }
    assert!(wrong.is_empty(), "misreported publishes: {wrong:#?}");
    broker
        .wait_depth(&broker.queue, 4800, Duration::from_secs(10))
        .await;
    publisher.close_pool().await;
    let _ = conn.close(200, "".into()).await;
}
