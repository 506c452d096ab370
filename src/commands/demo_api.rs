//! `fanout-bridge demo-api`: a stand-in for both downstream APIs. It accepts a
//! POST on any path and answers 200, or 503 for a fraction of requests, after
//! an optional delay.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::Context;
use axum::{
    http::{Method, StatusCode},
    routing::get,
    Router,
};
use rand::Rng;
use tokio::net::TcpListener;
use tracing::info;

/// How the stand-in behaves.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    pub latency: Duration,
    /// Fraction of requests answered 503.
    pub fail_rate: f64,
}

/// The stand-in's routes: `GET /healthz`, and a POST on any path.
pub fn router(behaviour: Behaviour) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(move |method: Method| answer(method, behaviour))
}

async fn answer(method: Method, b: Behaviour) -> (StatusCode, &'static str) {
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
    }
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    if b.fail_rate > 0.0 && rand::rng().random_bool(b.fail_rate) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"error\":\"unavailable (demo)\"}",
        )
    } else {
        (StatusCode::OK, "{\"status\":\"accepted\"}")
    }
}

/// Serves on `listener` until the future `stop` resolves.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    behaviour: Behaviour,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(behaviour))
        .with_graceful_shutdown(stop)
        .await
}

/// # Errors
/// When the address cannot be bound.
pub async fn run(listen: SocketAddr, latency_ms: u64, fail_rate: f64) -> anyhow::Result<ExitCode> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    info!(addr = %listener.local_addr()?, latency_ms, fail_rate, "demo API listening (POST on any path)");
    let stop = crate::shutdown::on_signal().context("installing signal handlers")?;
    let behaviour = Behaviour {
        latency: Duration::from_millis(latency_ms),
        fail_rate,
    };
    serve(listener, behaviour, async move { stop.cancelled().await }).await?;
    Ok(ExitCode::SUCCESS)
}
