//! Confirmed, mandatory publishing: a publish counts only when the broker
//! acked it and did not return it as unroutable.

use std::time::Duration;

use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    BasicProperties, Channel, Confirmation, Connection, PublisherConfirm,
};

use super::BrokerError;

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
}

/// A channel in confirm mode on a connection of its own: a broker under a
/// resource alarm blocks publishing connections, and that must not stall the
/// consuming connection's acks.
#[derive(Debug)]
pub struct Publisher {
    channel: Channel,
    confirm_timeout: Duration,
}

impl Publisher {
    /// # Errors
    /// When the channel cannot be opened or put in confirm mode.
    pub async fn open(conn: &Connection, confirm_timeout: Duration) -> Result<Self, BrokerError> {
        let channel = conn
            .create_channel()
            .await
            .map_err(BrokerError::amqp("opening the publishing channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(BrokerError::amqp("enabling publisher confirms"))?;
        Ok(Publisher {
            channel,
            confirm_timeout,
        })
    }

    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes to `queue` through the default exchange, `mandatory`, and
    /// waits for the confirm.
    ///
    /// # Errors
    /// See [`PublishError`]; in every case the message may not be stored.
    pub async fn publish(
        &self,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), PublishError> {
        let confirm = self.send(queue, body, props).await?;
        self.confirmed(confirm).await
    }

    /// Sends without waiting for the confirm, for callers that pipeline many
    /// publishes; pass the result to [`Publisher::confirmed`].
    ///
    /// # Errors
    /// When the publish could not be sent.
    pub async fn send(
        &self,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<PublisherConfirm, PublishError> {
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let send = self
            .channel
            .basic_publish("".into(), queue.into(), options, body, props);
        Ok(tokio::time::timeout(self.confirm_timeout, send)
            .await
            .map_err(|_| PublishError::Timeout(self.confirm_timeout))??)
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
