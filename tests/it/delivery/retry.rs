//! The retry rules: transient failures are retried with backoff, permanent
//! ones are not, Retry-After is honoured, and only the failed call repeats.

use std::time::Duration;

use fanout_bridge::metrics::Outcome;
use lapin::BasicProperties;

use crate::helpers::*;

#[tokio::test]
async fn transient_503_then_200_is_retried_and_acked_calling_only_the_failed_api_again() {
    let broker = Broker::new("retry503").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    user.then(Reply::status(503));
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;

    broker
        .publish(
            b"{}",
            BasicProperties::default().with_message_id("r-1".into()),
        )
        .await;
    worker.wait_settled(1).await;

    assert_eq!(worker.count(Outcome::Acked), 1);
    assert_eq!(user.count(), 2, "user-management: 503 then 200");
    assert_eq!(
        log.count(),
        1,
        "logging accepted at once and is not called again"
    );
    worker.stop().await;
}

#[tokio::test]
async fn every_transient_status_and_error_is_retried() {
    let broker = Broker::new("transient").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    for s in [408, 429, 500, 502, 504] {
        user.then(Reply::status(s));
    }
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_MAX_ATTEMPTS".into(), "6".into()));
    let worker = Worker::start(&broker, settings).await;

    broker.publish(b"{}", BasicProperties::default()).await;
    worker.wait_settled(1).await;
    assert_eq!(worker.count(Outcome::Acked), 1);
    assert_eq!(user.count(), 6);
    worker.stop().await;
}

#[tokio::test]
async fn permanent_400_is_not_retried_and_dead_letters() {
    let broker = Broker::new("perm400").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    user.always(Reply::status(400));
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;

    broker
        .publish(
            b"{\"bad\":true}",
            BasicProperties::default().with_message_id("p-1".into()),
        )
        .await;
    worker.wait_settled(1).await;
    worker.stop().await;

    assert_eq!(user.count(), 1, "a permanent failure is not retried");
    let dead = broker.drain(&broker.dlq).await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(
        header_text(d, "x-bridge-reason").as_deref(),
        Some("api_failed")
    );
    assert_eq!(
        header_text(d, "x-bridge-failed-targets").as_deref(),
        Some("user-management")
    );
    assert_eq!(
        header_text(d, "x-bridge-done-targets").as_deref(),
        Some("logging")
    );
    assert_eq!(
        header_text(d, "x-bridge-error").as_deref(),
        Some("user-management: HTTP 400 after 1 attempt")
    );
    assert_eq!(header_int(d, "x-bridge-attempts"), Some(1));
    assert_eq!(
        broker.depth(&broker.queue).await,
        0,
        "the original was acked"
    );
}

#[tokio::test]
async fn transient_failure_that_outlasts_the_attempts_dead_letters() {
    let broker = Broker::new("exhaust").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    log.always(Reply::status(503));
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;

    broker.publish(b"{}", BasicProperties::default()).await;
    worker.wait_settled(1).await;
    worker.stop().await;

    assert_eq!(log.count(), 3, "BRIDGE_MAX_ATTEMPTS defaults to 3");
    assert_eq!(user.count(), 1);
    let d = &broker.drain(&broker.dlq).await[0];
    assert_eq!(
        header_text(d, "x-bridge-error").as_deref(),
        Some("logging: HTTP 503 after 3 attempts")
    );
    assert_eq!(
        header_text(d, "x-bridge-failed-targets").as_deref(),
        Some("logging")
    );
    assert_eq!(header_int(d, "x-bridge-attempts"), Some(3));
}

#[tokio::test]
async fn a_hung_api_times_out_per_attempt() {
    let broker = Broker::new("timeout").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    log.always(Reply::ok().delay(Duration::from_secs(30)));
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_HTTP_TIMEOUT_MS".into(), "200".into()));
    settings.push(("BRIDGE_MAX_ATTEMPTS".into(), "2".into()));
    let worker = Worker::start(&broker, settings).await;

    broker.publish(b"{}", BasicProperties::default()).await;
    worker.wait_settled(1).await;
    worker.stop().await;

    let d = &broker.drain(&broker.dlq).await[0];
    let error = header_text(d, "x-bridge-error").unwrap();
    assert!(error.starts_with("logging: timed out"), "{error}");
    assert!(error.ends_with("after 2 attempts"), "{error}");
}

#[tokio::test]
async fn retry_after_on_429_sets_the_least_wait() {
    let broker = Broker::new("retryafter").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    user.then(Reply::status(429).header("retry-after", "1"));
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;

    broker.publish(b"{}", BasicProperties::default()).await;
    worker.wait_settled(1).await;
    worker.stop().await;

    let r = user.received();
    assert_eq!(r.len(), 2);
    let gap = r[1].started.duration_since(r[0].answered);
    assert!(
        gap >= Duration::from_millis(950),
        "waited only {gap:?} despite Retry-After: 1"
    );
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let broker = Broker::new("refused").await;
    let user = FakeApi::start().await;
    let closed = format!("127.0.0.1:{CLOSED_PORT}");
    let mut settings = fast_settings(&user, &user);
    settings.retain(|(k, _)| k != "BRIDGE_LOG_API_URL");
    settings.push(("BRIDGE_LOG_API_URL".into(), format!("http://{closed}/logs")));
    let worker = Worker::start(&broker, settings).await;

    broker.publish(b"{}", BasicProperties::default()).await;
    worker.wait_settled(1).await;
    worker.stop().await;

    let d = &broker.drain(&broker.dlq).await[0];
    let error = header_text(d, "x-bridge-error").unwrap();
    assert!(error.starts_with("logging: connection failed"), "{error}");
    assert_eq!(header_int(d, "x-bridge-attempts"), Some(3));
}
