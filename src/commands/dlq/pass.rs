//! A pass over the DLQ: read from the head, copy each message (to the DLQ's
//! tail, or to the inbound queue), and remove the original only once its own
//! copy is stored.

use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicGetOptions, BasicNackOptions},
    types::FieldTable,
    BasicProperties,
};

use super::replay::replayed_properties;
use crate::{
    commands::{broker_session::Session, confirm_batch},
    config::BrokerConfig,
};

/// Messages read before their copies' confirms are awaited: enough to keep
/// the broker busy, few enough to hold in memory.
const BATCH: usize = 256;

/// The broker's delivery count of a quorum queue's message: a copy drops it
/// (the broker keeps its own, and an old one must not look like a new
/// attempt).
pub(super) const DELIVERY_COUNT: &str = "x-delivery-count";

/// What a pass does with one message it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// A copy to the DLQ's tail, then the original acked.
    Rotate,
    /// A copy to the inbound queue (replay headers), then the original acked.
    Replay,
}

/// The command-specific part of a pass over the DLQ.
pub(super) trait Reader {
    /// Called for each message read, in DLQ order, before its copy is sent.
    fn decide(&mut self, delivery: &Delivery) -> Fate;
    /// Checked before each read: true ends the pass before its bound.
    fn done(&self) -> bool {
        false
    }
}

/// What a pass did.
#[derive(Debug, Default)]
pub(super) struct Pass {
    pub read: u32,
    pub rotated: u32,
    pub replayed: u32,
    /// Why the pass stopped early; every message it had not settled is back
    /// in the DLQ.
    pub error: Option<anyhow::Error>,
}

/// A message read and the copy sent for it.
struct Copied {
    delivery: Delivery,
    fate: Fate,
    queue: String,
    props: BasicProperties,
}

/// Reads up to `max` messages from the head of the DLQ and settles each as
/// `reader` decides: its own copy confirmed and not returned, then the
/// original acked; otherwise the original nack-requeued and the pass ends.
///
/// The copies of a batch are pipelined on one channel, in order (so the
/// rotated ones keep the DLQ's order); which of them came back is found out
/// per copy by [`confirm_batch::outcomes`].
pub(super) async fn pass(
    session: &Session,
    broker_cfg: &BrokerConfig,
    max: u32,
    reader: &mut dyn Reader,
) -> Pass {
    let mut out = Pass::default();
    let mut empty = false;
    while !empty && out.read < max && !reader.done() {
        let mut batch: Vec<Copied> = Vec::with_capacity(BATCH);
        let mut confirms = Vec::with_capacity(BATCH);
        while batch.len() < BATCH && out.read < max && !reader.done() {
            let got = match session
                .channel
                .basic_get(
                    broker_cfg.dlq.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await
            {
                Ok(got) => got,
                Err(e) => {
                    out.error = Some(anyhow::Error::from(e).context("reading from the DLQ"));
                    break;
                }
            };
            // Someone else emptied it meanwhile: nothing more to read.
            let Some(got) = got else {
                empty = true;
                break;
            };
            let delivery = got.delivery;
            out.read += 1;
            let fate = reader.decide(&delivery);
            let (queue, props) = match fate {
                Fate::Rotate => (&broker_cfg.dlq, rotated_properties(&delivery.properties)),
                Fate::Replay => (&broker_cfg.queue, replayed_properties(&delivery.properties)),
            };
            let sent = session
                .publisher
                .send(queue, &delivery.data, props.clone())
                .await;
            // Not even sent: the publishing channel is gone, and so would
            // the next copies be. Settle what was read and stop.
            let unsent = sent.is_err();
            confirms.push(sent);
            batch.push(Copied {
                delivery,
                fate,
                queue: queue.clone(),
                props,
            });
            if unsent {
                break;
            }
        }
        let (results, _) = confirm_batch::outcomes(confirms, |i, returned| {
            let copy = &batch[i];
            returned.delivery.routing_key.as_str() == copy.queue
                && returned.delivery.data == copy.delivery.data
                && returned.delivery.properties == copy.props
        })
        .await;
        for (Copied { delivery, fate, .. }, confirmed) in batch.into_iter().zip(results) {
            match confirmed {
                Ok(()) => match delivery.acker.ack(BasicAckOptions::default()).await {
                    Ok(true) => match fate {
                        Fate::Rotate => out.rotated += 1,
                        Fate::Replay => out.replayed += 1,
                    },
                    // Not sent (channel gone) or refused: the copy is stored
                    // and the original comes back to the DLQ: a duplicate,
                    // never a loss.
                    Ok(false) => {
                        out.error.get_or_insert_with(|| {
                            anyhow::anyhow!("the channel closed before a read message was removed")
                        });
                    }
                    Err(e) => {
                        out.error.get_or_insert_with(|| {
                            anyhow::Error::from(e).context("acking a message read from the DLQ")
                        });
                    }
                },
                Err(e) => {
                    // Not stored: the original must stay. This is the one
                    // return to the queue, and only on failure.
                    let _ = delivery
                        .acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await;
                    let target = match fate {
                        Fate::Rotate => "the DLQ's tail",
                        Fate::Replay => "the inbound queue",
                    };
                    out.error.get_or_insert_with(|| {
                        anyhow::Error::from(e).context(format!("copying a message to {target}"))
                    });
                }
            }
        }
        if out.error.is_some() {
            break;
        }
    }
    out
}

/// The properties of a rotated copy: the original's, persistent, without
/// `user_id` (the broker refuses a publish whose `user_id` is not the
/// publishing user's, and the tool may run as another user) and without the
/// broker's delivery count.
pub(super) fn rotated_properties(props: &BasicProperties) -> BasicProperties {
    let headers = filtered_headers(props.headers().as_ref(), |k| k != DELIVERY_COUNT);
    crate::broker::fields::copied_properties(props, headers)
}

pub(super) fn filtered_headers(
    headers: Option<&FieldTable>,
    keep: impl Fn(&str) -> bool,
) -> FieldTable {
    let mut out = FieldTable::default();
    for (key, value) in headers.into_iter().flatten() {
        if keep(key.as_str()) {
            out.insert(key.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::dlq::reasons::tests::{death, table, text};
    use lapin::types::{AMQPValue, FieldArray};

    #[test]
    fn a_rotated_copy_keeps_everything_but_user_id_and_the_delivery_count() {
        let props = BasicProperties::default()
            .with_message_id("m".into())
            .with_correlation_id("c".into())
            .with_type("t".into())
            .with_content_type("application/json".into())
            .with_user_id("someone".into())
            .with_timestamp(7)
            .with_headers(table(&[
                ("x-bridge-reason", text("api_failed")),
                ("x-delivery-count", AMQPValue::LongInt(1)),
                (
                    "x-death",
                    AMQPValue::FieldArray(FieldArray::from(vec![death("delivery_limit")])),
                ),
            ]));
        let out = rotated_properties(&props);
        assert!(out.user_id().is_none());
        assert_eq!(
            out.delivery_mode(),
            &Some(crate::broker::fields::PERSISTENT)
        );
        assert_eq!(out.message_id(), props.message_id());
        assert_eq!(out.correlation_id(), props.correlation_id());
        assert_eq!(out.kind(), props.kind());
        assert_eq!(out.content_type(), props.content_type());
        assert_eq!(out.timestamp(), &Some(7));
        let h = out.headers().as_ref().unwrap();
        assert!(h.contains_key("x-bridge-reason") && h.contains_key("x-death"));
        assert!(!h.contains_key("x-delivery-count"));
    }
}
