//! The windows a limit is counted over, the two ways of counting, and where `now` falls in a window.
//!
//! Windows lie on calendar boundaries, like Kong's: a window of `len` seconds starts at
//! `floor(unix_time / len) * len`, so every node that agrees on the time agrees on the window and on
//! its counter's key. Time is handled in whole milliseconds since the Unix epoch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A window a limit is counted over. Ordered from the shortest to the longest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Window {
    /// One second.
    Second,
    /// Sixty seconds.
    Minute,
    /// 3,600 seconds.
    Hour,
    /// 86,400 seconds (a UTC day: days start at midnight UTC).
    Day,
}

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 4] = [Window::Second, Window::Minute, Window::Hour, Window::Day];

    /// The window's length in seconds.
    pub const fn secs(self) -> u64 {
        match self {
            Window::Second => 1,
            Window::Minute => 60,
            Window::Hour => 3_600,
            Window::Day => 86_400,
        }
    }

    /// The window's length.
    pub const fn len(self) -> Duration {
        Duration::from_secs(self.secs())
    }

    /// The name used in config: `second`, `minute`, `hour`, `day`.
    pub const fn name(self) -> &'static str {
        match self {
            Window::Second => "second",
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }

    /// The name as it appears in headers such as `X-RateLimit-Limit-Minute`: `Second`, `Minute`, …
    pub const fn title(self) -> &'static str {
        match self {
            Window::Second => "Second",
            Window::Minute => "Minute",
            Window::Hour => "Hour",
            Window::Day => "Day",
        }
    }

    /// The window's length in milliseconds.
    pub(crate) const fn len_ms(self) -> u64 {
        self.secs() * 1_000
    }

    /// The position in the array of per-window slots ([`crate::Counters`]).
    pub(crate) const fn slot(self) -> usize {
        self as usize
    }

    /// Where `now_ms` (milliseconds since the epoch) falls in this window.
    pub(crate) const fn clock(self, now_ms: u64) -> WindowClock {
        let len_ms = self.len_ms();
        let index = now_ms / len_ms;
        WindowClock { index, len_ms, elapsed_ms: now_ms - index * len_ms }
    }
}

/// How requests are counted in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// One counter per calendar window, reset to zero when the window ends (Kong). Cheap, but a
    /// client may send up to twice the limit across a window boundary.
    Fixed,
    /// The current window's counter plus the previous window's, weighted by how much of the
    /// previous window still lies within one window length of now (APISIX, Cloudflare):
    /// `current + previous * (1 - elapsed / len)`. No double burst at a boundary. The default.
    #[default]
    Sliding,
}

/// Where an instant falls in a window: which window (its number since the epoch) and how far in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowClock {
    /// The window's number: `floor(now / len)`. Its start is `index * len`.
    pub index: u64,
    /// The window's length, in milliseconds.
    pub len_ms: u64,
    /// Milliseconds since the window started, in `0..len_ms`.
    pub elapsed_ms: u64,
}

impl WindowClock {
    /// Milliseconds until the window ends (in `1..=len_ms`).
    pub const fn until_end_ms(&self) -> u64 {
        self.len_ms - self.elapsed_ms
    }

    /// The window's start, in whole seconds since the epoch (windows start on whole seconds).
    pub const fn start_secs(&self) -> u64 {
        self.index * self.len_ms / 1_000
    }
}

/// Milliseconds since the Unix epoch; instants before it count as the epoch.
pub(crate) fn unix_ms(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_start_on_calendar_boundaries() {
        // 2024-01-01T00:00:59.500Z
        let now_ms = 1_704_067_259_500;
        let minute = Window::Minute.clock(now_ms);
        assert_eq!(minute.start_secs(), 1_704_067_200);
        assert_eq!(minute.elapsed_ms, 59_500);
        assert_eq!(minute.until_end_ms(), 500);
        let day = Window::Day.clock(now_ms);
        assert_eq!(day.start_secs(), 1_704_067_200, "2024-01-01 starts at midnight UTC");
        let second = Window::Second.clock(now_ms);
        assert_eq!((second.start_secs(), second.elapsed_ms), (1_704_067_259, 500));
    }

    #[test]
    fn names_and_order() {
        assert_eq!(Window::ALL.map(Window::name), ["second", "minute", "hour", "day"]);
        assert_eq!(Window::Minute.title(), "Minute");
        assert!(Window::Second < Window::Day);
        assert_eq!(Window::Hour.len(), Duration::from_secs(3_600));
    }

    #[test]
    fn times_before_the_epoch_count_as_the_epoch() {
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
    }
}
