//! `x-bridge-done-targets`: an API that already accepted a message is not
//! called for it again, and the DLQ copy carries the union.

use lapin::BasicProperties;

use crate::helpers::*;

#[tokio::test]
async fn done_targets_are_skipped() {
    let broker = Broker::new("skip").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;

    let props = BasicProperties::default()
        .with_headers(headers(&[("x-bridge-done-targets", "user-management")]));
    broker.publish(b"{\"replayed\":true}", props).await;
    worker.wait_settled(1).await;
    worker.stop().await;

    assert_eq!(user.count(), 0, "user-management already accepted it");
    assert_eq!(log.count(), 1);
}

#[tokio::test]
async fn a_second_failure_records_the_union_of_done_targets() {
    let broker = Broker::new("union").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    user.always(Reply::status(503));
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;

    // Logging accepted it earlier; user-management fails again now.
    let props =
        BasicProperties::default().with_headers(headers(&[("x-bridge-done-targets", "logging")]));
    broker.publish(b"{}", props).await;
    worker.wait_settled(1).await;
    worker.stop().await;

    assert_eq!(log.count(), 0);
    let d = &broker.drain(&broker.dlq).await[0];
    assert_eq!(
        header_text(d, "x-bridge-done-targets").as_deref(),
        Some("logging")
    );
    assert_eq!(
        header_text(d, "x-bridge-failed-targets").as_deref(),
        Some("user-management")
    );
}

#[tokio::test]
async fn both_done_is_acked_without_calls() {
    let broker = Broker::new("bothdone").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;
    let props = BasicProperties::default().with_headers(headers(&[(
        "x-bridge-done-targets",
        "logging,user-management",
    )]));
    broker.publish(b"{}", props).await;
    worker.wait_settled(1).await;
    worker.stop().await;
    assert_eq!(user.count() + log.count(), 0);
}
