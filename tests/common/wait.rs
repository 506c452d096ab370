//! Condition waits, shared by the test binaries (`tests/it` and
//! `tests/cluster.rs`) through `#[path]`.

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// Polls `cond` every `every` until it is true, or panics with `what` after
/// `timeout`.
pub async fn poll_until<F, Fut>(what: &str, timeout: Duration, every: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(every).await;
    }
}
