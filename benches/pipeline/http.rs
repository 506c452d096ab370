//! HTTP on loopback: polling the children's `/readyz`, `/healthz` and
//! `/metrics` with reqwest, and a tiny OTLP/HTTP receiver for the
//! OpenTelemetry scenario.

use std::{
    fs,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{body::Bytes, extract::State, http::header, routing::post, Router};
use tokio::runtime::Handle;

use crate::{process::ChildGuard, Res};

/// A blocking GET on loopback for the benchmark's synchronous loop. No
/// connection pool: every request opens one TCP connection, so the run's
/// `ActiveOpens` count can subtract exactly one per poll.
pub struct Http {
    client: reqwest::Client,
    rt: Handle,
}

impl Http {
    pub fn new(rt: Handle) -> Http {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(3))
            .build()
            .expect("building the benchmark's HTTP client");
        Http { client, rt }
    }

    /// (status, body) of `GET http://127.0.0.1:{port}{path}`.
    pub fn get(&self, port: u16, path: &str) -> Res<(u16, String)> {
        let url = format!("http://127.0.0.1:{port}{path}");
        self.rt.block_on(async {
            let resp = self
                .client
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = resp.status().as_u16();
            let text = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
            Ok((status, text))
        })
    }

    /// Polls `path` every `every` until it answers 200; fails when the child
    /// exits first or after `limit`.
    pub fn wait_ok(
        &self,
        port: u16,
        path: &str,
        every: Duration,
        limit: Duration,
        child: &mut ChildGuard,
        log: &Path,
    ) -> Res<()> {
        let deadline = Instant::now() + limit;
        loop {
            if matches!(self.get(port, path), Ok((200, _))) {
                return Ok(());
            }
            if let Some(status) = child.exited() {
                return Err(format!(
                    "{} exited ({status}) before {path} answered 200:\n{}",
                    child.name,
                    tail(log)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not answer 200 on {path} within {limit:?}:\n{}",
                    child.name,
                    tail(log)
                ));
            }
            std::thread::sleep(every);
        }
    }
}

/// The last 15 lines of a log.
pub fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A worker metric value (`bridge_messages_total{outcome="…"}`).
pub fn metric(text: &str, outcome: &str) -> u64 {
    let key = format!("bridge_messages_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A plain (unlabelled) metric value, e.g. `bridge_messages_in_flight`.
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    let key = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// What the OTLP receiver has been sent so far.
#[derive(Clone, Copy, Default, PartialEq)]
pub struct OtlpCount {
    pub posts: u64,
    pub bytes: u64,
}

impl std::ops::Sub for OtlpCount {
    type Output = OtlpCount;
    fn sub(self, o: OtlpCount) -> OtlpCount {
        OtlpCount {
            posts: self.posts.saturating_sub(o.posts),
            bytes: self.bytes.saturating_sub(o.bytes),
        }
    }
}

#[derive(Default)]
struct Counters {
    posts: AtomicU64,
    bytes: AtomicU64,
}

/// An OTLP/HTTP collector stand-in on the benchmark's runtime: `POST
/// /v1/traces` answers 200 with an empty (valid protobuf) export response
/// and counts requests and bytes; nothing is decoded. Its CPU shows in the
/// "bench" column.
pub struct OtlpReceiver {
    pub port: u16,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    pub fn start(rt: &Handle) -> Res<OtlpReceiver> {
        let counters = Arc::new(Counters::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| format!("OTLP receiver: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
            .with_state(Arc::clone(&counters));
        let task = rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(OtlpReceiver {
            port,
            counters,
            task,
        })
    }

    /// The value of `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporter appends
    /// `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn count(&self) -> OtlpCount {
        OtlpCount {
            posts: self.counters.posts.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(c): State<Arc<Counters>>,
    body: Bytes,
) -> ([(header::HeaderName, &'static str); 1], Bytes) {
    c.posts.fetch_add(1, Ordering::Relaxed);
    c.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        Bytes::new(),
    )
}
