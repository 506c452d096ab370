//! Pipelined publishes on one confirm channel, each outcome matched to its
//! own publish.
//!
//! lapin does not tie a `basic.return` to its publish: it queues returns per
//! channel and hands the oldest to whichever confirm it resolves next (a
//! multiple-ack resolves several in hash order). So on a pipelined channel
//! the confirm of a stored publish may carry another publish's return, and a
//! returned publish may get a clean ack. The commands still pipeline on one
//! channel (a pool of channels would lose the order of the DLQ's rotated
//! copies), and find out which publish came back from the returned message
//! itself, which lapin hands over whole:
//!
//! - A batch is sent, then every confirm of it is awaited. The broker sends a
//!   publish's return before its ack and lapin takes at most one return per
//!   confirm, so once every confirm of the batch is resolved every return of
//!   the batch has been handed to one of them, and none is left for the next
//!   batch.
//! - Each return is matched to the publish it is a copy of (same routing key,
//!   body and properties: the broker returns the message as published). Of
//!   identical publishes the first still counted as stored is taken; which
//!   one does not matter, they are the same message.
//! - When that cannot be done for sure (a confirm timed out or failed, so
//!   its return may still come, or a return matches no publish), no publish
//!   of the batch counts as stored: a duplicate is allowed, a loss is not.
//!   The caller must then not send on the channel again.

use lapin::{message::BasicReturnMessage, Confirmation, PublisherConfirm};

use super::{publisher::PublishError, tool_session::CONFIRM_TIMEOUT};

/// A publish sent and not yet confirmed (or why it could not be sent).
pub type Sent = Result<PublisherConfirm, PublishError>;

/// What [`outcomes`] says of one publish.
pub type Outcome = Result<(), PublishError>;

/// Awaits the confirms of a batch sent in order on one channel and returns
/// each publish's outcome, in the same order. `is_copy(i, returned)` tells
/// whether `returned` is the message of the `i`-th publish. The second value
/// is true when the batch could not be told apart (see the module doc) and
/// every publish of it is reported as not stored: the channel must not be
/// used again.
pub async fn outcomes(
    confirms: Vec<Result<PublisherConfirm, PublishError>>,
    is_copy: impl Fn(usize, &BasicReturnMessage) -> bool,
) -> (Vec<Outcome>, bool) {
    let mut results: Vec<Outcome> = Vec::with_capacity(confirms.len());
    let mut returned = Vec::new();
    let mut uncertain = false;
    for confirm in confirms {
        let result = match confirm {
            Err(e) => Err(e),
            Ok(confirm) => match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
                Err(_) => Err(PublishError::Timeout(CONFIRM_TIMEOUT)),
                Ok(Err(e)) => Err(PublishError::Amqp(e)),
                Ok(Ok(Confirmation::Ack(r))) => {
                    returned.extend(r);
                    Ok(())
                }
                Ok(Ok(Confirmation::Nack(r))) => {
                    returned.extend(r);
                    Err(PublishError::Nacked)
                }
                Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Nacked),
            },
        };
        uncertain |= matches!(result, Err(ref e) if !matches!(e, PublishError::Nacked));
        results.push(result);
    }
    if !uncertain {
        for message in &returned {
            // A returned publish is acked (after its return), so it is among
            // those counted as stored so far.
            let own = (0..results.len()).find(|&i| results[i].is_ok() && is_copy(i, message));
            match own {
                Some(i) => {
                    results[i] = Err(PublishError::Returned(message.reply_text.to_string()));
                }
                None => {
                    uncertain = true;
                    break;
                }
            }
        }
    }
    if uncertain {
        for r in results.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(PublishError::Channel(
                "another publish of its batch failed in a way that cannot be matched to one \
                 publish, so none of the batch counts as stored"
                    .into(),
            ));
        }
    }
    (results, uncertain)
}
