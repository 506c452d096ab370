//! Settling a DLQ pass's window: each message taken is acked once its own
//! copy is stored; a copy not stored is sent again alone, and a replay that
//! cannot be stored is rotated instead. The only hand-back is after every
//! copy of a message failed.

use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions},
    BasicProperties,
};

use super::{
    confirm_batch,
    dlq_pass::{copy_for, Fate, Pass, Taken},
    publisher::PublishError,
    tool_session::{ToolSession, CONFIRM_TIMEOUT},
};
use crate::config::BrokerConfig;

/// How many times a copy is published again, alone, after an uncertain or
/// refused confirm before the pass gives up on it (and hands it back).
const RESENDS: usize = 3;

/// Awaits the window's confirms and settles each message taken: acked once
/// its own copy is stored (or at once for a removal); a copy not stored is
/// sent again alone, and a replay that cannot be stored is rotated instead.
pub(super) async fn settle(
    session: &mut ToolSession,
    broker_cfg: &BrokerConfig,
    window: Vec<Taken>,
    confirms: Vec<Result<lapin::PublisherConfirm, PublishError>>,
    out: &mut Pass,
) {
    let copies: Vec<(&str, &[u8], &BasicProperties)> = window
        .iter()
        .filter_map(|t| {
            t.copy
                .as_ref()
                .map(|c| (c.queue.as_str(), &t.delivery.data[..], &c.props))
        })
        .collect();
    let (results, uncertain) = confirm_batch::outcomes(confirms, |i, returned| {
        let (queue, body, props) = copies[i];
        returned.delivery.routing_key.as_str() == queue
            && returned.delivery.data == body
            && &returned.delivery.properties == props
    })
    .await;
    drop(copies);
    if uncertain {
        // A late confirm or return on this channel could be taken for a
        // later publish's.
        if let Err(e) = session.renew_publisher().await {
            out.error
                .get_or_insert(e.context("opening a new publishing channel"));
        }
    }
    let mut results = results.into_iter();
    for taken in window {
        let first = match taken.copy {
            Some(_) => results
                .next()
                .unwrap_or_else(|| Err(PublishError::Channel("no confirm for this copy".into()))),
            None => Ok(()),
        };
        let kept = match first {
            Ok(()) => Ok(taken.fate),
            Err(e) => resend(session, broker_cfg, &taken, e).await,
        };
        match kept {
            Ok(fate) => {
                if fate != taken.fate {
                    out.replay_failed += 1;
                }
                ack(&taken.delivery, fate, out).await;
            }
            Err(e) => {
                // Nothing stored it: the one hand-back left, and only after
                // every copy failed.
                let _ = taken
                    .delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                out.error.get_or_insert(e);
            }
        }
    }
}

/// After a copy was not stored: publishes it again, alone (one publish in
/// flight, so its return is its own), and a replay that still cannot be
/// stored becomes a rotation. Returns the fate that was stored.
async fn resend(
    session: &mut ToolSession,
    broker_cfg: &BrokerConfig,
    taken: &Taken,
    first: PublishError,
) -> anyhow::Result<Fate> {
    let mut last = first;
    let mut fates = vec![taken.fate];
    if taken.fate == Fate::Replay {
        fates.push(Fate::Rotate);
    }
    for fate in fates {
        let Some(copy) = copy_for(
            fate,
            &taken.delivery.properties,
            broker_cfg,
            session.publisher.frame_max(),
        ) else {
            return Ok(fate);
        };
        for _ in 0..RESENDS {
            // A return means the queue is not there: sending it there again
            // will not help.
            if matches!(last, PublishError::Returned(_)) && fate == taken.fate {
                break;
            }
            match session
                .publisher
                .publish(&copy.queue, &taken.delivery.data, copy.props.clone())
                .await
            {
                Ok(()) => return Ok(fate),
                Err(e) => {
                    let stale = !matches!(e, PublishError::Returned(_) | PublishError::Nacked);
                    last = e;
                    if stale {
                        if let Err(e) = session.renew_publisher().await {
                            return Err(e.context("opening a new publishing channel"));
                        }
                    }
                }
            }
        }
    }
    let target = match taken.fate {
        Fate::Rotate | Fate::Remove => "the DLQ's tail",
        Fate::Replay => "the inbound queue or the DLQ's tail",
    };
    Err(anyhow::Error::from(last).context(format!(
        "copying a message to {target} (no confirm within {CONFIRM_TIMEOUT:?} each try, or refused)"
    )))
}

async fn ack(delivery: &Delivery, fate: Fate, out: &mut Pass) {
    match delivery.acker.ack(BasicAckOptions::default()).await {
        Ok(true) => match fate {
            Fate::Rotate => out.rotated += 1,
            Fate::Replay => out.replayed += 1,
            Fate::Remove => out.removed += 1,
        },
        // Not sent (channel gone) or refused: the copy is stored and the
        // original comes back to the DLQ: a duplicate, never a loss.
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
    }
}
