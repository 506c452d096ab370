//! One way for the short-lived commands (`publish`, `dlq …`) to talk to the
//! broker: a connection named after the command, one channel for gets, acks
//! and declares, and a confirm-mode publisher on the same connection, all
//! closed in order when the command is done.
//!
//! Unlike the worker, a command may publish and ack on one connection: it
//! never competes with a consumer's acks, and a broker blocking publishers
//! simply makes the command wait (each confirm has [`CONFIRM_TIMEOUT`]).
//!
//! The commands pipeline their publishes on the publisher's one channel (so
//! copies keep their order) and learn which publish came back from
//! [`super::confirm_batch`]; this is the only definition of the commands'
//! confirm timeout.

use std::time::Duration;

use anyhow::Context;
use lapin::{Channel, Connection};

use super::publisher::Publisher;
use crate::{broker, config::BrokerConfig};

/// How long a command waits for one publish to be confirmed before it counts
/// as not stored (the original then stays where it was).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// An open connection with a working channel and a confirming publisher.
pub struct ToolSession {
    conn: Connection,
    /// For gets, acks, nacks and queue declares.
    pub channel: Channel,
    /// Confirm mode, `mandatory` publishes through the default exchange;
    /// pipelined with [`Publisher::send`], settled with
    /// [`super::confirm_batch::outcomes`].
    pub publisher: Publisher,
}

impl ToolSession {
    /// Connects (through [`broker::connect`], which knows the URL list, TLS
    /// and timeouts) and opens both channels.
    ///
    /// # Errors
    /// When the broker cannot be reached or refuses a channel.
    pub async fn open(broker_cfg: &BrokerConfig, role: &str) -> anyhow::Result<ToolSession> {
        let conn = broker::connect(broker_cfg, role).await?;
        let channels = async {
            let channel = conn.create_channel().await.context("opening a channel")?;
            let publisher = Publisher::open(&conn, CONFIRM_TIMEOUT).await?;
            anyhow::Ok((channel, publisher))
        }
        .await;
        match channels {
            Ok((channel, publisher)) => Ok(ToolSession {
                conn,
                channel,
                publisher,
            }),
            Err(e) => {
                broker::close(&conn).await;
                Err(e)
            }
        }
    }

    /// A channel of its own for a call that may make the broker close it
    /// (a passive declare of a missing queue), sparing [`ToolSession::channel`].
    ///
    /// # Errors
    /// When the broker refuses a channel.
    pub async fn scratch_channel(&self) -> anyhow::Result<Channel> {
        self.conn
            .create_channel()
            .await
            .context("opening a channel")
    }

    /// Replaces the publisher with one on a fresh channel, closing the old
    /// one: after a confirm timed out, a late confirm or return on the old
    /// channel could be taken for a later publish's.
    ///
    /// # Errors
    /// When the broker refuses a channel.
    pub async fn renew_publisher(&mut self) -> anyhow::Result<()> {
        let fresh = Publisher::open(&self.conn, CONFIRM_TIMEOUT).await?;
        let old = std::mem::replace(&mut self.publisher, fresh);
        broker::close_channel(old.channel()).await;
        Ok(())
    }

    /// Closes the channels, then the connection. Unacked gets still held on
    /// the channel go back to their queue.
    pub async fn close(self) {
        broker::close_channel(self.publisher.channel()).await;
        broker::close_channel(&self.channel).await;
        broker::close(&self.conn).await;
    }
}
