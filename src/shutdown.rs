//! Deciding when to stop: SIGTERM (what Kubernetes and `docker stop` send) or
//! SIGINT (Ctrl-C) starts a graceful drain; a second one exits at once.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A token cancelled on the first SIGTERM or SIGINT. On the second, the
/// process exits with code 1 without waiting: unacked messages are then
/// redelivered by the broker.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down gracefully (a second signal exits at once)"),
            _ = int.recv() => info!("SIGINT: shutting down gracefully (a second signal exits at once)"),
        }
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        warn!("second signal: exiting now; unfinished messages will be redelivered");
        std::process::exit(1);
    });
    Ok(token)
}
