//! Confirmed, mandatory publishing: a publish counts only when the broker
//! acked it and did not return it as unroutable.

use std::{sync::Arc, time::Duration};

use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    BasicProperties, Channel, Confirmation, Connection, PublisherConfirm,
};
use tracing::warn;

use super::BrokerError;
use crate::config::BrokerConfig;

/// Why a publish is not confirmed. Every variant means "not stored": the
/// caller keeps the original.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker nacked the publish")]
    Nacked,
    #[error("the broker returned it as unroutable ({0}); does the queue exist?")]
    Returned(String),
    #[error("no confirm within {0:?} (is the broker blocking publishers?)")]
    Timeout(Duration),
    #[error("publishing failed: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("no publishing channel: {0}")]
    Channel(String),
}

/// A channel in confirm mode on a connection of its own: a broker under a
/// resource alarm blocks publishing connections, and that must not stall the
/// consuming connection's acks.
///
/// lapin does not tie a `basic.return` to its publish: it queues returns per
/// channel and hands the oldest to whichever confirm it resolves next (and a
/// multiple-ack resolves several confirms in hash order). With several
/// publishes in flight on one channel, an unroutable publish can be reported
/// as stored and a routable one as returned. So [`Publisher::publish`] has one
/// publish in flight per channel: it borrows an idle confirm channel from a
/// pool (opening one when none is idle, at most [`MAX_CHANNELS`]), and only a
/// channel whose last publish completed cleanly goes back. Without a connection to open channels on (the CLI
/// tools), publishes on the one channel are serialised instead.
#[derive(Debug)]
pub struct Publisher {
    channel: Channel,
    confirm_timeout: Duration,
    /// Set for the worker: where pooled channels are opened.
    conn: Option<Arc<Connection>>,
    idle: std::sync::Mutex<Vec<Channel>>,
    /// Bounds the pooled channels open at once.
    channels: tokio::sync::Semaphore,
    /// One publish at a time on `channel` when there is no pool.
    serial: tokio::sync::Mutex<()>,
    /// The worker's topology, to declare the DLQ again when it was deleted.
    topology: Option<BrokerConfig>,
    /// The connection's negotiated frame size: no header frame may exceed it.
    frame_max: u32,
}

/// At most this many pooled channels (publishes in flight) at once: far
/// below a broker's channel_max (RabbitMQ: 2047), and far above what
/// dead-lettering needs; a publish beyond it waits for a channel.
const MAX_CHANNELS: usize = 128;

impl Publisher {
    /// # Errors
    /// When the channel cannot be opened or put in confirm mode.
    pub async fn open(conn: &Connection, confirm_timeout: Duration) -> Result<Self, BrokerError> {
        let channel = confirm_channel(conn, confirm_timeout).await?;
        Ok(Publisher {
            channel,
            confirm_timeout,
            conn: None,
            idle: std::sync::Mutex::default(),
            channels: tokio::sync::Semaphore::new(MAX_CHANNELS),
            serial: tokio::sync::Mutex::default(),
            topology: None,
            frame_max: conn.configuration().frame_max(),
        })
    }

