//! Acks of one consuming channel, coalesced opportunistically: the acks that
//! become ready before the channel's flusher task next runs (the same turn of
//! the runtime) go out together, a contiguous run of settled tags at the
//! bottom of the channel's unsettled tags as one `basic.ack` with
//! `multiple=true`, every other ready tag on its own. No timer: a ready ack
//! waits only for the flusher task to be polled.
//!
//! Every delivery of the channel is [`registered`](Acks::register) when it is
//! taken from the consumer, in tag order, and leaves the set only once a frame
//! that settles it was handed to the channel. An ack whose frame failed on a
//! channel that stays open is not settled: its tag stays, and the next
//! multiple ack that reaches over it settles it (its delivery is then acked,
//! not requeued); until then, or until the channel ends, its delivery waits. A multiple ack never crosses a
//! tag that is still held (in a delivery task, or having its nack sent) or
//! whose fate is unknown (a nack that failed; a tag that was never
//! registered), so it never settles a message nobody decided. Nacks are never
//! coalesced: [`Acks::nack`] sends them one by one.
//!
//! What decides (ack, dead-letter, hold, requeue) stays in
//! [`crate::delivery`]; this only sends.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use lapin::{
    options::{BasicAckOptions, BasicNackOptions},
    Acker, Channel,
};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

/// The coalescer of one channel; cheap to clone, shared by its deliveries.
#[derive(Clone)]
pub struct Acks {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acks")
            .field("channel", &self.inner.channel.id())
            .finish_non_exhaustive()
    }
}

struct Inner {
    channel: Channel,
    state: Mutex<State>,
    /// Wakes the flusher; a notification sent while it is busy is kept.
    wake: Notify,
}

/// What an ack waiter is told: as [`Acker::ack`] answers.
type AckResult = lapin::Result<bool>;

struct State {
    /// The channel's delivered, not yet settled tags, in order.
    unsettled: BTreeMap<u64, Slot>,
    /// The tag the next registered delivery should have.
    next: u64,
    /// False once a tag went by unregistered: a multiple ack could then
    /// settle a message nobody here decided, so every ack goes alone.
    multiple_ok: bool,
    /// The flusher ended (session over): acks are answered "not sent".
    closed: bool,
}

enum Slot {
    /// Its delivery is being handled, a nack of it is under way, or a nack
    /// of it failed: no multiple ack may cover it.
    Held,
    /// Its ack is wanted; the sender gets what became of it.
    Ready(oneshot::Sender<AckResult>),
    /// Its ack frame failed and the channel is still open: the broker may
    /// not have it. It is not sent again alone (had the frame gone out
    /// after all, a second ack of the tag would close the channel), but a
    /// later multiple ack covers it, harmlessly either way, and answers it.
    Failed(oneshot::Sender<AckResult>),
}

/// One frame the flusher sends, and who waits for it.
struct Frame {
    tag: u64,
    multiple: bool,
    /// The tags it settles, with who waits for each.
    waiters: Vec<(u64, oneshot::Sender<AckResult>)>,
}

impl Acks {
    /// The coalescer of `channel`, with its flusher task, which ends when
    /// `token` is cancelled (the session is over).
    pub fn new(channel: Channel, token: CancellationToken) -> Acks {
        let inner = Arc::new(Inner {
            channel,
            state: Mutex::new(State {
                unsettled: BTreeMap::new(),
                next: 1,
                multiple_ok: true,
                closed: false,
            }),
            wake: Notify::new(),
        });
        tokio::spawn(flusher(Arc::clone(&inner), token));
        Acks { inner }
    }

    /// Records a delivery taken from the consumer. Called in delivery order,
    /// before anything may settle it.
    pub fn register(&self, tag: u64) {
        let mut state = self.inner.lock();
        if tag != state.next {
            state.multiple_ok = false;
        }
        state.next = tag.saturating_add(1);
        state.unsettled.insert(tag, Slot::Held);
    }

    /// Acks `tag`, together with whatever else is ready when the flusher
    /// runs. `Ok(true)` once the frame covering it was sent on the channel;
    /// `Ok(false)` when the channel is gone (the broker redelivers), as
    /// [`Acker::ack`].
    ///
    /// # Errors
    /// The channel's error when the frame could not be sent.
    pub async fn ack(&self, tag: u64) -> AckResult {
        let rx = {
            let mut state = self.inner.lock();
            if state.closed {
                return Ok(false);
            }
            match state.unsettled.get_mut(&tag) {
                Some(slot @ Slot::Held) => {
                    let (tx, rx) = oneshot::channel();
                    *slot = Slot::Ready(tx);
                    rx
                }
                // Not registered, or already settled: nothing to send.
                _ => return Ok(false),
            }
        };
        self.inner.wake.notify_one();
        // A dropped sender: the session ended before the frame went out.
        rx.await.unwrap_or(Ok(false))
    }

