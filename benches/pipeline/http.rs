//! HTTP on loopback: polling the children's `/readyz`, `/healthz` and
//! `/metrics` with reqwest.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

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
