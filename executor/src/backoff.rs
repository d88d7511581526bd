//! Capped exponential backoff with jitter, for every retry loop of the executor (registering with the
//! control plane, reporting starts and completions, reconnecting to the broker).
//!
//! The ceiling of retry `n` (0-based) is `min(max, initial * 2^n)`; the delay is drawn uniformly from
//! `[ceiling / 2, ceiling]` ("equal jitter"), so that executors that lost the same peer at the same
//! moment do not retry in lockstep, while every delay stays at least half the ceiling.

use std::time::Duration;

use rand::Rng;

/// Retry delays: exponential from `initial`, capped at `max`, with equal jitter. Not thread-safe by
/// design: each retry loop owns one.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    retries: u32,
}

impl Backoff {
    /// A backoff whose first delay is about `initial` and whose delays never exceed `max`.
    /// `initial` is raised to 1 ms and `max` to `initial` when given smaller.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self { initial, max: max.max(initial), retries: 0 }
    }

    /// The ceiling of retry `retries` (0-based): `min(max, initial * 2^retries)`.
    pub fn ceiling(&self, retries: u32) -> Duration {
        let factor = 2u32.saturating_pow(retries.min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next retry, in `[ceiling / 2, ceiling]`; advances the retry count.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling(self.retries);
        self.retries = self.retries.saturating_add(1);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(rand::rng().random_range(0..=spread))
    }

    /// Retries so far since creation or the last [`Backoff::reset`].
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Starts over from `initial`, after a success.
    pub fn reset(&mut self) {
        self.retries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let ceilings: Vec<u128> = (0..7).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn delays_stay_between_half_the_ceiling_and_the_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(500));
        for n in 0..40 {
            let ceiling = b.ceiling(n);
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "retry {n}: {d:?} outside [{:?}, {ceiling:?}]", ceiling / 2);
        }
        assert_eq!(b.retries(), 40);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(10));
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.retries(), 0);
        assert!(b.next_delay() <= Duration::from_millis(10));
    }

    #[test]
    fn degenerate_bounds_are_raised() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.ceiling(0), Duration::from_millis(1));
        assert!(b.next_delay() <= Duration::from_millis(1));
    }
}
