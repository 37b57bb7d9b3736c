//! Kong's health counters for one target, sans-IO.
//!
//! Four counters: successes, TCP failures, timeouts, HTTP failures. A success clears every
//! failure counter; any failure clears only the success counter. When a counter reaches its
//! threshold (0 turns that counter off) the state flips, if it is not already there, and all
//! counters start again from zero. An operator's manual set does the same. Active probes and
//! passive observations feed the same counters, each with its own thresholds (as in
//! lua-resty-healthcheck).

use std::fmt;

/// Whether a target may take traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Takes traffic.
    Healthy,
    /// Skipped by the balancer.
    Unhealthy,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Healthy => "HEALTHY",
            State::Unhealthy => "UNHEALTHY",
        })
    }
}

/// What one probe or one proxied exchange said about a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A status counted as healthy (or, for TCP checks, a connection).
    Success,
    /// The TCP connection failed.
    TcpFailure,
    /// No answer in time.
    Timeout,
    /// A status counted as unhealthy.
    HttpFailure,
}

/// The counts at which the state flips; 0 turns a counter off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Thresholds {
    /// Successes in a row that make a target healthy.
    pub successes: u32,
    /// TCP failures in a row that make a target unhealthy.
    pub tcp_failures: u32,
    /// Timeouts in a row that make a target unhealthy.
    pub timeouts: u32,
    /// HTTP failures in a row that make a target unhealthy.
    pub http_failures: u32,
}

impl Thresholds {
    /// Whether every counter is off.
    pub fn all_off(&self) -> bool {
        *self == Thresholds::default()
    }
}

/// A state change and the counter that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// The counter that reached its threshold: `successes`, `tcp_failures`, `timeouts`,
    /// `http_failures`, or `manual` for an operator's set.
    pub cause: &'static str,
    /// The counter's value when it tripped (0 for a manual set).
    pub count: u32,
}

/// One target's state and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// The current state.
    pub state: State,
    /// Successes in a row.
    pub successes: u32,
    /// TCP failures since the last success.
    pub tcp_failures: u32,
    /// Timeouts since the last success.
    pub timeouts: u32,
    /// HTTP failures since the last success.
    pub http_failures: u32,
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new(State::Healthy)
    }
}

impl Counters {
    /// A target in `state` with every counter at zero.
    pub fn new(state: State) -> Counters {
        Counters { state, successes: 0, tcp_failures: 0, timeouts: 0, http_failures: 0 }
    }

    /// Counts one outcome against `thresholds`; returns the transition if the state flipped.
    pub fn record(&mut self, outcome: Outcome, thresholds: &Thresholds) -> Option<Transition> {
        let (count, threshold, to, cause) = match outcome {
            Outcome::Success => {
                self.tcp_failures = 0;
                self.timeouts = 0;
                self.http_failures = 0;
                self.successes = self.successes.saturating_add(1);
                (self.successes, thresholds.successes, State::Healthy, "successes")
            }
            Outcome::TcpFailure => {
                self.successes = 0;
                self.tcp_failures = self.tcp_failures.saturating_add(1);
                (self.tcp_failures, thresholds.tcp_failures, State::Unhealthy, "tcp_failures")
            }
            Outcome::Timeout => {
                self.successes = 0;
                self.timeouts = self.timeouts.saturating_add(1);
                (self.timeouts, thresholds.timeouts, State::Unhealthy, "timeouts")
            }
            Outcome::HttpFailure => {
                self.successes = 0;
                self.http_failures = self.http_failures.saturating_add(1);
                (self.http_failures, thresholds.http_failures, State::Unhealthy, "http_failures")
            }
        };
        if threshold == 0 || count < threshold || self.state == to {
            return None;
        }
        let from = self.state;
        *self = Counters::new(to);
        Some(Transition { from, to, cause, count })
    }

