//! The two durable queues, declared the same way by every command.

use lapin::{
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable, LongString, ShortString},
    Channel,
};

use super::{is_not_found, is_precondition_failed, BrokerError};
use crate::config::{BrokerConfig, QueueType};

fn arguments(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    if queue_type == QueueType::Quorum {
        args.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(LongString::from("quorum")),
        );
    }
    args
}

/// Declares one queue durable with the configured type; returns its depth.
///
/// # Errors
/// [`BrokerError::QueueMismatch`] when it exists with other arguments (the
/// channel is then closed by the broker).
pub async fn declare(
    channel: &Channel,
    queue: &str,
    queue_type: QueueType,
) -> Result<u32, BrokerError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, arguments(queue_type))
        .await
        .map(|q| q.message_count())
        .map_err(|e| {
            if is_precondition_failed(&e) {
                BrokerError::QueueMismatch {
                    queue: queue.to_owned(),
                    detail: e.to_string(),
                }
            } else {
                BrokerError::Amqp {
                    context: "declaring a queue",
                    source: e,
                }
            }
        })
}

/// Declares the inbound queue and the DLQ.
///
/// # Errors
/// As [`declare`].
pub async fn declare_all(channel: &Channel, cfg: &BrokerConfig) -> Result<(), BrokerError> {
    declare(channel, &cfg.queue, cfg.queue_type).await?;
    declare(channel, &cfg.dlq, cfg.queue_type).await?;
    Ok(())
}

/// The depth of an existing queue, without creating it (passive declare).
///
/// # Errors
/// [`BrokerError::QueueMissing`] when it does not exist (the channel is then
/// closed by the broker).
pub async fn depth(channel: &Channel, queue: &str) -> Result<u32, BrokerError> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .map(|q| q.message_count())
        .map_err(|e| {
            if is_not_found(&e) {
                BrokerError::QueueMissing(queue.to_owned())
            } else {
                BrokerError::Amqp {
                    context: "inspecting a queue",
                    source: e,
                }
            }
        })
}