    /// The worker's publisher: a pool of confirm channels on `conn`, and the
    /// topology to re-declare the DLQ from.
    ///
    /// # Errors
    /// When the first channel cannot be opened or put in confirm mode.
    pub async fn pooled(
        conn: Arc<Connection>,
        topology: BrokerConfig,
        confirm_timeout: Duration,
    ) -> Result<Self, BrokerError> {
        let channel = confirm_channel(&conn, confirm_timeout).await?;
        let frame_max = conn.configuration().frame_max();
        Ok(Publisher {
            channel,
            confirm_timeout,
            conn: Some(conn),
            idle: std::sync::Mutex::default(),
            channels: tokio::sync::Semaphore::new(MAX_CHANNELS),
            serial: tokio::sync::Mutex::default(),
            topology: Some(topology),
            frame_max,
        })
    }

    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
            && self.conn.as_ref().is_none_or(|c| c.status().connected())
    }

    /// The publishing connection's negotiated frame size (0: no limit).
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Closes the pooled channels (the main one is the caller's to close).
    pub async fn close_pool(&self) {
        let idle = std::mem::take(&mut *lock(&self.idle));
        for channel in idle {
            super::close_channel(&channel).await;
        }
    }

    /// Publishes to `queue` through the default exchange, `mandatory`, and
    /// waits for the confirm, on a channel with no other publish in flight.
    ///
    /// # Errors
    /// See [`PublishError`]; in every case the message may not be stored.
    pub async fn publish(
        &self,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), PublishError> {
        let Some(conn) = &self.conn else {
            let _one_at_a_time = self.serial.lock().await;
            let confirm = self.send(queue, body, props).await?;
            return self.confirmed(confirm).await;
        };
        // Closed only when the Publisher is dropped, so this cannot fail
        // while it is in use.
        let Ok(_permit) = self.channels.acquire().await else {
            return Err(PublishError::Channel("the publisher is closed".into()));
        };
        let pooled = lock(&self.idle).pop();
        let channel = match pooled {
            Some(c) if c.status().connected() => c,
            _ => confirm_channel(conn, self.confirm_timeout)
                .await
                .map_err(|e| PublishError::Channel(e.to_string()))?,
        };
        let result = async {
            let confirm = send_on(&channel, queue, body, props, self.confirm_timeout).await?;
            self.confirmed(confirm).await
        }
        .await;
        // Only a channel with nothing outstanding may serve the next publish:
        // after a timeout its late confirm (or return) would be taken for the
        // next one's.
        let clean = matches!(
            result,
            Ok(()) | Err(PublishError::Returned(_) | PublishError::Nacked)
        );
        let mut idle = lock(&self.idle);
        if clean && channel.status().connected() {
            idle.push(channel);
        } else {
            drop(idle);
            tokio::spawn(async move { super::close_channel(&channel).await });
        }
        result
    }

    /// Publishes a dead-lettered copy to the DLQ; if it comes back unroutable
    /// (the DLQ was deleted under the worker), declares the DLQ again and
    /// publishes once more, so the message goes to the DLQ rather than
    /// round the inbound queue.
    ///
    /// # Errors
    /// See [`PublishError`].
    pub async fn publish_dead_letter(
        &self,
        dlq: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), PublishError> {
        match self.publish(dlq, body, props.clone()).await {
            Err(PublishError::Returned(why)) => {
                let (Some(conn), Some(topology)) = (&self.conn, &self.topology) else {
                    return Err(PublishError::Returned(why));
                };
                warn!(%dlq, "the DLQ is gone (publish returned unroutable); declaring it again");
                redeclare_dlq(conn, topology, self.confirm_timeout).await?;
                self.publish(dlq, body, props).await
            }
            other => other,
        }
    }

    /// Sends without waiting for the confirm, for callers that pipeline many
    /// publishes; pass the result to [`Publisher::confirmed`].
    ///
    /// Pipelined publishes share one channel, so a `basic.return` may be
    /// reported on another publish of the same batch (see [`Publisher`]):
    /// the number of returned publishes is right, which ones is not. A
    /// caller that acts per message on the result (remove this one from the
    /// DLQ) should use [`Publisher::publish`] instead.
    ///
    /// # Errors
    /// When the publish could not be sent.
    pub async fn send(
        &self,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<PublisherConfirm, PublishError> {
        send_on(&self.channel, queue, body, props, self.confirm_timeout).await
    }

    /// Waits for the confirm of a publish made with [`Publisher::send`].
    ///
    /// # Errors
    /// See [`PublishError`].
    pub async fn confirmed(&self, confirm: PublisherConfirm) -> Result<(), PublishError> {
        let confirmation = tokio::time::timeout(self.confirm_timeout, confirm)
            .await
            .map_err(|_| PublishError::Timeout(self.confirm_timeout))??;
        check(confirmation)
    }
}

async fn send_on(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    props: BasicProperties,
    timeout: Duration,
) -> Result<PublisherConfirm, PublishError> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let send = channel.basic_publish("".into(), queue.into(), options, body, props);
    Ok(tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| PublishError::Timeout(timeout))??)
}

async fn confirm_channel(conn: &Connection, timeout: Duration) -> Result<Channel, BrokerError> {
    let open = async {
        let channel = conn
            .create_channel()
            .await
            .map_err(BrokerError::amqp("opening the publishing channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(BrokerError::amqp("enabling publisher confirms"))?;
        Ok(channel)
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| BrokerError::Timeout("opening a publishing channel"))?
}

/// Declares the DLQ on a channel of its own: a failed declare closes its
/// channel, which must not be a publishing one.
async fn redeclare_dlq(
    conn: &Connection,
    topology: &BrokerConfig,
    timeout: Duration,
) -> Result<(), PublishError> {
    let declare = async {
        let channel = conn
            .create_channel()
            .await
            .map_err(BrokerError::amqp("opening a channel"))?;
        let declared = super::topology::declare_dlq(&channel, topology).await;
        super::close_channel(&channel).await;
        declared.map(|_| ())
    };
    match tokio::time::timeout(timeout, declare).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(PublishError::Channel(format!(
            "declaring the DLQ again: {e}"
        ))),
        Err(_) => Err(PublishError::Timeout(timeout)),
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The pool holds plain channels; a panic elsewhere cannot leave it
    // inconsistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn check(confirmation: Confirmation) -> Result<(), PublishError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => {
            Err(PublishError::Returned(returned.reply_text.to_string()))
        }
        Confirmation::Nack(_) => Err(PublishError::Nacked),
        // Only reachable if confirm_select was skipped: not a confirm.
        Confirmation::NotRequested => Err(PublishError::Nacked),
    }
}
