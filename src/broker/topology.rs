//! The two durable queues, declared the same way by every command.

use lapin::{
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable, LongString, ShortString},
    Channel,
};

use super::{is_not_found, is_precondition_failed, BrokerError};
use crate::config::{BrokerConfig, QueueType};

/// Which of the two queues is declared: their arguments differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role<'a> {
    /// The inbound queue, naming the DLQ its broker-side dead-letter target.
    Inbound {
        dlq: &'a str,
    },
    Dlq,
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Classic: no arguments. Quorum: the DLQ is only quorum; the inbound queue
/// also dead-letters to the DLQ, at least once, so a message past the
/// broker's delivery limit (RabbitMQ 4: 20 by default, or a policy's) lands
/// in the DLQ instead of being dropped. at-least-once needs reject-publish.
pub fn arguments(queue_type: QueueType, role: Role<'_>) -> FieldTable {
    let mut args = FieldTable::default();
    if queue_type == QueueType::Quorum {
        args.insert(ShortString::from("x-queue-type"), long("quorum"));
        if let Role::Inbound { dlq } = role {
            args.insert(ShortString::from("x-dead-letter-exchange"), long(""));
            args.insert(ShortString::from("x-dead-letter-routing-key"), long(dlq));
            args.insert(
                ShortString::from("x-dead-letter-strategy"),
                long("at-least-once"),
            );
            args.insert(ShortString::from("x-overflow"), long("reject-publish"));
        }
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
    role: Role<'_>,
) -> Result<u32, BrokerError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, arguments(queue_type, role))
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
    // The DLQ first: the inbound queue names it as its dead-letter target.
    declare_dlq(channel, cfg).await?;
    declare_inbound(channel, cfg).await?;
    Ok(())
}

/// Declares the inbound queue alone.
///
/// # Errors
/// As [`declare`].
pub async fn declare_inbound(channel: &Channel, cfg: &BrokerConfig) -> Result<u32, BrokerError> {
    declare(
        channel,
        &cfg.queue,
        cfg.queue_type,
        Role::Inbound { dlq: &cfg.dlq },
    )
    .await
}

/// Declares the DLQ alone (again, after a publish to it came back
/// unroutable).
///
/// # Errors
/// As [`declare`].
pub async fn declare_dlq(channel: &Channel, cfg: &BrokerConfig) -> Result<u32, BrokerError> {
    declare(channel, &cfg.dlq, cfg.queue_type, Role::Dlq).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn text(args: &FieldTable) -> Vec<(String, String)> {
        args.inner()
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    AMQPValue::LongString(s) => s.to_string(),
                    other => format!("{other:?}"),
                };
                (k.to_string(), v)
            })
            .collect()
    }

    #[test]
    fn arguments_per_type_and_role() {
        assert!(text(&arguments(QueueType::Classic, Role::Dlq)).is_empty());
        assert!(text(&arguments(QueueType::Classic, Role::Inbound { dlq: "d" })).is_empty());
        assert_eq!(
            text(&arguments(QueueType::Quorum, Role::Dlq)),
            [("x-queue-type".to_owned(), "quorum".to_owned())]
        );
        let mut inbound = text(&arguments(QueueType::Quorum, Role::Inbound { dlq: "d" }));
        inbound.sort();
        let expected: Vec<(String, String)> = [
            ("x-dead-letter-exchange", ""),
            ("x-dead-letter-routing-key", "d"),
            ("x-dead-letter-strategy", "at-least-once"),
            ("x-overflow", "reject-publish"),
            ("x-queue-type", "quorum"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(inbound, expected);
    }
}
