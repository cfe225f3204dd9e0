//! Reconnect delays: exponential growth with full jitter, so a thousand nodes that lost the
//! same broker do not all come back in the same second.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter: attempt `n` waits a uniformly random time in
/// `[0, min(max, min · 2ⁿ)]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The upper bound of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The next delay, drawn from `rng`; each call doubles the ceiling up to `max`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(rng.random_range(0..=nanos))
    }

    /// After a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ceiling_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut ceilings = Vec::new();
        for _ in 0..9 {
            ceilings.push(b.ceiling().as_secs());
            let d = b.next_delay(&mut rng);
            assert!(d <= Duration::from_secs(60));
        }
        assert_eq!(ceilings, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
        for _ in 0..100 {
            b.next_delay(&mut rng);
        }
        assert_eq!(
            b.ceiling(),
            Duration::from_secs(60),
            "no overflow after many attempts"
        );
    }

    #[test]
    fn delays_are_spread_over_the_whole_window() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let delays: Vec<Duration> = (0..1000)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_secs(8), Duration::from_secs(60));
                b.next_delay(&mut rng)
            })
            .collect();
        let low = delays
            .iter()
            .filter(|d| **d < Duration::from_secs(2))
            .count();
        let high = delays
            .iter()
            .filter(|d| **d > Duration::from_secs(6))
            .count();
        assert!(low > 150 && high > 150, "low {low}, high {high}");
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(8)));
    }
}
