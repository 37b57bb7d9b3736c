//! What a check answers: allowed or not, and per window what the client may be told in headers.

use std::time::Duration;

use crate::Window;

/// One window's part of a [`Decision`]: what goes in the `X-RateLimit-*-<Window>` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowDecision {
    /// The window.
    pub window: Window,
    /// Requests allowed in the window.
    pub limit: u64,
    /// Requests the client may still send in the window, counting this one if it was allowed. For a
    /// sliding window, the whole part of `limit - estimate`.
    pub remaining: u64,
    /// Time until the window's counter rolls over: until the current calendar window ends (for a
    /// sliding window too; its estimate keeps decaying after that). Never zero.
    pub reset: Duration,
}

/// The answer to one request's check against all its windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether every window let the request through. When it is false no counter was incremented:
    /// refused requests do not eat the budget.
    pub allowed: bool,
    /// One entry per window checked, shortest window first.
    pub windows: Vec<WindowDecision>,
    /// For a refusal, the shortest wait after which every refusing window would let one more
    /// request through (if nothing else is counted meanwhile), in whole milliseconds; the gateway
    /// rounds it up to seconds for `Retry-After`. `None` when allowed.
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// The window with the fewest requests left (on a tie, the one that resets last): the one the
    /// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` headers describe. `None` if no
    /// window was checked.
    pub fn most_restrictive(&self) -> Option<&WindowDecision> {
        self.windows.iter().min_by(|a, b| a.remaining.cmp(&b.remaining).then(b.reset.cmp(&a.reset)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(window: Window, remaining: u64, reset_secs: u64) -> WindowDecision {
        WindowDecision { window, limit: 10, remaining, reset: Duration::from_secs(reset_secs) }
    }

    #[test]
    fn most_restrictive_is_the_fewest_remaining_then_the_latest_reset() {
        let decision = Decision {
            allowed: true,
            windows: vec![window(Window::Second, 5, 1), window(Window::Minute, 2, 30), window(Window::Hour, 2, 900)],
            retry_after: None,
        };
        assert_eq!(decision.most_restrictive().map(|w| w.window), Some(Window::Hour));
        let empty = Decision { allowed: true, windows: Vec::new(), retry_after: None };
        assert!(empty.most_restrictive().is_none());
    }
}
