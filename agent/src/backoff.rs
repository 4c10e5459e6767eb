//! Jitter without a random-number crate, and the reconnect backoff built on it.
//!
//! The jitter source hashes a counter, the clock and a per-agent seed with std's
//! `RandomState`, whose keys are random per process: good enough to keep a fleet of agents
//! from reconnecting or heartbeating in lockstep, which is all it is for.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, SystemTime};

/// A cheap source of spread-out numbers for timing jitter (not for anything secret).
#[derive(Debug, Clone)]
pub(crate) struct Jitter {
    hasher: RandomState,
    seed: String,
    counter: u64,
}

impl Jitter {
    /// `seed` distinguishes agents started in the same instant (the instance id is a good one).
    pub(crate) fn new(seed: &str) -> Self {
        Self {
            hasher: RandomState::new(),
            seed: seed.to_owned(),
            counter: 0,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        self.hasher.hash_one((&self.seed, self.counter, now))
    }

    /// A fraction in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `base` moved by up to `±fraction` of itself, e.g. `spread(10s, 0.1)` is in 9s..11s.
    pub(crate) fn spread(&mut self, base: Duration, fraction: f64) -> Duration {
        let factor = 1.0 + fraction * (2.0 * self.unit() - 1.0);
        base.mul_f64(factor.max(0.0))
    }

    /// A duration in `[base / 2, base]`.
    pub(crate) fn upper_half(&mut self, base: Duration) -> Duration {
        base.mul_f64(0.5 + 0.5 * self.unit())
    }
}

/// Exponential backoff with jitter: the delay doubles from `initial` up to `max`, and each
/// wait is drawn from the upper half of the current delay.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    jitter: Jitter,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration, jitter: Jitter) -> Self {
        Self {
            initial,
            max,
            current: initial,
            jitter,
        }
    }

    /// How long to wait before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.jitter.upper_half(self.current);
        self.current = (self.current * 2).min(self.max);
        delay
    }

    /// Start again from `initial` (after a connection that held).
    pub(crate) fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_stays_within_the_fraction_and_varies() {
        let mut jitter = Jitter::new("agent-1");
        let base = Duration::from_secs(10);
        let samples: Vec<_> = (0..200).map(|_| jitter.spread(base, 0.1)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= Duration::from_secs(9) && *d <= Duration::from_secs(11))
        );
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(
            distinct.len() > 100,
            "jitter should vary, got {} distinct values",
            distinct.len()
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
            Jitter::new("agent-1"),
        );
        let ceilings = [100, 200, 400, 800, 1600, 3200, 5000, 5000];
        for ceiling in ceilings {
            let delay = backoff.next_delay();
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                delay <= ceiling && delay >= ceiling / 2,
                "{delay:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