    /// An operator's set: the state becomes `state` and every counter clears, whether or not
    /// the state changed.
    pub fn set(&mut self, state: State) -> Option<Transition> {
        let from = self.state;
        *self = Counters::new(state);
        (from != state).then_some(Transition { from, to: state, cause: "manual", count: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { successes: 2, tcp_failures: 2, timeouts: 3, http_failures: 3 };

    fn run(counters: &mut Counters, outcomes: &[Outcome]) -> Vec<Transition> {
        outcomes.iter().filter_map(|o| counters.record(*o, &T)).collect()
    }

    #[test]
    fn failures_reaching_their_threshold_make_a_target_unhealthy() {
        let mut c = Counters::default();
        let t = run(&mut c, &[Outcome::TcpFailure, Outcome::TcpFailure]);
        assert_eq!(t, [Transition { from: State::Healthy, to: State::Unhealthy, cause: "tcp_failures", count: 2 }]);
        assert_eq!(c, Counters::new(State::Unhealthy), "a transition clears the counters");
        let mut c = Counters::default();
        assert_eq!(run(&mut c, &[Outcome::Timeout; 3])[0].cause, "timeouts");
        let mut c = Counters::default();
        assert_eq!(run(&mut c, &[Outcome::HttpFailure; 3])[0].cause, "http_failures");
    }

    #[test]
    fn a_success_clears_every_failure_counter() {
        let mut c = Counters::default();
        run(&mut c, &[Outcome::TcpFailure, Outcome::Timeout, Outcome::Timeout, Outcome::HttpFailure]);
        assert_eq!((c.tcp_failures, c.timeouts, c.http_failures), (1, 2, 1));
        assert!(run(&mut c, &[Outcome::Success]).is_empty());
        assert_eq!((c.tcp_failures, c.timeouts, c.http_failures, c.successes), (0, 0, 0, 1));
        assert!(run(&mut c, &[Outcome::TcpFailure]).is_empty(), "the count started over");
    }

    #[test]
    fn a_failure_clears_only_the_success_counter() {
        let mut c = Counters::new(State::Unhealthy);
        run(&mut c, &[Outcome::Success, Outcome::Timeout]);
        assert_eq!((c.successes, c.timeouts), (0, 1));
        run(&mut c, &[Outcome::HttpFailure]);
        assert_eq!((c.timeouts, c.http_failures), (1, 1), "failure counters add up independently");
    }

    #[test]
    fn successes_bring_an_unhealthy_target_back() {
        let mut c = Counters::new(State::Unhealthy);
        assert!(run(&mut c, &[Outcome::Success]).is_empty());
        let t = run(&mut c, &[Outcome::Success]);
        assert_eq!(t, [Transition { from: State::Unhealthy, to: State::Healthy, cause: "successes", count: 2 }]);
        let mut c = Counters::new(State::Unhealthy);
        assert!(run(&mut c, &[Outcome::Success, Outcome::Timeout, Outcome::Success]).is_empty(), "not in a row");
    }

    #[test]
    fn reaching_a_threshold_in_the_same_state_changes_nothing() {
        let mut c = Counters::default();
        assert!(run(&mut c, &[Outcome::Success; 5]).is_empty());
        assert_eq!(c.successes, 5);
        let mut c = Counters::new(State::Unhealthy);
        assert!(run(&mut c, &[Outcome::TcpFailure; 5]).is_empty());
    }

    #[test]
    fn a_zero_threshold_turns_its_counter_off() {
        let off = Thresholds::default();
        let mut c = Counters::default();
        for _ in 0..100 {
            assert_eq!(c.record(Outcome::TcpFailure, &off), None);
        }
        let mut c = Counters::new(State::Unhealthy);
        for _ in 0..100 {
            assert_eq!(c.record(Outcome::Success, &off), None);
        }
        assert!(off.all_off() && !T.all_off());
    }

    #[test]
    fn a_manual_set_clears_the_counters() {
        let mut c = Counters::default();
        run(&mut c, &[Outcome::TcpFailure]);
        assert_eq!(
            c.set(State::Unhealthy),
            Some(Transition { from: State::Healthy, to: State::Unhealthy, cause: "manual", count: 0 })
        );
        assert_eq!(c, Counters::new(State::Unhealthy));
        run(&mut c, &[Outcome::Success]);
        assert_eq!(c.set(State::Unhealthy), None, "no change of state, but the counters clear");
        assert_eq!(c.successes, 0);
    }

    #[test]
    fn counters_saturate() {
        let mut c = Counters { successes: u32::MAX, ..Counters::default() };
        c.record(Outcome::Success, &Thresholds::default());
        assert_eq!(c.successes, u32::MAX);
    }
}
