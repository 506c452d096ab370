//! The RabbitMQ edge: connections, topology and confirmed publishing. The
//! supervisor that keeps a consumer alive across broker faults sits above it,
//! in [`crate::supervisor`].

pub mod acks;
pub mod confirm_batch;
pub mod dlq_copies;
pub mod dlq_depth;
pub mod dlq_lock;
pub mod dlq_pass;
mod dlq_settle;
pub mod dlq_view;
pub mod fields;
pub mod frame_fit;
pub mod publisher;
pub mod record;
pub mod settlement;
pub mod short_string;
pub mod tool_session;
pub mod topology;
pub mod worker_session;

use std::time::Duration;

use lapin::{
    protocol::{AMQPErrorKind, AMQPSoftError},
    ConnectionProperties, ErrorKind,
};

use tracing::debug;

use crate::config::BrokerConfig;

/// A broker connection, for the commands that hold one (`check`).
pub use lapin::Connection;

/// Bounds every broker call made on the worker's consume path (QoS,
/// consume, cancel, a nack, opening a channel): none may wait for ever on a
/// broker that stopped answering.
pub const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one connection attempt may take before it counts as failed (an
/// unreachable host can otherwise hang for the OS's TCP timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker-side failure, typed where callers branch on it.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A queue exists with other arguments (PRECONDITION_FAILED): a
    /// configuration error at start, retried after a reconnect.
    #[error(
        "queue {queue:?} already exists with other arguments ({detail}); \
         delete it or set BRIDGE_QUEUE_TYPE to match it"
    )]
    QueueMismatch { queue: String, detail: String },
    /// A queue that a passive declare expected does not exist.
    #[error("queue {0:?} does not exist")]
    QueueMissing(String),
    #[error("{context}: {source}")]
    Amqp {
        context: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("{0} timed out")]
    Timeout(&'static str),
}

impl BrokerError {
    pub fn amqp(context: &'static str) -> impl FnOnce(lapin::Error) -> BrokerError {
        move |source| BrokerError::Amqp { context, source }
    }

    /// True for errors that are the operator's to fix, not the network's.
    pub fn is_configuration(&self) -> bool {
        matches!(self, BrokerError::QueueMismatch { .. })
    }
}

/// True when the broker answered PRECONDITION_FAILED.
pub fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(err)
        if matches!(err.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

/// True when the broker answered RESOURCE_LOCKED (an exclusive queue of
/// another connection).
pub fn is_resource_locked(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(err)
        if matches!(err.kind(), AMQPErrorKind::Soft(AMQPSoftError::RESOURCELOCKED)))
}

/// True when the broker answered NOT_FOUND.
pub fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(err)
        if matches!(err.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

/// A channel of its own on `conn` (for a passive declare that may close it),
/// if one opens within [`BROKER_CALL_TIMEOUT`].
pub async fn open_channel(conn: &Connection) -> Option<lapin::Channel> {
    tokio::time::timeout(BROKER_CALL_TIMEOUT, conn.create_channel())
        .await
        .ok()
        .and_then(Result::ok)
}

/// A connection and the node (`host:port`) it reached.
pub struct Connected {
    pub conn: Connection,
    /// Index into [`BrokerConfig::nodes`].
    pub index: usize,
    pub node: String,
}

/// A random node to start at, so replicas spread over a cluster's nodes.
pub fn random_node(cfg: &BrokerConfig) -> usize {
    rand::Rng::random_range(&mut rand::rng(), 0..cfg.nodes.len().max(1))
}

/// Opens a connection named after its role (visible in the management UI),
/// trying each node once, from a random one on.
///
/// # Errors
/// When no node can be reached or accepts us within [`CONNECT_TIMEOUT`].
pub async fn connect(cfg: &BrokerConfig, role: &str) -> Result<Connection, BrokerError> {
    connect_from(cfg, random_node(cfg), role)
        .await
        .map(|c| c.conn)
}

/// Tries the nodes in turn, starting at `start`, one round; returns the first
/// connection made, or the last error.
///
/// # Errors
/// When no node can be reached.
pub async fn connect_from(
    cfg: &BrokerConfig,
    start: usize,
    role: &str,
) -> Result<Connected, BrokerError> {
    let n = cfg.nodes.len();
    let mut last = BrokerError::Timeout("connecting to the broker (no node configured)");
    for i in 0..n {
        let index = (start + i) % n;
        match connect_node(cfg, index, role).await {
            Ok(conn) => {
                return Ok(Connected {
                    conn,
                    index,
                    node: cfg.nodes[index].node(),
                })
            }
            Err(e) => {
                // The node's address, never its URL: that holds the password.
                debug!(node = %cfg.nodes[index].node(), error = %e, "broker node unreachable");
                last = e;
            }
        }
    }
    Err(last)
}

/// Connects to one node of the list.
///
/// # Errors
/// When it cannot be reached or refuses us within [`CONNECT_TIMEOUT`].
pub async fn connect_node(
    cfg: &BrokerConfig,
    index: usize,
    role: &str,
) -> Result<Connection, BrokerError> {
    let Some(uri) = cfg.nodes.get(index) else {
        return Err(BrokerError::Timeout(
            "connecting to the broker (no such node)",
        ));
    };
    let props = ConnectionProperties::default()
        .with_connection_name(format!("fanout-bridge {role} (pid {})", std::process::id()).into());
    // TLS: extra CAs and the client certificate (src/tls.rs); ignored by
    // lapin for `amqp://`.
    let runtime =
        lapin::runtime::default_runtime().map_err(BrokerError::amqp("connecting to the broker"))?;
    let connect =
        Connection::connect_uri_with_config(uri.0.clone(), props, cfg.tls.amqp(), runtime);
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| BrokerError::Timeout("connecting to the broker"))?
        .map_err(BrokerError::amqp("connecting to the broker"))
}

/// Closes a channel before its connection: a channel dropped while its
/// connection closes makes lapin log a spurious connection error.
pub async fn close_channel(channel: &lapin::Channel) {
    if channel.status().connected() {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            channel.close(200, "fanout-bridge closing".into()),
        )
        .await;
    }
}

/// Closes a connection, ignoring a connection that is already gone.
pub async fn close(conn: &Connection) {
    if conn.status().connected() {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            conn.close(200, "fanout-bridge closing".into()),
        )
        .await;
    }
}
