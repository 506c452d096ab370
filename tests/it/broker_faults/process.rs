//! Faults that need a real process: SIGTERM with messages in flight, SIGKILL
//! mid-stream, and several replicas on one queue. The evidence that nothing
//! was lost is what the stand-in APIs received per message id.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn sigterm_lets_in_flight_messages_finish_and_exits_0() {
    let broker = Broker::new("sigterm").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    user.always(Reply::ok().delay(Duration::from_millis(1500)));
    let mut worker = Process::start(&broker, fast_settings(&user, &log)).await;

    let ids = broker.publish_numbered("t", 0..5).await;
    wait_until("five calls in flight", Duration::from_secs(10), || {
        let n = log.count();
        async move { n >= 5 }
    })
    .await;
    worker.signal("TERM");
    assert_eq!(
        worker.wait_exit(Duration::from_secs(10)).await,
        Some(0),
        "{}",
        worker.log_text()
    );

    assert_eq!(user.keys(), ids);
    assert_eq!(
        broker.depth(&broker.queue).await,
        0,
        "in-flight messages were acked before exit"
    );
    assert_eq!(broker.depth(&broker.dlq).await, 0);
}

#[tokio::test]
async fn sigterm_grace_expiry_leaves_unfinished_messages_for_redelivery() {
    let broker = Broker::new("grace").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    user.always(Reply::ok().delay(Duration::from_secs(20)));
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_HTTP_TIMEOUT_MS".into(), "30000".into()));
    settings.push(("BRIDGE_SHUTDOWN_GRACE_MS".into(), "300".into()));
    let mut worker = Process::start(&broker, settings).await;

    broker.publish_numbered("g", 0..2).await;
    wait_until("two calls in flight", Duration::from_secs(10), || {
        let n = log.count();
        async move { n >= 2 }
    })
    .await;
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(Duration::from_secs(10)).await, Some(0));
    broker
        .wait_depth(&broker.queue, 2, Duration::from_secs(10))
        .await;
}

/// A message still calling an API when the grace ends goes back to the
/// queue remembering which APIs accepted it: left unacked, it came back
/// without that record and the API that had accepted it was called again.
#[tokio::test]
async fn sigterm_grace_expiry_keeps_the_done_targets_of_unfinished_messages() {
    let broker = Broker::new("gracedone").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    // Logging hangs on the first call for "cut", far past the grace; user
    // management accepts at once.
    log.for_key("cut", Reply::ok().delay(Duration::from_secs(30)));
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_HTTP_TIMEOUT_MS".into(), "60000".into()));
    settings.push(("BRIDGE_SHUTDOWN_GRACE_MS".into(), "500".into()));
    let mut first = Process::start(&broker, settings.clone()).await;

    broker
        .publish(
            b"{\"a\":1}",
            lapin::BasicProperties::default().with_message_id("cut".into()),
        )
        .await;
    wait_until(
        "user-management accepted it, logging is answering",
        Duration::from_secs(10),
        || {
            let mid_flight = user.keys().contains("cut") && log.arrived("cut");
            async move { mid_flight }
        },
    )
    .await;
    first.signal("TERM");
    assert_eq!(
        first.wait_exit(Duration::from_secs(15)).await,
        Some(0),
        "{}",
        first.log_text()
    );

    let second = Process::start(&broker, settings).await;
    wait_until(
        "logging accepted it on the next delivery",
        Duration::from_secs(20),
        || {
            let accepted = log.keys().contains("cut");
            async move { accepted }
        },
    )
    .await;
    wait_until(
        "the next delivery acked",
        Duration::from_secs(10),
        || async {
            second
                .metric("bridge_messages_total{outcome=\"acked\"}")
                .await
                == 1.0
        },
    )
    .await;
    assert_eq!(
        user.per_key().get("cut"),
        Some(&1),
        "user-management was called again; first worker's log: {}",
        first.log_text()
    );
    assert_eq!(broker.depth(&broker.queue).await, 0);
    assert_eq!(broker.depth(&broker.dlq).await, 0);
}

#[tokio::test]
async fn sigkill_mid_stream_loses_nothing() {
    let broker = Broker::new("sigkill").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    user.always(Reply::ok().delay(Duration::from_millis(300)));
    log.always(Reply::ok().delay(Duration::from_millis(300)));
    broker.declare().await;
    let ids = broker.publish_numbered("k", 0..60).await;

    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_PREFETCH".into(), "32".into()));
    let mut first = Process::start(&broker, settings.clone()).await;
    wait_until("dozens in flight", Duration::from_secs(10), || {
        let n = user.count();
        async move { n >= 10 }
    })
    .await;
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(5)).await;

    let mut second = Process::start(&broker, settings).await;
    wait_delivered(&user, &log, &ids, Duration::from_secs(30)).await;
    broker
        .wait_depth(&broker.queue, 0, Duration::from_secs(10))
        .await;
    wait_until(
        "nothing left in flight",
        Duration::from_secs(10),
        || async { second.metric("bridge_messages_in_flight").await == 0.0 },
    )
    .await;
    second.signal("TERM");
    assert_eq!(second.wait_exit(Duration::from_secs(10)).await, Some(0));
    assert_eq!(
        broker.depth(&broker.queue).await,
        0,
        "every message was acked"
    );
    assert_eq!(broker.depth(&broker.dlq).await, 0);
}

#[tokio::test]
async fn three_replicas_share_one_queue() {
    let broker = Broker::new("replicas").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    user.always(Reply::ok().delay(Duration::from_millis(50)));
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_PREFETCH".into(), "4".into()));
    let workers = [
        Process::start(&broker, settings.clone()).await,
        Process::start(&broker, settings.clone()).await,
        Process::start(&broker, settings).await,
    ];
    let ids = broker.publish_numbered("s", 0..90).await;
    wait_delivered(&user, &log, &ids, Duration::from_secs(30)).await;
    let mut total = 0.0;
    for (i, w) in workers.iter().enumerate() {
        let acked = w.metric("bridge_messages_total{outcome=\"acked\"}").await;
        assert!(acked >= 1.0, "replica {i} did no work");
        total += acked;
    }
    assert!(total >= 90.0, "{total}");
}
