//! Wires one worker: metrics, health, the HTTP client, the supervisor and the
//! ops listener. `run` takes a bound listener and a shutdown token, so tests
//! and the `demo` command drive it in-process.

use std::sync::Arc;

use tokio::{net::TcpListener, sync::watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::info;

use crate::{
    broker::BrokerError,
    config::{TargetConfig, WorkerConfig},
    delivery::DeliveryHandler,
    health::Health,
    metrics::Metrics,
    ops,
    supervisor::Supervisor,
};

/// A worker ready to run.
pub struct Worker {
    config: WorkerConfig,
    metrics: Metrics,
    health: Health,
}

impl Worker {
    pub fn new(config: WorkerConfig) -> Self {
        let metrics = Metrics::new();
        let health = Health::new(metrics.clone());
        Worker {
            config,
            metrics,
            health,
        }
    }

    /// The worker's metrics (the `demo` command reads its tally here).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Runs the worker until `shutdown` is cancelled and in-flight messages
    /// are settled (or the grace period is over).
    ///
    /// # Errors
    /// A queue that exists with other arguments at start
    /// ([`BrokerError::QueueMismatch`]), or an HTTP client that cannot be built.
    pub async fn run(
        self,
        ops_listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (pause_tx, pause_rx) = watch::channel(None);
        let handler = Arc::new(DeliveryHandler::new(
            &self.config,
            self.metrics.clone(),
            pause_tx,
        )?);
        info!(
            targets = self.config.targets.len(),
            rate_limit_per_worker = %rate_limits_per_worker(&self.config.targets),
            prefetch = self.config.prefetch,
            "starting; each rate limit holds per worker: N replicas send up to N times it"
        );
        if let Ok(addr) = ops_listener.local_addr() {
            info!(%addr, "serving /metrics, /healthz and /readyz");
        }
        let ops_stop = CancellationToken::new();
        let ops = tokio::spawn(ops::serve(
            ops_listener,
            self.health.clone(),
            self.metrics.clone(),
            ops_stop.clone(),
        ));
        let supervisor = Supervisor {
            broker: self.config.broker.clone(),
            prefetch: self.config.prefetch,
            budget: crate::supervisor::budget::ByteBudget::new(
                self.config.max_in_flight_bytes,
                self.config.prefetch,
            ),
            shutdown_grace: self.config.shutdown_grace,
            handler,
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            pause: pause_rx,
            tracker: TaskTracker::new(),
        };
        let result: Result<(), BrokerError> = supervisor.run(shutdown).await;
        ops_stop.cancel();
        let _ = ops.await;
        result.map_err(anyhow::Error::from)
    }
}

/// Each target's rate limit for the startup line, e.g.
/// `user-management=unlimited, logging=5/s`. The limits are per worker
/// process, not per fleet.
fn rate_limits_per_worker(targets: &[TargetConfig]) -> String {
    targets
        .iter()
        .map(|t| match t.rate_limit {
            Some(n) => format!("{}={n}/s", t.name),
            None => format!("{}=unlimited", t.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_startup_line_names_each_targets_rate_limit() {
        let cfg = crate::config::RawConfig::from_vars([
            (
                "BRIDGE_USER_API_URL".to_owned(),
                "http://127.0.0.1:1/x".to_owned(),
            ),
            (
                "BRIDGE_LOG_API_URL".to_owned(),
                "http://127.0.0.1:1/y".to_owned(),
            ),
            ("BRIDGE_LOG_API_RATE_LIMIT".to_owned(), "5".to_owned()),
        ])
        .worker_config()
        .unwrap();
        assert_eq!(
            rate_limits_per_worker(&cfg.targets),
            "user-management=unlimited, logging=5/s"
        );
    }
}
