//! `BRIDGE_*_API_RATE_LIMIT`: at most N requests in any one-second window,
//! retries included, and nothing lost while waiting.

use std::time::Duration;

use lapin::BasicProperties;

use crate::helpers::*;

#[tokio::test]
async fn the_rate_limit_holds_in_every_one_second_window() {
    let broker = Broker::new("rate").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    // Two retries count against the limit too.
    log.then(Reply::status(503)).then(Reply::status(503));
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_LOG_API_RATE_LIMIT".into(), "5".into()));
    let worker = Worker::start(&broker, settings).await;

    for i in 0..13 {
        broker
            .publish(
                format!("{{\"i\":{i}}}").as_bytes(),
                BasicProperties::default(),
            )
            .await;
    }
    wait_until("all 13 acked", Duration::from_secs(20), || {
        let acked = worker.count(fanout_bridge::metrics::Outcome::Acked);
        async move { acked >= 13 }
    })
    .await;
    worker.stop().await;

    let mut starts: Vec<_> = log.received().iter().map(|r| r.started).collect();
    starts.sort();
    assert_eq!(starts.len(), 15);
    for (i, &t) in starts.iter().enumerate() {
        let in_window = starts[i..]
            .iter()
            .take_while(|&&u| u.duration_since(t) < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 5,
            "{in_window} requests within one second from request #{i}"
        );
    }
    assert_eq!(user.count(), 13, "the user-management API is not limited");
}
