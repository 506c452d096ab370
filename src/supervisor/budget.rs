//! The byte budget of issue 22 (`BRIDGE_MAX_IN_FLIGHT_BYTES`): message bodies
//! in flight per worker, so memory is bounded by bytes, not only by the
//! prefetch count.
//!
//! RabbitMQ has no prefetch by bytes, and a consumer's prefetch is fixed
//! when it starts (`basic.qos` with `global=false` applies to the consumers
//! started after it; a channel-wide `global=true` limit is refused by quorum
//! queues). What the broker pushed is in the worker's memory whatever it
//! does next, so the prefetch has to be small *before* big bodies come. The
//! worker therefore sizes each consumer's prefetch from the bodies it has
//! seen: budget ÷ the largest recent body, between 1 and `BRIDGE_PREFETCH`
//! (1 before the first delivery: its size tells). When that number falls
//! below the running consumer's prefetch, the consumer is replaced at once;
//! when it grows to twice or more (or to the full prefetch), it is replaced
//! too. Replacing cancels the consumer, processes what it had already been
//! sent (nothing is handed back: a requeue would cost a delivery attempt),
//! and starts the next one when what is in flight leaves it room: at most
//! `BRIDGE_PREFETCH` messages, and within the budget unless nothing is in
//! flight, so a body larger than the whole budget is processed alone and
//! never waits for ever. Growing never waits (one slow message must not
//! stop intake): it takes the room there is now, so under steady load a
//! worker can run a slot or so under `BRIDGE_PREFETCH` (the first message
//! was in flight when it grew) until a tick finds the room for the rest.
//!
//! The largest size is forgotten slowly (by 1/128 per delivery, halving in
//! about 90 deliveries), so a burst of big bodies among small ones keeps the
//! prefetch low for a while instead of re-consuming on every message.

use std::sync::{
    atomic::{AtomicU64, AtomicUsize, Ordering},
    Arc,
};

use tokio::sync::Notify;

/// The largest recent size loses 1/`FORGET` of itself per delivery.
const FORGET: u64 = 128;

/// The bytes and messages in flight, shared with every delivery task.
#[derive(Debug, Default)]
struct InFlight {
    bytes: AtomicU64,
    count: AtomicUsize,
    freed: Notify,
}

/// One delivery's share of the budget, given back when its task ends (its
/// body is freed then).
#[derive(Debug)]
pub struct Charge {
    in_flight: Arc<InFlight>,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.in_flight.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.in_flight.count.fetch_sub(1, Ordering::AcqRel);
        self.in_flight.freed.notify_one();
    }
}

/// The budget, the prefetch ceiling, and the sizes seen.
#[derive(Debug)]
pub struct ByteBudget {
    limit: u64,
    prefetch: u16,
    in_flight: Arc<InFlight>,
    /// The largest recent body (at least 1), decaying; 0 before the first.
    largest: AtomicU64,
}

impl ByteBudget {
    pub fn new(limit: u64, prefetch: u16) -> ByteBudget {
        ByteBudget {
            limit: limit.max(1),
            prefetch: prefetch.max(1),
            in_flight: Arc::default(),
            largest: AtomicU64::new(0),
        }
    }

    /// Counts a delivery of `size` bytes as in flight until the charge is
    /// dropped, and learns its size. Called by the consume loop only.
    pub fn charge(&self, size: usize) -> Charge {
        let size = (size as u64).max(1);
        let seen = self.largest.load(Ordering::Relaxed);
        let largest = if seen == 0 {
            size
        } else {
            size.max(seen - seen / FORGET)
        };
        if largest != seen {
            self.largest.store(largest, Ordering::Relaxed);
        }
        self.in_flight.bytes.fetch_add(size, Ordering::AcqRel);
        self.in_flight.count.fetch_add(1, Ordering::AcqRel);
        Charge {
            in_flight: Arc::clone(&self.in_flight),
            bytes: size,
        }
    }

    /// The prefetch the sizes seen allow: the budget ÷ the largest recent
    /// body, 1 to `BRIDGE_PREFETCH`; 1 before any delivery.
    pub fn target(&self) -> u16 {
        match self.largest.load(Ordering::Relaxed) {
            0 => 1,
            largest => (self.limit / largest).clamp(1, u64::from(self.prefetch)) as u16,
        }
    }

