//! Retry delays: exponential growth from a first step up to a cap, with a choice of jitter.
//!
//! One type for every retry in the system: the agent's and the collector's reconnects, the
//! outputs' delivery attempts and the time-series sink's probes. It holds no clock and
//! sleeps nowhere: it only says how long the next wait is, so it is tested without time.
//!
//! Design: jitter is a property of the caller, not of the arithmetic. A thousand agents
//! that lost the same broker must spread over the whole window (full jitter); one
//! collector reconnecting wants a predictable pace with a little spread; a webhook's
//! retries follow the configured delay exactly, as its operator reads it in the log.

use std::time::Duration;

use rand::Rng;

/// How a delay is drawn from the current step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Exactly the step.
    None,
    /// Uniform in `[0, step]`, so clients that failed together do not return together.
    Full,
    /// The step times a factor uniform in `[1 - f, 1 + f)`, never above the cap.
    Spread(f64),
}

/// Exponential backoff: attempt `n` (from 0) waits about `min(max, first · 2ⁿ)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    attempt: u32,
    jitter: Jitter,
}

impl Backoff {
    /// Steps from `first` doubling up to `max` (raised to `first` if below it), no jitter.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            attempt: 0,
            jitter: Jitter::None,
        }
    }

    /// The same steps, drawn with `jitter`.
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The current step: the upper bound of the next delay before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }

    /// How many delays were taken since the start or the last [`reset`](Self::reset).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The next delay, with the jitter drawn from `rng`; the step then doubles up to `max`.
    pub fn next_delay_with(&mut self, rng: &mut impl Rng) -> Duration {
        let step = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        match self.jitter {
            Jitter::None => step,
            Jitter::Full => {
                let nanos = step.as_nanos().min(u64::MAX as u128) as u64;
                Duration::from_nanos(rng.random_range(0..=nanos))
            }
            Jitter::Spread(f) if f > 0.0 => {
                let f = f.min(1.0);
                step.mul_f64(rng.random_range(1.0 - f..1.0 + f))
                    .min(self.max)
            }
            Jitter::Spread(_) => step,
        }
    }

    /// The next delay, jitter from the thread's random generator.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::rng())
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn ceiling_doubles_up_to_the_cap_and_resets() {
        let mut b =
            Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).with_jitter(Jitter::Full);
        let mut rng = StdRng::seed_from_u64(7);
        let mut ceilings = Vec::new();
        for _ in 0..9 {
            ceilings.push(b.ceiling().as_secs());
            let d = b.next_delay_with(&mut rng);
            assert!(d <= Duration::from_secs(60));
        }
        assert_eq!(ceilings, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
        for _ in 0..100 {
            b.next_delay_with(&mut rng);
        }
        assert_eq!(
            b.ceiling(),
            Duration::from_secs(60),
            "no overflow after many attempts"
        );
    }

    #[test]
    fn without_jitter_the_steps_are_exact() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let d: Vec<u64> = (0..8).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.attempts(), 8);
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_window() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<Duration> = (0..1000)
            .map(|_| {
                Backoff::new(Duration::from_secs(8), Duration::from_secs(60))
                    .with_jitter(Jitter::Full)
                    .next_delay_with(&mut rng)
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

    #[test]
    fn spread_stays_near_the_step_and_under_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
            .with_jitter(Jitter::Spread(0.2));
        let waits: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(waits[0] >= Duration::from_millis(80) && waits[0] <= Duration::from_millis(120));
        assert!(waits[1] >= Duration::from_millis(160) && waits[1] <= Duration::from_millis(240));
        assert!(waits[5] <= Duration::from_secs(1) && waits[5] >= Duration::from_millis(800));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
