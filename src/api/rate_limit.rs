//! At most N requests in any one-second window, for one API.
//!
//! A sliding-window log rather than a token bucket: a bucket refilled at N/s
//! lets up to 2N−1 through in one window after an idle spell, and the contract
//! says no burst beyond N. Each request waits until fewer than N were started
//! in the past window (plus a small margin for network jitter between us and
//! the API's clock).

use std::{collections::VecDeque, num::NonZeroU32, sync::Mutex, time::Duration};

use tokio::time::Instant;

/// The window plus a margin so that requests arriving a few milliseconds
/// apart at the server still fit N per second there.
const WINDOW: Duration = Duration::from_millis(1_020);

#[derive(Debug)]
pub struct RateLimiter {
    limit: usize,
    /// Start times of the last `limit` requests.
    started: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    pub fn per_second(limit: NonZeroU32) -> Self {
        let limit = limit.get() as usize;
        RateLimiter {
            limit,
            // Grows with use: a high limit that traffic never reaches costs
            // no memory up front.
            started: Mutex::new(VecDeque::with_capacity(limit.min(64))),
        }
    }

    /// Claims a slot at `now` if one is free, else says when to ask again.
    pub fn try_acquire(&self, now: Instant) -> Result<(), Instant> {
        // The lock is held for a few instructions and never across an await; a
        // poisoned lock still holds a valid queue of instants.
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&oldest) = started.front() {
            if now.duration_since(oldest) >= WINDOW {
                started.pop_front();
            } else {
                break;
            }
        }
        if started.len() < self.limit {
            started.push_back(now);
            Ok(())
        } else {
            // Full: the oldest start leaves the window first.
            Err(started[0] + WINDOW)
        }
    }

    /// Waits for a slot.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire(Instant::now()) {
                Ok(()) => return,
                Err(at) => tokio::time::sleep_until(at).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_n_in_a_window() {
        let rl = RateLimiter::per_second(NonZeroU32::new(5).unwrap());
        let t0 = Instant::now();
        let mut granted = Vec::new();
        // Ask every 10 ms for 5 s.
        for i in 0..500u64 {
            let now = t0 + Duration::from_millis(i * 10);
            if rl.try_acquire(now).is_ok() {
                granted.push(now);
            }
        }
        for (i, &start) in granted.iter().enumerate() {
            let in_window = granted[i..]
                .iter()
                .take_while(|&&t| t.duration_since(start) < Duration::from_secs(1))
                .count();
            assert!(in_window <= 5, "{in_window} in the window from #{i}");
        }
        // And it does let the full rate through.
        assert!(granted.len() >= 20, "{}", granted.len());
    }

    #[test]
    fn tells_when_to_retry() {
        let rl = RateLimiter::per_second(NonZeroU32::new(1).unwrap());
        let t0 = Instant::now();
        assert!(rl.try_acquire(t0).is_ok());
        assert_eq!(rl.try_acquire(t0), Err(t0 + WINDOW));
        assert!(rl.try_acquire(t0 + WINDOW).is_ok());
    }
}
