//! The sans-IO core: given the counters of every window just before a request, and `now`, decide.
//!
//! Nothing here reads a clock or does I/O; time comes in as an argument. Both stores run exactly
//! this logic: [`crate::MemoryStore`] keeps a [`Counters`] per key and calls it, and
//! [`crate::RedisStore`]'s Lua script reads the same counters, applies the same test (the same
//! floating-point expression, so both agree to the bit), increments only when every window allows,
//! and hands the counts back so that [`decide`] computes remaining, reset and retry-after.
//!
//! A request is allowed when, in every window, the count with this request stays within the limit:
//! - fixed: `current + 1 <= limit`;
//! - sliding: `current + previous * ((len - elapsed) / len) + 1 <= limit`, where `previous` is the
//!   previous calendar window's count and `elapsed` how far `now` is into the current window.
//!
//! When allowed, every window's current counter is incremented by one; when refused, none is.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use crate::window::{unix_ms, WindowClock};
use crate::{Algorithm, Decision, Window, WindowDecision};

/// One window's counters just before a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowCounts {
    /// Requests counted in the current calendar window.
    pub current: u64,
    /// Requests counted in the calendar window before it (used by [`Algorithm::Sliding`] only).
    pub previous: u64,
}

/// Decides one request from the windows' counters just before it (`counts[i]` belongs to
/// `limits[i]`), without changing anything: what a store does once it has read its counters.
///
/// # Panics
///
/// If `limits` and `counts` differ in length.
pub fn decide(limits: &[(Window, u64)], algorithm: Algorithm, now: SystemTime, counts: &[WindowCounts]) -> Decision {
    decide_ms(limits, algorithm, unix_ms(now), counts, None)
}

/// [`decide`] with the time in milliseconds since the epoch, and `allowed` imposed when given
/// (the Redis script's verdict, which is what its increments followed).
pub(crate) fn decide_ms(
    limits: &[(Window, u64)],
    algorithm: Algorithm,
    now_ms: u64,
    counts: &[WindowCounts],
    allowed: Option<bool>,
) -> Decision {
    assert_eq!(limits.len(), counts.len(), "one WindowCounts per limit");
    let clocks =
        || limits.iter().zip(counts).map(|(&(window, limit), &counts)| (window, limit, counts, window.clock(now_ms)));
    let allowed =
        allowed.unwrap_or_else(|| clocks().all(|(_, limit, counts, clock)| allows(algorithm, limit, counts, &clock)));
    let windows = clocks()
        .map(|(window, limit, counts, clock)| WindowDecision {
            window,
            limit,
            remaining: remaining(algorithm, limit, counts, &clock, allowed),
            reset: Duration::from_millis(clock.until_end_ms()),
        })
        .collect();
    let retry_after = (!allowed).then(|| {
        let wait = clocks()
            .filter(|(_, limit, counts, clock)| !allows(algorithm, *limit, *counts, clock))
            .map(|(_, limit, counts, clock)| wait_ms(algorithm, limit, counts, &clock))
            .max()
            .unwrap_or(0);
        Duration::from_millis(wait)
    });
    Decision { allowed, windows, retry_after }
}

/// The sliding estimate of requests in the last window length, before this request. The Lua script
/// computes the very same expression (`cur + prev * ((len - elapsed) / len)`) in doubles.
fn estimate(counts: WindowCounts, len_ms: u64, elapsed_ms: u64) -> f64 {
    counts.current as f64 + counts.previous as f64 * ((len_ms - elapsed_ms) as f64 / len_ms as f64)
}

/// Whether one window lets one more request through at `elapsed_ms` into its current window.
fn allows_at(algorithm: Algorithm, limit: u64, counts: WindowCounts, len_ms: u64, elapsed_ms: u64) -> bool {
    match algorithm {
        Algorithm::Fixed => counts.current < limit,
        Algorithm::Sliding => estimate(counts, len_ms, elapsed_ms) + 1.0 <= limit as f64,
    }
}

fn allows(algorithm: Algorithm, limit: u64, counts: WindowCounts, clock: &WindowClock) -> bool {
    allows_at(algorithm, limit, counts, clock.len_ms, clock.elapsed_ms)
}

