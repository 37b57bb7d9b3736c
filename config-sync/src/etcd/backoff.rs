//! Capped exponential back-off with full jitter (sans-IO: the random source is passed in).

use std::time::Duration;

/// The waits between reconnection attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Waits start near `min` and double up to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max: max.max(min), attempt: 0 }
    }

    /// The next wait: a uniform draw from [min, cap], the cap doubling each attempt up to `max`
    /// ("full jitter", so that nodes that lost etcd together do not come back in step).
    /// `unit` is a random number in [0, 1).
    pub fn next(&mut self, unit: f64) -> Duration {
        let cap = self.min.saturating_mul(1u32 << self.attempt.min(20)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        self.min + (cap - self.min).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// After a success: the next wait starts small again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let tops: Vec<_> = (0..7).map(|_| b.next(0.999_999).as_millis()).collect();
        assert_eq!(tops, [100, 199, 399, 799, 1599, 1999, 1999]);
        assert_eq!(b.next(0.0), Duration::from_millis(100));
        b.reset();
        assert_eq!(b.next(0.999_999), Duration::from_millis(100), "the first wait is the minimum");
    }
}
