//! Only a 2xx is a success: redirects are never followed, and a response body
//! is never read whole (an API streaming an endless body costs neither
//! memory nor the call's timeout), and the status line decides: a slow body
//! turns neither a 2xx nor a 503 into a timeout.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use fanout_bridge::metrics::{AttemptResult, Outcome};
use lapin::BasicProperties;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::helpers::*;

#[tokio::test]
async fn a_redirect_is_a_permanent_failure_and_is_never_followed() {
    let broker = Broker::new("redirect").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    // Would answer 200 to anything: following the redirect would ack.
    let elsewhere = FakeApi::start().await;
    let statuses = [301, 302, 303, 307, 308];
    for status in statuses {
        user.then(Reply::status(status).header("location", &elsewhere.url()));
    }
    let worker = Worker::start(&broker, fast_settings(&user, &log)).await;

    for i in 0..statuses.len() {
        let props = BasicProperties::default().with_message_id(format!("redir-{i}").into());
        broker.publish(b"{}", props).await;
    }
    worker.wait_settled(statuses.len() as u64).await;
    worker.stop().await;

    assert_eq!(worker_dead_lettered(&broker).await.len(), statuses.len());
    assert_eq!(elsewhere.count(), 0, "the Location was never visited");
    assert_eq!(user.count(), statuses.len(), "a 3xx is not retried");
}

/// The DLQ's messages, each checked to be an `api_failed` of
/// user-management by a 3xx; returns their errors.
async fn worker_dead_lettered(broker: &Broker) -> HashSet<String> {
    let mut errors = HashSet::new();
    for d in broker.drain(&broker.dlq).await {
        assert_eq!(
            header_text(&d, "x-bridge-reason").as_deref(),
            Some("api_failed")
        );
        assert_eq!(
            header_text(&d, "x-bridge-failed-targets").as_deref(),
            Some("user-management")
        );
        assert_eq!(
            header_text(&d, "x-bridge-done-targets").as_deref(),
            Some("logging")
        );
        errors.insert(header_text(&d, "x-bridge-error").unwrap());
    }
    let expected: HashSet<String> = [301, 302, 303, 307, 308]
        .iter()
        .map(|s| format!("user-management: HTTP {s} after 1 attempt"))
        .collect();
    assert_eq!(errors, expected);
    errors
}

/// A raw HTTP/1.1 server answering every request with `status` and a chunked
/// body that never ends. Counts what it managed to send per connection.
struct Endless {
    url: String,
    sent: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Endless {
    async fn start(status: &'static str) -> Endless {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        let sent = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, c, cl, st) = (
            Arc::clone(&sent),
            Arc::clone(&connections),
            Arc::clone(&closed),
            Arc::clone(&stop),
        );
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (s, cl, st) = (Arc::clone(&s), Arc::clone(&cl), Arc::clone(&st));
                tokio::spawn(async move {
                    // Read the request head; the body is small and ignored.
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = sock.read(&mut buf).await;
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
                    );
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
                    while !st.load(Ordering::SeqCst) {
                        if sock.write_all(chunk.as_bytes()).await.is_err() {
                            cl.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        s.fetch_add(0x4000, Ordering::SeqCst);
                    }
                });
            }
        });
        Endless {
            url,
            sent,
            connections,
            closed,
            stop,
        }
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn an_endless_error_body_is_cut_off_and_the_message_settles() {
    let broker = Broker::new("endless").await;
    let log = FakeApi::start().await;
    let api = Endless::start("500 Internal Server Error").await;
    let settings = vec![
        ("BRIDGE_USER_API_URL".to_owned(), api.url.clone()),
        ("BRIDGE_LOG_API_URL".to_owned(), log.url()),
        ("BRIDGE_RETRY_BACKOFF_MS".to_owned(), "20".to_owned()),
        // Far longer than the test may take: reading the body to its end,
        // or until the timeout, would fail it.
        ("BRIDGE_HTTP_TIMEOUT_MS".to_owned(), "60000".to_owned()),
        ("BRIDGE_MAX_ATTEMPTS".to_owned(), "2".to_owned()),
        ("BRIDGE_SHUTDOWN_GRACE_MS".to_owned(), "5000".to_owned()),
    ];
    let worker = Worker::start(&broker, settings).await;

    let started = Instant::now();
    broker
        .publish(
            b"{}",
            BasicProperties::default().with_message_id("endless-1".into()),
        )
        .await;
    worker.wait_settled(1).await;
    let took = started.elapsed();
    assert_eq!(worker.count(Outcome::DeadLettered), 1);
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // Both connections were dropped by the worker, after a bounded amount
    // (socket buffers, not the body: it has no end).
    wait_until(
        "the worker dropped both connections",
        Duration::from_secs(10),
        || {
            let closed = api.closed.load(Ordering::SeqCst);
            async move { closed >= 2 }
        },
    )
    .await;
    assert_eq!(api.connections.load(Ordering::SeqCst), 2);
    let sent = api.sent.load(Ordering::SeqCst);
    assert!(
        sent < 64 * 1024 * 1024,
        "{sent} bytes went out before the cut"
    );
    worker.stop().await;

    let d = &broker.drain(&broker.dlq).await[0];
    assert_eq!(
        header_text(d, "x-bridge-error").as_deref(),
        Some("user-management: HTTP 500 after 2 attempts")
    );
}