/// Requests left in one window after this decision.
fn remaining(algorithm: Algorithm, limit: u64, counts: WindowCounts, clock: &WindowClock, allowed: bool) -> u64 {
    let this = u64::from(allowed);
    match algorithm {
        Algorithm::Fixed => limit.saturating_sub(counts.current).saturating_sub(this),
        Algorithm::Sliding => {
            let left = limit as f64 - estimate(counts, clock.len_ms, clock.elapsed_ms) - this as f64;
            // `as` saturates: negative gives 0; the estimate never exceeds the limit by design.
            (left.floor() as u64).min(limit)
        }
    }
}

/// How long until a window that refuses now would let one more request through, in milliseconds,
/// assuming nothing else is counted meanwhile. A limit of zero never lets anything through; its
/// wait is until the window ends.
fn wait_ms(algorithm: Algorithm, limit: u64, counts: WindowCounts, clock: &WindowClock) -> u64 {
    let (len, elapsed) = (clock.len_ms, clock.elapsed_ms);
    if algorithm == Algorithm::Fixed || limit == 0 {
        return len - elapsed;
    }
    if counts.current < limit {
        // The current window alone has room: wait for the previous window's weight to decay. At
        // the next window start the estimate is `current` < limit, so that bound always works.
        let at = first_true(elapsed + 1, len, |e| allows_at(algorithm, limit, counts, len, e));
        at - elapsed
    } else {
        // Not before the next window; there, this window's count becomes the decaying one.
        let next = WindowCounts { current: 0, previous: counts.current };
        (len - elapsed) + first_true(0, len, |e| allows_at(algorithm, limit, next, len, e))
    }
}

/// The smallest `e` in `lo..hi` for which `pred` holds, `pred` being monotone (false then true);
/// `hi` if it holds nowhere there.
fn first_true(mut lo: u64, mut hi: u64, pred: impl Fn(u64) -> bool) -> u64 {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// The limits sorted shortest window first, each window once (a window given twice keeps its
/// smaller limit), so a store never counts one window twice. Borrows when already so.
pub(crate) fn normalize(limits: &[(Window, u64)]) -> Cow<'_, [(Window, u64)]> {
    if limits.windows(2).all(|pair| pair[0].0 < pair[1].0) {
        return Cow::Borrowed(limits);
    }
    let mut sorted = limits.to_vec();
    sorted.sort_unstable();
    sorted.dedup_by_key(|(window, _)| *window);
    Cow::Owned(sorted)
}

/// Each limit divided among `members` nodes, rounded up (so at least 1 for a non-zero limit):
/// the local fallback's limits when the shared counters are out of reach. Zero members count as one.
pub fn per_member(limits: &[(Window, u64)], members: usize) -> Vec<(Window, u64)> {
    let members = u64::try_from(members.max(1)).unwrap_or(u64::MAX);
    limits.iter().map(|&(window, limit)| (window, limit.div_ceil(members))).collect()
}

/// One window's counters as a [`Counters`] keeps them.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The calendar window `current` belongs to.
    index: u64,
    current: u64,
    /// The count of window `index - 1`.
    previous: u64,
}

impl Slot {
    /// The counts as seen from window `index` (never before `self.index`).
    fn counts_at(&self, index: u64) -> WindowCounts {
        if index == self.index {
            WindowCounts { current: self.current, previous: self.previous }
        } else if index == self.index + 1 {
            WindowCounts { current: 0, previous: self.current }
        } else {
            WindowCounts::default()
        }
    }

    fn record(&mut self, index: u64) {
        let counts = self.counts_at(index);
        *self = Slot { index, current: counts.current + 1, previous: counts.previous };
    }
}

/// Every window's counters for one key: the state machine behind [`crate::MemoryStore`], usable on
/// its own (tests, simulations). Time comes in as an argument and never goes backwards for one
/// key: an earlier `now` than one already seen counts as that one.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    slots: [Slot; Window::ALL.len()],
    /// The latest `now` seen, in milliseconds since the epoch.
    last_ms: u64,
    /// When every counter this holds is too old to matter, in milliseconds since the epoch.
    expires_ms: u64,
}

