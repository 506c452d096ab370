//! `BRIDGE_OUTAGE_POLICY=hold`: an API outage leaves messages in the inbound
//! queue, not the DLQ, and the API that accepted one is not called again.

use std::time::Duration;

use fanout_bridge::metrics::Outcome;
use lapin::BasicProperties;

use crate::helpers::*;

#[tokio::test]
async fn outage_holds_messages_in_the_queue_then_delivers_them() {
    let broker = Broker::new("hold").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    // Logging is down for the first ten attempts (five messages × two).
    for _ in 0..10 {
        log.then(Reply::status(503));
    }
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_OUTAGE_POLICY".into(), "hold".into()));
    settings.push(("BRIDGE_OUTAGE_PAUSE_MS".into(), "2000".into()));
    settings.push(("BRIDGE_MAX_ATTEMPTS".into(), "2".into()));
    // All five wait in the queue before the worker starts, so they are in
    // flight together and share the ten failures two by two; published one
    // by one, a late one could meet the pause, and a copy taken again after
    // it could eat another message's failure.
    broker.declare().await;
    for i in 0..5 {
        let props = BasicProperties::default().with_message_id(format!("h-{i}").into());
        broker.publish(b"{}", props).await;
    }
    let worker = Worker::start(&broker, settings).await;
    wait_until("every message held once", Duration::from_secs(10), || {
        let held = worker.count(Outcome::Held);
        async move { held >= 5 }
    })
    .await;
    // During the pause the held messages wait in the queue, and the worker
    // still counts as ready.
    broker
        .wait_depth(&broker.queue, 5, Duration::from_millis(1500))
        .await;
    assert_eq!(http_get(worker.ops, "/readyz").await.0, 200);

    wait_until(
        "all delivered after the outage",
        Duration::from_secs(15),
        || {
            let acked = worker.count(Outcome::Acked);
            async move { acked >= 5 }
        },
    )
    .await;
    worker.stop().await;

    assert_eq!(broker.depth(&broker.dlq).await, 0, "nothing dead-lettered");
    assert_eq!(broker.depth(&broker.queue).await, 0);
    let per_user_key = user.per_key();
    assert_eq!(per_user_key.len(), 5);
    assert!(
        per_user_key.values().all(|&n| n == 1),
        "user-management called again: {per_user_key:?}"
    );
    assert_eq!(log.per_key().len(), 5);
}

#[tokio::test]
async fn a_permanent_failure_dead_letters_even_under_hold() {
    let broker = Broker::new("holdperm").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    user.always(Reply::status(404));
    log.always(Reply::status(503));
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_OUTAGE_POLICY".into(), "hold".into()));
    let worker = Worker::start(&broker, settings).await;

    broker.publish(b"{}", BasicProperties::default()).await;
    worker.wait_settled(1).await;
    worker.stop().await;
    assert_eq!(broker.drain(&broker.dlq).await.len(), 1);
}

#[tokio::test]
async fn hold_with_three_targets_calls_only_the_one_that_was_down() {
    let broker = Broker::new("hold3").await;
    let (user, log, crm) = (
        FakeApi::start().await,
        FakeApi::start().await,
        FakeApi::start().await,
    );
    // crm is down for the first two attempts (one message × two).
    crm.then(Reply::status(503)).then(Reply::status(503));
    let mut settings = fast_settings(&user, &log);
    settings.push((
        "BRIDGE_TARGETS".into(),
        "user-management,crm,logging".into(),
    ));
    settings.push(("BRIDGE_TARGET_CRM_URL".into(), crm.url()));
    settings.push(("BRIDGE_OUTAGE_POLICY".into(), "hold".into()));
    settings.push(("BRIDGE_OUTAGE_PAUSE_MS".into(), "300".into()));
    settings.push(("BRIDGE_MAX_ATTEMPTS".into(), "2".into()));
    let worker = Worker::start(&broker, settings).await;

    let props = BasicProperties::default().with_message_id("h3".into());
    broker.publish(b"{}", props).await;
    wait_until("held, then acked", Duration::from_secs(15), || {
        let (held, acked) = (worker.count(Outcome::Held), worker.count(Outcome::Acked));
        async move { held == 1 && acked == 1 }
    })
    .await;
    worker.stop().await;

    assert_eq!((user.count(), log.count(), crm.count()), (1, 1, 3));
    assert_eq!(broker.depth(&broker.dlq).await, 0);
}

/// A delivery still calling an API when intake resumes after a hold pause
/// (past the grace) goes back to the queue with the targets that already
/// accepted it: handed back instead, it lost that record and the API that had
/// accepted it was called again.
#[tokio::test]
async fn a_delivery_outliving_the_pause_keeps_its_done_targets() {
    let broker = Broker::new("holdgrace").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    // Logging answers "slow" only long after the pause and its 5 s grace.
    log.for_key("slow", Reply::ok().delay(Duration::from_secs(15)));
    // ... and is down for "down"'s two attempts: that one triggers the hold.
    log.for_key("down", Reply::status(503))
        .for_key("down", Reply::status(503));
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_OUTAGE_POLICY".into(), "hold".into()));
    settings.push(("BRIDGE_OUTAGE_PAUSE_MS".into(), "300".into()));
    settings.push(("BRIDGE_MAX_ATTEMPTS".into(), "2".into()));
    settings.push(("BRIDGE_HTTP_TIMEOUT_MS".into(), "30000".into()));
    let worker = Worker::start(&broker, settings).await;

    let id = |id: &str| BasicProperties::default().with_message_id(id.into());
    broker.publish(b"{}", id("slow")).await;
    wait_until(
        "slow: user-management accepted it, logging is answering",
        Duration::from_secs(10),
        || {
            let mid_flight = user.keys().contains("slow") && log.arrived("slow");
            async move { mid_flight }
        },
    )
    .await;
    broker.publish(b"{}", id("down")).await;
    wait_until("both acked", Duration::from_secs(30), || {
        let acked = worker.count(Outcome::Acked);
        async move { acked == 2 }
    })
    .await;
    let worker_held = worker.count(Outcome::Held);
    worker.stop().await;

    let per_user_key = user.per_key();
    assert_eq!(
        (per_user_key.get("slow"), per_user_key.get("down")),
        (Some(&1), Some(&1)),
        "user-management called again: {per_user_key:?}"
    );
    assert_eq!(worker_held, 2, "both went back with their done targets");
    assert_eq!(broker.depth(&broker.queue).await, 0);
    assert_eq!(broker.depth(&broker.dlq).await, 0);
}