#[tokio::test]
async fn an_endless_success_body_still_acks_promptly() {
    let broker = Broker::new("endless200").await;
    let log = FakeApi::start().await;
    let api = Endless::start("200 OK").await;
    let settings = vec![
        ("BRIDGE_USER_API_URL".to_owned(), api.url.clone()),
        ("BRIDGE_LOG_API_URL".to_owned(), log.url()),
        ("BRIDGE_HTTP_TIMEOUT_MS".to_owned(), "60000".to_owned()),
        ("BRIDGE_SHUTDOWN_GRACE_MS".to_owned(), "5000".to_owned()),
    ];
    let worker = Worker::start(&broker, settings).await;
    broker.publish(b"{}", BasicProperties::default()).await;
    worker.wait_settled(1).await;
    assert_eq!(worker.count(Outcome::Acked), 1);
    worker.stop().await;
}

#[tokio::test]
async fn url_credentials_are_sent_as_basic_auth() {
    let broker = Broker::new("basicauth").await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let mut settings = fast_settings(&user, &log);
    settings.retain(|(k, _)| k != "BRIDGE_USER_API_URL");
    settings.push((
        "BRIDGE_USER_API_URL".to_owned(),
        format!("http://user:hunter2@{}/api", user.addr),
    ));
    let worker = Worker::start(&broker, settings).await;
    broker.publish(b"{}", BasicProperties::default()).await;
    worker.wait_settled(1).await;
    worker.stop().await;
    let r = &user.received()[0];
    assert_eq!(
        r.header("authorization").as_deref(),
        Some("Basic dXNlcjpodW50ZXIy")
    );
    assert_eq!(r.headers.get_all("authorization").iter().count(), 1);
    assert_eq!(r.path, "/api");
}

/// A raw HTTP/1.1 server answering every request with `status` and a chunked
/// body that trickles (a chunk every 100 ms) and never ends. Counts the
/// requests it received.
struct Trickle {
    url: String,
    requests: Arc<AtomicU64>,
    accept: tokio::task::AbortHandle,
}

impl Trickle {
    async fn start(status: &'static str) -> Trickle {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&requests);
        let accept = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    // The request head and its small body come in one read.
                    let mut buf = vec![0u8; 64 * 1024];
                    if !matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let head = format!(
                        "HTTP/1.1 {status}\r\nretry-after: 0\r\ntransfer-encoding: chunked\r\n\r\n"
                    );
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    // Until the worker hangs up.
                    while sock.write_all(b"1\r\nx\r\n").await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
            }
        });
        Trickle {
            url,
            requests,
            accept: accept.abort_handle(),
        }
    }

    fn settings(&self, log: &FakeApi) -> Vec<(String, String)> {
        vec![
            ("BRIDGE_USER_API_URL".to_owned(), self.url.clone()),
            ("BRIDGE_LOG_API_URL".to_owned(), log.url()),
            ("BRIDGE_RETRY_BACKOFF_MS".to_owned(), "20".to_owned()),
            // Short, so that a body read inside it would fail the attempt.
            ("BRIDGE_HTTP_TIMEOUT_MS".to_owned(), "300".to_owned()),
            ("BRIDGE_MAX_ATTEMPTS".to_owned(), "3".to_owned()),
            ("BRIDGE_SHUTDOWN_GRACE_MS".to_owned(), "5000".to_owned()),
        ]
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

#[tokio::test]
async fn a_2xx_whose_body_never_ends_is_acked_after_one_post() {
    let broker = Broker::new("trickle200").await;
    let log = FakeApi::start().await;
    let api = Trickle::start("200 OK").await;
    let worker = Worker::start(&broker, api.settings(&log)).await;
    broker
        .publish(
            b"{}",
            BasicProperties::default().with_message_id("trickle-200".into()),
        )
        .await;
    worker.wait_settled(1).await;
    assert_eq!(worker.count(Outcome::Acked), 1);
    assert_eq!(worker.count(Outcome::DeadLettered), 0);
    assert_eq!(
        api.requests.load(Ordering::SeqCst),
        1,
        "the API accepted it the first time: no second POST"
    );
    assert_eq!(
        worker
            .metrics
            .attempt_count("user-management", AttemptResult::TransientError),
        0
    );
    worker.stop().await;
    assert!(broker.drain(&broker.dlq).await.is_empty());
}

#[tokio::test]
async fn a_503_whose_body_is_slow_is_still_a_503() {
    let broker = Broker::new("trickle503").await;
    let log = FakeApi::start().await;
    let api = Trickle::start("503 Service Unavailable").await;
    let worker = Worker::start(&broker, api.settings(&log)).await;
    broker
        .publish(
            b"{}",
            BasicProperties::default().with_message_id("trickle-503".into()),
        )
        .await;
    worker.wait_settled(1).await;
    worker.stop().await;
    assert_eq!(api.requests.load(Ordering::SeqCst), 3);
    let dead = broker.drain(&broker.dlq).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header_text(&dead[0], "x-bridge-error").as_deref(),
        Some("user-management: HTTP 503 after 3 attempts"),
        "the status decides, not the slow body"
    );
}
