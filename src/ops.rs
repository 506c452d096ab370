//! The operator's HTTP listener: `/metrics`, `/healthz`, `/readyz`.
//!
//! The listener is bound by the caller and passed in, so tests bind port 0.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Whether the worker is connected and consuming. The supervisor writes it;
/// `/readyz` and `bridge_broker_connected` read it.
#[derive(Clone, Debug)]
pub struct Health {
    connected: Arc<AtomicBool>,
    consuming: Arc<AtomicBool>,
    metrics: Metrics,
}

impl Health {
    pub fn new(metrics: Metrics) -> Self {
        Health {
            connected: Arc::default(),
            consuming: Arc::default(),
            metrics,
        }
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
        self.metrics.broker_connected.set(i64::from(connected));
        if !connected {
            self.set_consuming(false);
        }
    }

    /// Consuming includes a `hold` pause; it ends when the broker goes away or
    /// the worker starts draining for shutdown.
    pub fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.connected.load(Ordering::Acquire) && self.consuming.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct OpsState {
    health: Health,
    metrics: Metrics,
}

/// The router, separate from serving so tests can call it directly.
pub fn router(health: Health, metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(OpsState { health, metrics })
}

async fn metrics_text(State(state): State<OpsState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves until `stop` is cancelled.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    metrics: Metrics,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(health, metrics))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
