//! Broker faults that do not disturb the shared broker: a TCP proxy in front
//! of it is started late and cut mid-stream. And the second signal.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use lapin::BasicProperties;

use crate::helpers::*;

#[tokio::test]
async fn unreachable_at_start_then_connection_lost_the_worker_waits_and_recovers() {
    let broker = Broker::new("proxy").await;
    broker.declare().await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let port = free_port();
    let mut settings = fast_settings(&user, &log);
    let proxied = {
        let mut url = url::Url::parse(&amqp_url()).unwrap();
        url.set_port(Some(port)).unwrap();
        url.to_string()
    };
    settings.push(("BRIDGE_AMQP_URL".into(), proxied));
    let mut worker = Process::spawn(&broker, settings);

    // Nothing listens on the broker port yet: alive, not ready, retrying.
    wait_until(
        "two failed connection attempts",
        Duration::from_secs(15),
        || {
            let n = worker.log_text().matches("cannot reach the broker").count();
            async move { n >= 2 }
        },
    )
    .await;
    assert_eq!(http_get(worker.ops, "/healthz").await.0, 200);
    assert_eq!(http_get(worker.ops, "/readyz").await.0, 503);
    assert_eq!(worker.metric("bridge_broker_connected").await, 0.0);
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the process must not exit"
    );

    let proxy = TcpProxy::start(port).await;
    worker.wait_ready().await;
    let mut ids = HashSet::new();
    ids.extend(broker.publish_numbered("p", 0..5).await);
    wait_until("first batch delivered", Duration::from_secs(15), || {
        let n = log.per_key().len();
        async move { n == 5 }
    })
    .await;

    // The network drops every connection.
    proxy.cut();
    drop(proxy);
    wait_until("readyz turns 503", Duration::from_secs(15), || async {
        !worker.ready().await
    })
    .await;
    let _proxy = TcpProxy::start(port).await;
    worker.wait_ready().await;
    ids.extend(broker.publish_numbered("p", 5..10).await);
    wait_delivered(&user, &log, &ids, Duration::from_secs(20)).await;
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(Duration::from_secs(10)).await, Some(0));
    assert_eq!(broker.depth(&broker.queue).await, 0);
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let broker = Broker::new("twosignals").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    user.always(Reply::ok().delay(Duration::from_secs(30)));
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_HTTP_TIMEOUT_MS".into(), "60000".into()));
    settings.push(("BRIDGE_SHUTDOWN_GRACE_MS".into(), "60000".into()));
    let mut worker = Process::start(&broker, settings).await;
    broker.publish(b"{}", BasicProperties::default()).await;
    wait_until("a call in flight", Duration::from_secs(10), || {
        let n = log.count();
        async move { n >= 1 }
    })
    .await;
    worker.signal("TERM");
    wait_until("draining: readyz 503", Duration::from_secs(5), || async {
        !worker.ready().await
    })
    .await;
    worker.signal("INT");
    let code = worker.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(code, Some(1), "{}", worker.log_text());
    broker
        .wait_depth(&broker.queue, 1, Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn an_inbound_queue_deleted_under_the_worker_is_declared_again() {
    let broker = Broker::new("deleted").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;

    broker.delete(&broker.queue).await;
    // The worker notices the cancelled consumer, reconnects and declares the
    // queue again; a publish then reaches it.
    wait_until(
        "the queue exists again and the worker consumes it",
        Duration::from_secs(20),
        || async {
            let ch = broker.conn.create_channel().await.unwrap();
            let exists = ch
                .queue_declare(
                    broker.queue.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .is_ok_and(|q| q.consumer_count() >= 1);
            let _ = ch.close(200, "".into()).await;
            exists
        },
    )
    .await;
    broker
        .publish(b"{\"again\":true}", BasicProperties::default())
        .await;
    worker.wait_settled(1).await;
    assert_eq!(log.count(), 1);
    worker.stop().await;
}

/// After the connection is cut, the deliveries of the dead session are
/// abandoned before the redelivered copies are taken: in flight never
/// exceeds the prefetch, and no API sees one key twice at the same time.
#[tokio::test]
async fn after_a_cut_connection_in_flight_never_exceeds_the_prefetch() {
    use crate::slow_api::SlowApi;
    use fanout_bridge::metrics::Outcome;

    let broker = Broker::new("inflight").await;
    broker.declare().await;
    let user = SlowApi::start(Duration::from_millis(1500)).await;
    let log = SlowApi::start(Duration::from_millis(1500)).await;
    let port = free_port();
    let proxy = TcpProxy::start(port).await;
    let settings = vec![
        ("BRIDGE_USER_API_URL".to_owned(), user.url()),
        ("BRIDGE_LOG_API_URL".to_owned(), log.url()),
        ("BRIDGE_AMQP_URL".to_owned(), proxy.url()),
        ("BRIDGE_PREFETCH".to_owned(), "4".to_owned()),
        ("BRIDGE_HTTP_TIMEOUT_MS".to_owned(), "10000".to_owned()),
    ];
    let worker = Worker::start(&broker, settings).await;

    // Sample the gauge all along.
    let in_flight = worker.metrics.in_flight.clone();
    let sampler = MaxSampler::start(move || in_flight.get());

    broker.publish_numbered("f", 0..12).await;
    wait_until("four calls in flight", Duration::from_secs(10), || {
        let n = user.arrived();
        async move { n >= 4 }
    })
    .await;
    proxy.cut();
    drop(proxy);
    wait_until(
        "the old proxy's port is free",
        Duration::from_secs(10),
        || async { std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() },
    )
    .await;
    let _proxy = TcpProxy::start(port).await;
    wait_until("all twelve acked", Duration::from_secs(60), || {
        let acked = worker.count(Outcome::Acked);
        async move { acked >= 12 }
    })
    .await;
    let max = sampler.stop().await;
    worker.stop().await;

    assert!(max <= 4, "{max} messages in flight with a prefetch of 4");
    assert!(user.arrived() > 12, "the cut really caused redeliveries");
    assert_eq!(user.overlapping(), Vec::<String>::new());
    assert_eq!(log.overlapping(), Vec::<String>::new());
    assert_eq!(broker.depth(&broker.queue).await, 0);
}

/// After a `hold` pause the new consumer starts only once the old one's
/// deliveries are done (or abandoned): in flight never exceeds the prefetch.
#[tokio::test]
async fn after_a_hold_pause_in_flight_never_exceeds_the_prefetch() {
    use fanout_bridge::metrics::Outcome;

    let broker = Broker::new("holdflight").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    // The first message's logging call is slow, the second one's fails.
    log.then(Reply::ok().delay(Duration::from_secs(2)))
        .then(Reply::status(503));
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_PREFETCH".into(), "2".into()));
    settings.push(("BRIDGE_OUTAGE_POLICY".into(), "hold".into()));
    settings.push(("BRIDGE_OUTAGE_PAUSE_MS".into(), "300".into()));
    settings.push(("BRIDGE_MAX_ATTEMPTS".into(), "1".into()));
    settings.push(("BRIDGE_HTTP_TIMEOUT_MS".into(), "10000".into()));
    let worker = Worker::start(&broker, settings).await;

    let in_flight = worker.metrics.in_flight.clone();
    let sampler = MaxSampler::start(move || in_flight.get());

    broker.publish_numbered("slow", 0..1).await;
    wait_until(
        "the slow message in flight",
        Duration::from_secs(10),
        || {
            let n = worker.metrics.in_flight.get();
            async move { n >= 1 }
        },
    )
    .await;
    broker.publish_numbered("held", 0..1).await;
    wait_until("a message held", Duration::from_secs(10), || {
        let held = worker.count(Outcome::Held);
        async move { held >= 1 }
    })
    .await;
    // Waiting in the queue when the pause ends.
    broker.publish_numbered("after", 0..4).await;
    wait_until("all six acked", Duration::from_secs(20), || {
        let acked = worker.count(Outcome::Acked);
        async move { acked >= 6 }
    })
    .await;
    let max = sampler.stop().await;
    worker.stop().await;

    assert!(max <= 2, "{max} messages in flight with a prefetch of 2");
    assert_eq!(broker.depth(&broker.queue).await, 0);
    assert_eq!(broker.depth(&broker.dlq).await, 0);
}

/// Samples a value every millisecond, keeping the highest, until stopped.
struct MaxSampler {
    max: Arc<AtomicI64>,
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl MaxSampler {
    fn start(read: impl Fn() -> i64 + Send + 'static) -> MaxSampler {
        let max = Arc::new(AtomicI64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (max, done) = (Arc::clone(&max), Arc::clone(&done));
            async move {
                while !done.load(Ordering::Relaxed) {
                    max.fetch_max(read(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        MaxSampler { max, done, task }
    }

    /// Stops sampling; the highest value seen.
    async fn stop(self) -> i64 {
        self.done.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.max.load(Ordering::Relaxed)
    }
}
