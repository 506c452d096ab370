//! One delivery's settlement: the only way the worker tells the broker what
//! became of a delivery. Acks go through the channel's coalescer
//! ([`super::acks`]); a requeue or a hand-back is a nack of its own, which
//! the coalescer orders with the acks so a nack never races a coalesced ack
//! of the same tag.

use std::time::Duration;

use lapin::{options::BasicNackOptions, Acker};

use super::acks::Acks;

/// What the broker was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Told {
    /// It took the frame.
    Sent,
    /// The channel is gone: the tag is void and the broker delivers the
    /// message again.
    ChannelGone,
    /// Sending failed (the broker delivers the message again when the
    /// channel closes).
    Failed(String),
}

/// How a hand-back went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandBack {
    Sent,
    /// Its ack had already gone out (or been taken to go out).
    AlreadySettled,
    NotSent,
}

const REQUEUE: BasicNackOptions = BasicNackOptions {
    multiple: false,
    requeue: true,
};

/// The settlement of one delivery: its tag on its channel, and its acker.
#[derive(Clone)]
pub struct Settlement {
    acks: Acks,
    tag: u64,
    acker: Acker,
}

impl Settlement {
    /// Registers `tag` with the channel's coalescer: from now on it is
    /// unsettled until acked or nacked.
    pub fn register(acks: Acks, tag: u64, acker: Acker) -> Settlement {
        acks.register(tag);
        Settlement { acks, tag, acker }
    }

    /// Acks it (coalesced with its neighbours).
    pub async fn ack(&self) -> Told {
        told(self.acks.ack(self.tag).await)
    }

    /// Nacks it with requeue: back to its queue for another try.
    pub async fn requeue(&self) -> Told {
        told(self.acks.nack(self.tag, &self.acker, REQUEUE).await)
    }

    /// Hands it back (requeue) unless it was settled already, waiting at
    /// most `timeout` for the frame to go out.
    pub async fn hand_back(&self, timeout: Duration) -> HandBack {
        if !self.acks.is_unsettled(self.tag) {
            return HandBack::AlreadySettled;
        }
        let nack = self.acks.nack(self.tag, &self.acker, REQUEUE);
        match tokio::time::timeout(timeout, nack).await {
            Ok(Ok(true)) => HandBack::Sent,
            _ => HandBack::NotSent,
        }
    }
}

fn told(result: lapin::Result<bool>) -> Told {
    match result {
        Ok(true) => Told::Sent,
        Ok(false) => Told::ChannelGone,
        Err(e) => Told::Failed(e.to_string()),
    }
}
