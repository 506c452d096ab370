//! Exponential backoff with jitter, as a value with a pure `delay`.

use std::time::Duration;

use rand::Rng;

/// `first` doubles each retry up to `cap`; each delay is then spread by up to
/// +50 % so that messages failing together do not retry together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, cap: Duration) -> Self {
        Backoff { first, cap }
    }

    /// The delay before retry number `retry` (1 for the first retry), without
    /// jitter.
    pub fn base(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.cap)
    }

    /// The delay before retry number `retry`, with jitter from `rng`: within
    /// `[base, 1.5 × base]`, and never above the cap.
    pub fn delay<R: Rng + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        let base = self.base(retry);
        let spread = rng.random_range(0.0..=0.5);
        base.mul_f64(1.0 + spread).min(self.cap.max(base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn doubles_and_caps() {
        let b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        assert_eq!(b.base(1), Duration::from_millis(200));
        assert_eq!(b.base(2), Duration::from_millis(400));
        assert_eq!(b.base(3), Duration::from_millis(800));
        assert_eq!(b.base(20), Duration::from_secs(30));
        assert_eq!(b.base(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = StdRng::seed_from_u64(7);
        for retry in 1..12 {
            for _ in 0..200 {
                let d = b.delay(retry, &mut rng);
                let base = b.base(retry);
                assert!(d >= base, "{d:?} < {base:?}");
                assert!(d <= base.mul_f64(1.5), "{d:?}");
                assert!(d <= Duration::from_secs(1));
            }
        }
    }

    #[test]
    fn zero_first_backoff_means_no_wait() {
        let b = Backoff::new(Duration::ZERO, Duration::from_secs(30));
        assert_eq!(b.delay(3, &mut rand::rng()), Duration::ZERO);
    }
}