    /// Nacks `tag` on its own, with `acker` (its delivery's). `Ok(false)`
    /// when nothing was sent: the channel is gone, or the tag was already
    /// settled (its ack went out first).
    ///
    /// # Errors
    /// The channel's error when the nack could not be sent.
    pub async fn nack(&self, tag: u64, acker: &Acker, options: BasicNackOptions) -> AckResult {
        if !self.withdraw(tag) {
            return Ok(false);
        }
        let sent = acker.nack(options).await;
        if matches!(sent, Ok(true)) {
            // The nack is on the wire before any later multiple ack.
            self.inner.lock().unsettled.remove(&tag);
            self.inner.wake.notify_one();
        }
        sent
    }

    /// Takes `tag` back from the flusher: false if its ack was already taken
    /// (or it is not ours), else it is held again and the caller settles it.
    fn withdraw(&self, tag: u64) -> bool {
        let mut state = self.inner.lock();
        match state.unsettled.get_mut(&tag) {
            Some(slot) => {
                *slot = Slot::Held;
                true
            }
            None => false,
        }
    }

    /// True while `tag` was registered and no frame settling it was taken
    /// to be sent.
    pub fn is_unsettled(&self, tag: u64) -> bool {
        self.inner.lock().unsettled.contains_key(&tag)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned state is still sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes every ready ack out of the set, as the frames that settle them.
    fn take_ready(&self) -> Vec<Frame> {
        take_ready(&mut self.lock())
    }

    async fn send(&self, frame: Frame) {
        let options = BasicAckOptions {
            multiple: frame.multiple,
        };
        if frame.multiple {
            tracing::trace!(tag = frame.tag, acks = frame.waiters.len(), "coalesced ack");
        }
        let result = match self.channel.basic_ack(frame.tag, options).await {
            Ok(()) => Ok(true),
            Err(_) if !self.channel.status().connected() => Ok(false),
            Err(e) => Err(e),
        };
        answer(&mut self.lock(), frame, result);
    }
}

/// Answers the waiters of a sent `frame` with `result`, except when an ack
/// failed on a channel that is still open: those tags go back as
/// [`Slot::Failed`], for a later multiple ack to settle.
fn answer(state: &mut State, frame: Frame, result: AckResult) {
    if result.is_err() && !state.closed {
        for (tag, tx) in frame.waiters {
            state.unsettled.insert(tag, Slot::Failed(tx));
        }
        return;
    }
    for (_, tx) in frame.waiters {
        let _ = tx.send(result.clone());
    }
}

/// Takes every ready ack out of `state`, as the frames that settle them.
fn take_ready(state: &mut State) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    // Still at the bottom of the unsettled tags (nothing held below)?
    let mut bottom = state.multiple_ok;
    let mut taken = Vec::new();
    // The highest ready tag of the run at the bottom: a failed ack below it
    // rides along in its multiple ack; one above it waits.
    let mut run_top = None;
    for (&tag, slot) in &state.unsettled {
        match slot {
            Slot::Held => bottom = false,
            Slot::Ready(_) => {
                if bottom {
                    run_top = Some(tag);
                }
                taken.push((tag, bottom));
            }
            Slot::Failed(_) if bottom => taken.push((tag, true)),
            Slot::Failed(_) => {}
        }
    }
    for (tag, bottom) in taken {
        let covered = bottom && run_top.is_some_and(|top| tag <= top);
        let tx = match state.unsettled.remove(&tag) {
            Some(Slot::Ready(tx)) => tx,
            Some(Slot::Failed(tx)) if covered => tx,
            Some(slot) => {
                state.unsettled.insert(tag, slot);
                continue;
            }
            None => continue,
        };
        match frames.last_mut() {
            // The run at the bottom grows: one multiple ack up to here.
            Some(last) if covered && last.multiple => {
                last.tag = tag;
                last.waiters.push((tag, tx));
            }
            _ => frames.push(Frame {
                tag,
                multiple: covered,
                waiters: vec![(tag, tx)],
            }),
        }
    }
    // A run of one is a plain ack.
    for frame in &mut frames {
        if frame.waiters.len() == 1 {
            frame.multiple = false;
        }
    }
    frames
}

/// Sends the ready acks each time it is woken, until the session ends; then
/// answers what is left "not sent" (the broker redelivers those messages).
async fn flusher(inner: Arc<Inner>, token: CancellationToken) {
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            () = inner.wake.notified() => {}
        }
        let frames = inner.take_ready();
        // Each frame is queued on the channel when its future is first
        // polled, so they go out in this order, and all before the next
        // round's.
        futures::future::join_all(frames.into_iter().map(|f| inner.send(f))).await;
    }
    let mut state = inner.lock();
    state.closed = true;
    state.unsettled.retain(|_, slot| {
        if let Slot::Ready(_) | Slot::Failed(_) = slot {
            // Dropping the sender answers "not sent".
            return false;
        }
        true
    });
}

#[cfg(test)]
mod tests;
