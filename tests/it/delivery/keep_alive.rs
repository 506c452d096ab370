//! Keep-alive churn: an API that closes a connection after one response
//! (without `Connection: close`, as idle timeouts do) costs no attempt. The
//! request sent on such a reused connection is sent once more, at once, on a
//! new one; the server here makes that race certain rather than likely.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use fanout_bridge::metrics::{AttemptResult, Outcome};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::helpers::*;

/// A raw HTTP/1.1 server that answers the first request of each connection
/// with 200 and keeps the connection open; the next request on it is read
/// and then met with a close: FIN on one connection, RST on the next.
struct OneShot {
    url: String,
    /// Idempotency keys of the requests answered.
    answered: Arc<Mutex<HashSet<String>>>,
    /// Requests that met a closed connection.
    refused: Arc<AtomicU64>,
    accept: tokio::task::AbortHandle,
}

/// Reads one request (head and `content-length` body); its Idempotency-Key,
/// or `None` when the peer closed first.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let value = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let length: usize = value("content-length:")?.parse().ok()?;
    while buf.len() < head_end + length {
        let n = sock.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(value("idempotency-key:").unwrap_or_default())
}

impl OneShot {
    async fn start() -> OneShot {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        let answered: Arc<Mutex<HashSet<String>>> = Arc::default();
        let refused = Arc::new(AtomicU64::new(0));
        let (a, r) = (Arc::clone(&answered), Arc::clone(&refused));
        let accept = tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok((mut sock, _)) = listener.accept().await {
                n += 1;
                let reset = n.is_multiple_of(2);
                let (a, r) = (Arc::clone(&a), Arc::clone(&r));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let Some(key) = read_request(&mut sock, &mut buf).await else {
                        return;
                    };
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                    if sock.write_all(ok).await.is_err() {
                        return;
                    }
                    a.lock().unwrap().insert(key);
                    // The next request on this connection arrives whole
                    // and gets no byte of an answer.
                    if read_request(&mut sock, &mut buf).await.is_some() {
                        r.fetch_add(1, Ordering::SeqCst);
                    }
                    if reset {
                        let _ = sock.set_zero_linger();
                    }
                    drop(sock);
                });
            }
        });
        OneShot {
            url,
            answered,
            refused,
            accept: accept.abort_handle(),
        }
    }
}

impl Drop for OneShot {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

#[tokio::test]
async fn a_request_on_a_reused_connection_the_server_closed_costs_no_attempt() {
    let broker = Broker::new("keepalive").await;
    let log = FakeApi::start().await;
    let api = OneShot::start().await;
    let settings = vars(&[
        ("BRIDGE_LOG_API_URL", &log.url()),
        ("BRIDGE_USER_API_URL", &api.url),
        // One attempt: a closed keep-alive connection that cost one would
        // dead-letter the message.
        ("BRIDGE_MAX_ATTEMPTS", "1"),
        ("BRIDGE_HTTP_TIMEOUT_MS", "5000"),
        ("BRIDGE_PREFETCH", "4"),
        ("BRIDGE_SHUTDOWN_GRACE_MS", "5000"),
    ]);
    let worker = Worker::start(&broker, settings).await;

    // In waves, so that every wave after the first finds idle connections
    // in the pool, each already used once.
    let mut ids = HashSet::new();
    for wave in 0..4 {
        ids.extend(
            broker
                .publish_numbered("ka", wave * 10..wave * 10 + 10)
                .await,
        );
        worker.wait_settled(ids.len() as u64).await;
    }
    let metrics = worker.metrics.clone();
    worker.stop().await;

    assert!(
        api.refused.load(Ordering::SeqCst) >= 10,
        "reused connections were closed under the requests: {}",
        api.refused.load(Ordering::SeqCst)
    );
    assert_eq!(metrics.outcome_count(Outcome::DeadLettered), 0);
    assert_eq!(metrics.outcome_count(Outcome::Acked), ids.len() as u64);
    assert_eq!(*api.answered.lock().unwrap(), ids);
    assert_eq!(
        metrics.attempt_count("user-management", AttemptResult::TransientError),
        0
    );
    assert_eq!(
        metrics.attempt_count("user-management", AttemptResult::Success),
        ids.len() as u64,
        "one attempt per message"
    );
    assert!(broker.drain(&broker.dlq).await.is_empty());
}