impl Counters {
    /// Counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides one request at `now` and, if it is allowed, counts it in every window.
    pub fn check(&mut self, limits: &[(Window, u64)], algorithm: Algorithm, now: SystemTime) -> Decision {
        self.check_ms(&normalize(limits), algorithm, unix_ms(now))
    }

    /// Whether nothing counted here matters any more at `now`: the key can be forgotten. Fixed
    /// counters matter until their window ends, sliding ones until the window after it ends.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.is_expired_ms(unix_ms(now))
    }

    pub(crate) fn is_expired_ms(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_ms
    }

    pub(crate) fn expires_ms(&self) -> u64 {
        self.expires_ms
    }

    /// [`Counters::check`] with normalized limits and the time in milliseconds since the epoch.
    pub(crate) fn check_ms(&mut self, limits: &[(Window, u64)], algorithm: Algorithm, now_ms: u64) -> Decision {
        let now_ms = now_ms.max(self.last_ms);
        self.last_ms = now_ms;
        let mut counts = [WindowCounts::default(); Window::ALL.len()];
        let counts = &mut counts[..limits.len()];
        for (counts, &(window, _)) in counts.iter_mut().zip(limits) {
            *counts = self.slots[window.slot()].counts_at(window.clock(now_ms).index);
        }
        let decision = decide_ms(limits, algorithm, now_ms, counts, None);
        if decision.allowed {
            let keep = match algorithm {
                Algorithm::Fixed => 1,
                Algorithm::Sliding => 2,
            };
            for &(window, _) in limits {
                let clock = window.clock(now_ms);
                self.slots[window.slot()].record(clock.index);
                self.expires_ms = self.expires_ms.max((clock.index + keep) * clock.len_ms);
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    /// 2024-01-01T00:00:00Z plus `ms` milliseconds: a minute, hour and day boundary.
    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_704_067_200_000 + ms)
    }

    const MIN: u64 = 60_000;

    fn run(counters: &mut Counters, limits: &[(Window, u64)], algorithm: Algorithm, now: SystemTime, n: u64) -> u64 {
        (0..n).filter(|_| counters.check(limits, algorithm, now).allowed).count() as u64
    }

    #[test]
    fn fixed_window_resets_on_the_boundary() {
        let limits = [(Window::Minute, 3)];
        let mut c = Counters::new();
        assert_eq!(run(&mut c, &limits, Algorithm::Fixed, at(10_000), 5), 3);
        let refused = c.check(&limits, Algorithm::Fixed, at(MIN - 1));
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Some(Duration::from_millis(1)));
        assert_eq!(refused.windows[0].reset, Duration::from_millis(1));
        // The first millisecond of the next minute starts from zero: the fixed window's burst.
        assert_eq!(run(&mut c, &limits, Algorithm::Fixed, at(MIN), 5), 3);
    }

    #[test]
    fn fixed_window_remaining_reset_and_retry_after() {
        let limits = [(Window::Minute, 2)];
        let mut c = Counters::new();
        let first = c.check(&limits, Algorithm::Fixed, at(15_000));
        let expected =
            WindowDecision { window: Window::Minute, limit: 2, remaining: 1, reset: Duration::from_secs(45) };
        assert_eq!(first, Decision { allowed: true, windows: vec![expected], retry_after: None });
        assert_eq!(c.check(&limits, Algorithm::Fixed, at(20_000)).windows[0].remaining, 0);
        let refused = c.check(&limits, Algorithm::Fixed, at(30_000));
        assert!(!refused.allowed);
        assert_eq!(refused.windows[0].remaining, 0);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(30)));
    }

    #[test]
    fn sliding_window_allows_no_double_burst_at_the_edge() {
        let limits = [(Window::Minute, 10)];
        let mut c = Counters::new();
        // 10 requests at 00:59.
        assert_eq!(run(&mut c, &limits, Algorithm::Sliding, at(59_000), 10), 10);
        assert!(!c.check(&limits, Algorithm::Sliding, at(59_999)).allowed);
        // At 01:00 the previous minute weighs fully: nothing more.
        let edge = c.check(&limits, Algorithm::Sliding, at(MIN));
        assert!(!edge.allowed);
        assert_eq!(edge.windows[0].remaining, 0);
        // It recovers gradually: one request per 6 s of decay.
        assert_eq!(run(&mut c, &limits, Algorithm::Sliding, at(MIN + 5_999), 10), 0);
        assert_eq!(run(&mut c, &limits, Algorithm::Sliding, at(MIN + 6_000), 10), 1);
        assert_eq!(run(&mut c, &limits, Algorithm::Sliding, at(MIN + 30_000), 10), 4);
        // 10 in the previous minute and 5 in this one: 10 * 0.5 + 5 = 10 at 01:30.
        assert!(!c.check(&limits, Algorithm::Sliding, at(MIN + 30_000)).allowed);
        // By the end of the minute the burst has decayed away: 5 + 10 * 1/60000, room for 4 more.
        assert_eq!(run(&mut c, &limits, Algorithm::Sliding, at(2 * MIN - 1), 10), 4);
    }

    #[test]
    fn sliding_window_retry_after_follows_the_decay() {
        let limits = [(Window::Minute, 10)];
        let mut c = Counters::new();
        run(&mut c, &limits, Algorithm::Sliding, at(59_000), 10);
        // At 01:00 with 10 in the previous minute: one slot frees when 10 * (1 - e/60) <= 9, e = 6 s,
        // not at the end of the minute.
        let refused = c.check(&limits, Algorithm::Sliding, at(MIN));
        assert_eq!(refused.retry_after, Some(Duration::from_secs(6)));
        assert_eq!(refused.windows[0].reset, Duration::from_secs(60));
        let refused = c.check(&limits, Algorithm::Sliding, at(MIN + 2_500));
        assert_eq!(refused.retry_after, Some(Duration::from_millis(3_500)));
        // Waiting exactly that long works, a millisecond less does not.
        assert!(!c.check(&limits, Algorithm::Sliding, at(MIN + 5_999)).allowed);
        assert!(c.check(&limits, Algorithm::Sliding, at(MIN + 6_000)).allowed);
    }

    #[test]
    fn sliding_retry_after_when_the_current_window_is_full() {
        let limits = [(Window::Minute, 4)];
        let mut c = Counters::new();
        assert_eq!(run(&mut c, &limits, Algorithm::Sliding, at(40_000), 4), 4);
        // Full in the current minute: wait 20 s for it to end, then until 4 * (1 - e/60) <= 3: 15 s.
        let refused = c.check(&limits, Algorithm::Sliding, at(40_000));
        assert_eq!(refused.retry_after, Some(Duration::from_secs(35)));
        assert!(!c.check(&limits, Algorithm::Sliding, at(MIN + 14_999)).allowed);
        assert!(c.check(&limits, Algorithm::Sliding, at(MIN + 15_000)).allowed);
    }

    #[test]
    fn sliding_remaining_is_the_whole_part_of_what_is_left() {
        let limits = [(Window::Minute, 10)];
        let mut c = Counters::new();
        run(&mut c, &limits, Algorithm::Sliding, at(50_000), 3);
        // 01:15: estimate 3 * 0.75 = 2.25, this request makes 3.25: 6.75 left, 6 whole.
        let d = c.check(&limits, Algorithm::Sliding, at(MIN + 15_000));
        assert!(d.allowed);
        assert_eq!(d.windows[0].remaining, 6);
        assert_eq!(d.windows[0].reset, Duration::from_secs(45));
    }

    #[test]
    fn a_refused_request_increments_no_window() {
        let limits = [(Window::Second, 100), (Window::Minute, 2)];
        for algorithm in [Algorithm::Fixed, Algorithm::Sliding] {
            let mut c = Counters::new();
            assert_eq!(run(&mut c, &limits, algorithm, at(1_000), 2), 2);
            // The minute refuses; the second window (with room) must not count the refusals.
            for _ in 0..50 {
                assert!(!c.check(&limits, algorithm, at(1_500)).allowed);
            }
            let refused = c.check(&limits, algorithm, at(1_500));
            assert_eq!(refused.windows[0].remaining, 98, "{algorithm:?}: second window untouched");
            assert_eq!(refused.windows[1].remaining, 0);
            assert_eq!(c.slots[Window::Second.slot()].current, 2, "{algorithm:?}");
        }
    }

    #[test]
    fn multi_window_retry_after_is_the_longest_refusing_wait() {
        let limits = [(Window::Second, 1), (Window::Minute, 100)];
        let mut c = Counters::new();
        assert!(c.check(&limits, Algorithm::Fixed, at(30_250)).allowed);
        let refused = c.check(&limits, Algorithm::Fixed, at(30_400));
        // Only the second window refuses: wait for it, not for the minute.
        assert_eq!(refused.retry_after, Some(Duration::from_millis(600)));
        assert_eq!(refused.windows.iter().map(|w| w.remaining).collect::<Vec<_>>(), [0, 99]);
        let limits = [(Window::Second, 1), (Window::Minute, 1)];
        let mut c = Counters::new();
        assert!(c.check(&limits, Algorithm::Fixed, at(30_250)).allowed);
        let refused = c.check(&limits, Algorithm::Fixed, at(30_400));
        assert_eq!(refused.retry_after, Some(Duration::from_millis(29_600)));
    }

    #[test]
    fn limits_are_sorted_and_a_repeated_window_keeps_the_smaller_limit() {
        let limits = [(Window::Hour, 50), (Window::Minute, 5), (Window::Minute, 3)];
        let d = Counters::new().check(&limits, Algorithm::Fixed, at(0));
        let got: Vec<_> = d.windows.iter().map(|w| (w.window, w.limit)).collect();
        assert_eq!(got, [(Window::Minute, 3), (Window::Hour, 50)]);
        assert!(matches!(normalize(&[(Window::Second, 1), (Window::Day, 2)]), Cow::Borrowed(_)));
    }

    #[test]
    fn decide_is_pure() {
        let counts = [WindowCounts { current: 2, previous: 4 }];
        let d = decide(&[(Window::Minute, 5)], Algorithm::Sliding, at(MIN + 30_000), &counts);
        // 2 + 4 * 0.5 + 1 = 5 <= 5.
        assert!(d.allowed);
        assert_eq!(d.windows[0].remaining, 0);
        let d = decide(&[(Window::Minute, 5)], Algorithm::Sliding, at(MIN + 29_999), &counts);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_millis(1)));
    }

    #[test]
    fn zero_limit_refuses_everything() {
        let mut c = Counters::new();
        let d = c.check(&[(Window::Minute, 0)], Algorithm::Sliding, at(45_000));
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_secs(15)));
    }

    #[test]
    fn per_member_rounds_up() {
        let limits = [(Window::Second, 10), (Window::Minute, 1), (Window::Hour, 0)];
        assert_eq!(per_member(&limits, 3), [(Window::Second, 4), (Window::Minute, 1), (Window::Hour, 0)]);
        assert_eq!(per_member(&limits, 0), limits);
    }

    #[test]
    fn counters_expire_after_what_they_count_stops_mattering() {
        let mut c = Counters::new();
        assert!(c.is_expired(at(0)), "nothing counted yet");
        c.check(&[(Window::Minute, 5)], Algorithm::Fixed, at(10_000));
        assert!(!c.is_expired(at(MIN - 1)));
        assert!(c.is_expired(at(MIN)));
        c.check(&[(Window::Minute, 5)], Algorithm::Sliding, at(MIN + 10_000));
        assert!(!c.is_expired(at(3 * MIN - 1)), "a sliding count weighs on the next minute");
        assert!(c.is_expired(at(3 * MIN)));
    }

    #[test]
    fn time_never_goes_backwards_for_a_key() {
        let limits = [(Window::Minute, 1)];
        let mut c = Counters::new();
        assert!(c.check(&limits, Algorithm::Fixed, at(MIN + 1)).allowed);
        assert!(!c.check(&limits, Algorithm::Fixed, at(MIN - 1)).allowed, "an earlier now counts as the latest");
    }
}
