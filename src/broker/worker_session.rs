//! One generation of broker connections on one node: the consuming
//! connection and channel, and the publishing connection with its confirmed
//! publisher, opened together and closed together.

use std::{sync::Arc, time::Duration};

pub use lapin::{message::Delivery, Channel, Consumer};
use lapin::{
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
    Connection,
};
use tokio_util::sync::CancellationToken;

use super::{
    acks::Acks, close, close_channel, connect_from, connect_node, publisher::Publisher, topology,
    BrokerError, BROKER_CALL_TIMEOUT,
};
use crate::config::BrokerConfig;

/// Bounds opening a session (connect, declare, QoS, publisher).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the worker waits for the confirm of a dead-letter or hold
/// republish (the commands wait longer: `broker::tool_session`'s
/// `CONFIRM_TIMEOUT`, 30 s).
const WORKER_CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// One generation of broker connections, on one node.
pub struct WorkerSession {
    pub consume_conn: Connection,
    pub channel: Channel,
    /// The prefetch (`basic.qos`) the channel's next consumer gets.
    pub qos: u16,
    /// The consuming channel's acks, coalesced.
    pub acks: Acks,
    pub publish_conn: Arc<Connection>,
    pub publisher: Arc<Publisher>,
    /// Index into the configured nodes, and its `host:port`.
    pub index: usize,
    pub node: String,
    /// Cancelled when the session ends: every delivery task of it abandons
    /// its work (their acks could no longer be sent, and the redelivered
    /// copies are about to be processed again), and the DLQ-depth task stops.
    pub token: CancellationToken,
    pub depth_task: Option<tokio::task::JoinHandle<()>>,
}

async fn within<T>(
    what: &'static str,
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| BrokerError::Timeout(what))?
}

impl WorkerSession {
    /// Connects to the first node that answers, from `start` on, and opens
    /// everything else on that same node.
    pub async fn open(
        cfg: &BrokerConfig,
        prefetch: u16,
        start: usize,
    ) -> Result<WorkerSession, BrokerError> {
        let connected = connect_from(cfg, start, "consumer").await?;
        let (consume_conn, index, node) = (connected.conn, connected.index, connected.node);
        let rest = within("opening the session", OPEN_TIMEOUT, async {
            let channel = consume_conn
                .create_channel()
                .await
                .map_err(BrokerError::amqp("opening the consuming channel"))?;
            topology::declare_all(&channel, cfg).await?;
            channel
                .basic_qos(prefetch, BasicQosOptions { global: false })
                .await
                .map_err(BrokerError::amqp("setting the prefetch"))?;
            let publish_conn = Arc::new(connect_node(cfg, index, "publisher").await?);
            match Publisher::pooled(
                Arc::clone(&publish_conn),
                cfg.clone(),
                WORKER_CONFIRM_TIMEOUT,
            )
            .await
            {
                Ok(p) => Ok((channel, publish_conn, p)),
                Err(e) => {
                    close(&publish_conn).await;
                    Err(e)
                }
            }
        })
        .await;
        match rest {
            Ok((channel, publish_conn, publisher)) => {
                let token = CancellationToken::new();
                Ok(WorkerSession {
                    consume_conn,
                    qos: prefetch,
                    acks: Acks::new(channel.clone(), token.clone()),
                    channel,
                    publish_conn,
                    publisher: Arc::new(publisher),
                    index,
                    node,
                    token,
                    depth_task: None,
                })
            }
            Err(e) => {
                close(&consume_conn).await;
                Err(e)
            }
        }
    }

    /// Why this session can no longer be used, if it cannot.
    pub fn fault(&self) -> Option<&'static str> {
        if !self.consume_conn.status().connected() {
            Some("the consuming connection was lost")
        } else if !self.channel.status().connected() {
            Some("the broker closed the consuming channel")
        } else if !self.publish_conn.status().connected() {
            Some("the publishing connection was lost")
        } else if !self.publisher.is_open() {
            Some("the broker closed the publishing channel")
        } else {
            None
        }
    }

    /// Sets the prefetch the channel's next consumer gets (RabbitMQ applies
    /// `basic.qos` with `global=false` to consumers started after it).
    ///
    /// # Errors
    /// A line saying why, when the broker refused or did not answer.
    pub async fn set_prefetch(&mut self, prefetch: u16) -> Result<(), String> {
        let qos = self
            .channel
            .basic_qos(prefetch, BasicQosOptions { global: false });
        match tokio::time::timeout(BROKER_CALL_TIMEOUT, qos).await {
            Ok(Ok(())) => {
                self.qos = prefetch;
                Ok(())
            }
            Ok(Err(e)) => Err(format!("cannot set the prefetch: {e}")),
            Err(_) => Err("setting the prefetch timed out".into()),
        }
    }

    /// Starts a consumer of `queue` with a fresh tag.
    ///
    /// # Errors
    /// A line saying why, when the broker refused or did not answer.
    pub async fn consume(&self, queue: &str) -> Result<Consumer, String> {
        let tag = format!(
            "fanout-bridge-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let consumed = tokio::time::timeout(
            BROKER_CALL_TIMEOUT,
            self.channel.basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await;
        match consumed {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(format!("cannot consume from {queue:?}: {e}")),
            Err(_) => Err(format!("consuming from {queue:?} timed out")),
        }
    }

    /// Cancels `consumer`: the broker sends it nothing more (its stream ends
    /// after what was sent before the cancel-ok).
    ///
    /// # Errors
    /// A line saying why, when the broker refused or did not answer.
    pub async fn cancel(&self, consumer: &Consumer) -> Result<(), String> {
        let cancel = self
            .channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default());
        match tokio::time::timeout(BROKER_CALL_TIMEOUT, cancel).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot cancel the consumer: {e}")),
            Err(_) => Err("cancelling the consumer timed out".into()),
        }
    }

    pub async fn close(&mut self) {
        self.token.cancel();
        if let Some(task) = self.depth_task.take() {
            let _ = tokio::time::timeout(BROKER_CALL_TIMEOUT, task).await;
        }
        self.publisher.close_pool().await;
        close_channel(self.publisher.channel()).await;
        close_channel(&self.channel).await;
        close(&self.consume_conn).await;
        close(&self.publish_conn).await;
    }
}
