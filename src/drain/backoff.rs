//! Exponential back-off with jitter: `retry_initial`, doubled each time, capped at
//! `retry_max`; each wait is drawn between half and all of the current step, so many
//! daemons do not retry in lock-step.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Option<Duration>,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            step: None,
        }
    }

    /// The next wait, and the step doubled for the time after.
    pub fn next_delay(&mut self) -> Duration {
        let step = match self.step {
            None => self.initial,
            Some(s) => (s * 2).min(self.max),
        };
        self.step = Some(step);
        let half = step / 2;
        half + rand::rng().random_range(Duration::ZERO..=step - half)
    }

    pub fn reset(&mut self) {
        self.step = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(10));
        let waits: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        let bounds = [(1, 2), (2, 4), (4, 8), (5, 10), (5, 10)];
        for (w, (lo, hi)) in waits.iter().zip(bounds) {
            assert!(
                *w >= Duration::from_secs(lo) && *w <= Duration::from_secs(hi),
                "{w:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(2));
    }
}
