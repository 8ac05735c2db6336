//! The retry schedule: capped exponential backoff with full jitter, rounded up to a delay
//! tier, never shorter than the provider's `Retry-After`.

use std::time::Duration;

use rand::Rng;

/// When the next attempt happens.
#[derive(Debug, Clone)]
pub struct RetrySchedule {
    base: Duration,
    cap: Duration,
    tiers: Vec<Duration>,
}

impl RetrySchedule {
    /// `tiers` must be non-empty and increasing (the config guarantees it).
    pub fn new(base: Duration, cap: Duration, tiers: Vec<Duration>) -> Self {
        Self { base, cap, tiers }
    }

    /// Full jitter after attempt `n` (1-based): uniform in `[0, min(cap, base * 2^(n-1))]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1u32 << exp).min(self.cap);
        let ms = rand::rng().random_range(0..=ceiling.as_millis());
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// The wait before the next attempt: the backoff, but at least `Retry-After`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.backoff(attempt).max(retry_after.unwrap_or_default())
    }

    /// The delay tiers, shortest first.
    pub fn tiers(&self) -> &[Duration] {
        &self.tiers
    }

    /// The shortest tier at least `delay` long, or the longest tier.
    pub fn tier_for(&self, delay: Duration) -> Duration {
        self.tiers
            .iter()
            .copied()
            .find(|t| *t >= delay)
            .or_else(|| self.tiers.last().copied())
            .unwrap_or(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> RetrySchedule {
        let s = Duration::from_secs;
        RetrySchedule::new(s(1), s(60), vec![s(1), s(5), s(30), s(120)])
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let r = schedule();
        for n in 1..50 {
            let ceiling = Duration::from_secs(1 << (n - 1).min(10)).min(Duration::from_secs(60));
            let d = r.backoff(n);
            assert!(d <= ceiling, "attempt {n}: {d:?} > {ceiling:?}");
        }
        let spread: std::collections::HashSet<_> = (0..100).map(|_| r.backoff(8)).collect();
        assert!(spread.len() > 20, "full jitter spreads retries");
    }

    #[test]
    fn retry_after_is_a_floor() {
        let r = schedule();
        for _ in 0..100 {
            assert!(r.delay(1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        }
    }

    #[test]
    fn delays_round_up_to_a_tier() {
        let r = schedule();
        let s = Duration::from_secs;
        assert_eq!(r.tier_for(Duration::ZERO), s(1));
        assert_eq!(r.tier_for(s(1)), s(1));
        assert_eq!(r.tier_for(Duration::from_millis(1001)), s(5));
        assert_eq!(r.tier_for(s(31)), s(120));
        assert_eq!(r.tier_for(s(10_000)), s(120));
    }
}