    /// The prefetch a consumer running with `current` should be replaced
    /// with, if it should: a smaller one at once (the new consumer then
    /// waits for [`room_for`](Self::room_for) it); a larger one only when
    /// what is in flight leaves room for it now (it never waits for one slow
    /// message), and only when that is twice as large or
    /// the full `BRIDGE_PREFETCH`, so sizes wobbling near a boundary do not
    /// re-consume on every delivery.
    pub fn resize(&self, current: u16) -> Option<u16> {
        let target = self.target();
        if target < current {
            return Some(target);
        }
        let now = self.growth_room(target);
        let full = now == target && target == self.prefetch;
        (now > current && (now >= current.saturating_mul(2) || full)).then_some(now)
    }

    /// Up to `target`, the most a new consumer may take with what is in
    /// flight: within `BRIDGE_PREFETCH` messages and the budget.
    fn growth_room(&self, target: u16) -> u16 {
        let count = self.in_flight.count.load(Ordering::Acquire) as u64;
        if count == 0 {
            return target;
        }
        let bytes = self.in_flight.bytes.load(Ordering::Acquire);
        let largest = self.largest.load(Ordering::Relaxed).max(1);
        let by_count = u64::from(self.prefetch).saturating_sub(count);
        let by_bytes = self.limit.saturating_sub(bytes) / largest;
        by_count.min(by_bytes).min(u64::from(target)) as u16
    }

    /// Whether a consumer with prefetch `n` may start now: with what is in
    /// flight, at most `BRIDGE_PREFETCH` messages and, unless nothing is in
    /// flight, `n` more of the largest recent body within the budget.
    pub fn room_for(&self, n: u16) -> bool {
        n >= 1 && self.growth_room(n) >= n
    }

    /// Resolves when a delivery ended since the last call (or now, if one
    /// did meanwhile).
    pub async fn freed(&self) {
        self.in_flight.freed.notified().await;
    }

    /// Bytes in flight (for logs and tests).
    pub fn bytes_in_flight(&self) -> u64 {
        self.in_flight.bytes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_first_delivery_alone_then_what_its_size_allows() {
        let b = ByteBudget::new(64 * MIB as u64, 64);
        assert_eq!(b.target(), 1, "nothing seen: one message tells the size");
        let small = b.charge(200);
        assert_eq!(b.target(), 64);
        assert_eq!(b.resize(1), Some(63), "as much as the one in flight leaves");
        assert!(
            !b.room_for(64),
            "one in flight + 64 would pass the prefetch"
        );
        assert_eq!(b.resize(63), None, "no re-consume for one slot under load");
        drop(small);
        assert!(b.room_for(64));
        assert_eq!(b.resize(63), Some(64), "idle: the rest");
        let big = b.charge(8 * MIB);
        assert_eq!(b.target(), 8);
        assert_eq!(b.resize(64), Some(8), "shrinks at once");
        assert_eq!(b.resize(8), None);
        assert!(!b.room_for(8), "8 MiB in flight + 8 × 8 MiB is over 64 MiB");
        assert!(b.room_for(7));
        drop(big);
        assert_eq!(b.bytes_in_flight(), 0);
    }

    #[test]
    fn a_body_over_the_budget_goes_alone_and_never_waits_for_ever() {
        let b = ByteBudget::new(4 * MIB as u64, 64);
        let huge = b.charge(8 * MIB);
        assert_eq!(b.target(), 1);
        assert!(!b.room_for(1), "not beside another one");
        drop(huge);
        assert!(b.room_for(1), "nothing in flight: always room");
    }

    #[test]
    fn big_sizes_are_forgotten_slowly_and_growth_waits_for_a_doubling() {
        let b = ByteBudget::new(64 * MIB as u64, 64);
        drop(b.charge(8 * MIB));
        let mut current = b.target();
        let mut resizes = Vec::new();
        for i in 0..1000 {
            drop(b.charge(200));
            if let Some(n) = b.resize(current) {
                resizes.push((i, n));
                current = n;
            }
        }
        assert_eq!(current, 64);
        assert!(resizes.len() <= 4, "{resizes:?}");
        assert!(resizes[0].0 > 50, "{resizes:?}");
    }
}
