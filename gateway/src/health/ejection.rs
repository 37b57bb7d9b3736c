//! Timed ejection of targets that passive checks made unhealthy (Envoy's outlier detection),
//! sans-IO: time comes in as arguments, and the caller sets the timer that brings the target
//! back (one timer per ejection, never a scan).
//!
//! With `ejection_time` t, the n-th ejection in a row lasts `min(t × 2^(n−1), 300 s)`. The
//! count starts over when the target has stayed healthy for [`RESET_AFTER`] since it last came
//! back (Envoy instead takes one off the multiplier per healthy interval; one rule, with no
//! interval to configure, is simpler to predict).

use config_sync::model::MAX_EJECTION_TIME;
use std::time::{Duration, Instant};

/// Healthy this long since its last return, a target's next ejection is its first again.
pub const RESET_AFTER: Duration = MAX_EJECTION_TIME;

/// One target's ejections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ejections {
    /// Ejections in a row.
    count: u32,
    /// When the target last turned healthy.
    returned_at: Option<Instant>,
    /// When the pending timed return is due.
    due: Option<Instant>,
}

impl Ejections {
    /// A passive ejection at `now` with `ejection_time` `base` (not zero): when it ends.
    pub fn eject(&mut self, now: Instant, base: Duration) -> Instant {
        if self.returned_at.is_some_and(|at| now.saturating_duration_since(at) >= RESET_AFTER) {
            self.count = 0;
        }
        let factor = 1u32.checked_shl(self.count).unwrap_or(u32::MAX);
        let time = base.saturating_mul(factor).min(MAX_EJECTION_TIME);
        self.count = self.count.saturating_add(1);
        let due = now + time;
        self.due = Some(due);
        due
    }

    /// Whether a timed return due at `due` is still pending: no other change of state came
    /// first.
    pub fn is_due(&self, due: Instant) -> bool {
        self.due == Some(due)
    }

    /// The target turned healthy at `now`, by its timer or otherwise.
    pub fn returned(&mut self, now: Instant) {
        self.due = None;
        self.returned_at = Some(now);
    }

    /// The target was made unhealthy by a probe or an operator: no timed return.
    pub fn cancel(&mut self) {
        self.due = None;
    }

    /// Ejections in a row so far.
    pub fn count(&self) -> u32 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn each_ejection_in_a_row_lasts_twice_the_last_up_to_300_s() {
        let mut e = Ejections::default();
        let mut now = Instant::now();
        let mut lasted = Vec::new();
        for _ in 0..11 {
            let due = e.eject(now, SECOND);
            assert!(e.is_due(due));
            lasted.push((due - now).as_secs());
            // Back at once, and failing again shortly after.
            e.returned(due);
            now = due + SECOND;
        }
        assert_eq!(lasted, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(e.count(), 11);
    }

    #[test]
    fn healthy_for_300_s_the_count_starts_over() {
        let mut e = Ejections::default();
        let start = Instant::now();
        let due = e.eject(start, SECOND);
        e.returned(due);
        let due = e.eject(due + Duration::from_secs(299), SECOND);
        assert_eq!(e.count(), 2);
        e.returned(due);
        let now = due + RESET_AFTER;
        assert_eq!(e.eject(now, SECOND) - now, SECOND);
        assert_eq!(e.count(), 1);
    }

    #[test]
    fn another_change_of_state_cancels_the_timed_return() {
        let mut e = Ejections::default();
        let now = Instant::now();
        let due = e.eject(now, SECOND);
        e.cancel();
        assert!(!e.is_due(due), "made unhealthy by a probe or operator: no timed return");
        let due = e.eject(now, SECOND);
        e.returned(now + Duration::from_millis(10));
        assert!(!e.is_due(due), "back early (a probe): the timer does nothing");
        // A huge base saturates instead of overflowing.
        assert_eq!(e.eject(now, Duration::MAX) - now, MAX_EJECTION_TIME);
    }
}
