//! Readiness: whether the worker is connected to the broker and consuming.
//! The supervisor writes it; the ops listener (`/readyz`) reads it. Neither
//! edge knows the other: both know this.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

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
