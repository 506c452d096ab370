//! Coalesced acks (src/broker/acks.rs): many fast deliveries settle with
//! fewer `basic.ack` frames, yet every message is acked exactly once, and a
//! kill while acks are being coalesced loses nothing.

use std::time::Duration;

use fanout_bridge::metrics::Outcome;

use crate::helpers::*;

/// `(ready, unacked)` of a queue, as the broker counts them.
fn broker_counts(queue: &str) -> (u64, u64) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "--no-table-headers"])
        .args(["name", "messages_ready", "messages_unacknowledged"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            if f.next()? != queue {
                return None;
            }
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .unwrap_or((0, 0))
}

async fn wait_unacked_zero(queue: &str) {
    wait_until(
        "the broker counts nothing unacked",
        Duration::from_secs(20),
        || async { broker_counts(queue) == (0, 0) },
    )
    .await;
}

#[tokio::test]
async fn many_concurrent_fast_deliveries_are_all_acked_exactly_once() {
    let broker = Broker::new("acks").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    broker.declare().await;
    let n = 1500;
    let ids = broker.publish_numbered("a", 0..n).await;

    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_PREFETCH".into(), "64".into()));
    let worker = Worker::start(&broker, settings).await;
    wait_delivered(&user, &log, &ids, Duration::from_secs(60)).await;
    worker.wait_settled(n as u64).await;
    wait_unacked_zero(&broker.queue).await;

    assert_eq!(worker.count(Outcome::Acked), n as u64);
    assert_eq!(worker.count(Outcome::Requeued), 0, "no ack was lost");
    assert_eq!(worker.metrics.in_flight.get(), 0);
    // A double ack would have closed the channel and redelivered messages.
    assert!(
        user.per_key().values().all(|&c| c == 1),
        "every message was handled once"
    );
    worker.stop().await;
    assert_eq!(
        broker_counts(&broker.queue),
        (0, 0),
        "nothing came back when the channel closed"
    );
    assert_eq!(broker.depth(&broker.dlq).await, 0);
}

#[tokio::test]
async fn a_kill_during_coalesced_acks_loses_nothing_and_redelivers_at_most_the_unacked() {
    let broker = Broker::new("ackkill").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    broker.declare().await;
    let n = 2000;
    let prefetch = 64;
    let ids = broker.publish_numbered("k", 0..n).await;

    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_PREFETCH".into(), prefetch.to_string()));
    let mut first = Process::start(&broker, settings.clone()).await;
    // Mid-stream: acks are flowing in batches.
    wait_until("hundreds settled", Duration::from_secs(30), || {
        let c = user.count();
        async move { c >= 400 }
    })
    .await;
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(5)).await;
    let before_restart = user.per_key();
    assert!(before_restart.len() < n, "killed before the end");

    let mut second = Process::start(&broker, settings).await;
    wait_delivered(&user, &log, &ids, Duration::from_secs(60)).await;
    wait_until("every message settled", Duration::from_secs(20), || async {
        second
            .metric("bridge_messages_total{outcome=\"acked\"}")
            .await
            + second
                .metric("bridge_messages_total{outcome=\"dead_lettered\"}")
                .await
            >= (n - before_restart.len()) as f64
    })
    .await;
    wait_unacked_zero(&broker.queue).await;

    // Redelivered: handled by the first worker and again by the second. At
    // most what the first held unacked when it died (its prefetch).
    let twice: Vec<_> = user.per_key().into_iter().filter(|(_, c)| *c > 1).collect();
    assert!(
        twice.len() <= prefetch,
        "{} messages were handled twice: more than the {prefetch} that can be unacked",
        twice.len()
    );
    assert!(twice.iter().all(|(_, c)| *c == 2), "{twice:?}");
    assert_eq!(user.keys(), ids, "nothing lost");
    second.signal("TERM");
    assert_eq!(second.wait_exit(Duration::from_secs(10)).await, Some(0));
    assert_eq!(broker_counts(&broker.queue), (0, 0));
    assert_eq!(broker.depth(&broker.dlq).await, 0, "nothing dead-lettered");
}
