//! One target's health on this node: its counters, and the flag the balancer reads on every
//! request.

use super::counters::{Counters, Outcome, State, Thresholds, Transition};
use super::ejection::Ejections;
use super::policy::PassivePolicy;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The instant `healthy_since` counts from: the first time it was asked for.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Who reported an outcome, for the state-change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An active probe.
    Active,
    /// Proxied traffic.
    Passive,
    /// An operator's reset on this node.
    Manual,
    /// An operator's reset on another node, received by gossip.
    Gossip,
    /// The end of a passive ejection's `ejection_time`.
    Ejection,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Active => "active",
            Source::Passive => "passive",
            Source::Manual => "manual",
            Source::Gossip => "gossip",
            Source::Ejection => "ejection_time",
        }
    }
}

/// The health of one target of one upstream. Shared by every runtime that serves the target,
/// so that config changes keep it.
pub struct TargetHealth {
    upstream: String,
    address: String,
    /// Read on every pick; written only on a transition.
    healthy: AtomicBool,
    inner: Mutex<Inner>,
    /// Passive ejections so far (`gateway_upstream_ejections_total`).
    ejected: AtomicU64,
    /// When it last turned healthy, as nanoseconds since [`epoch`] (0: healthy from the start).
    healthy_since: AtomicU64,
    /// The state, for probe loops that wait on a change.
    state: watch::Sender<State>,
}

/// The counters, and the ejections they made.
#[derive(Default)]
struct Inner {
    counters: Counters,
    ejections: Ejections,
}

impl Inner {
    /// Keeps the ejections in step with a transition not made by passive checks: back to
    /// healthy at `now`, or out until a probe or an operator says otherwise.
    fn other(&mut self, transition: Option<Transition>, now: Instant) {
        match transition.map(|t| t.to) {
            Some(State::Healthy) => self.ejections.returned(now),
            Some(State::Unhealthy) => self.ejections.cancel(),
            None => {}
        }
    }
}

impl TargetHealth {
    /// A healthy target with zeroed counters.
    pub fn new(upstream: &str, address: &str) -> TargetHealth {
        TargetHealth {
            upstream: upstream.to_owned(),
            address: address.to_owned(),
            healthy: AtomicBool::new(true),
            inner: Mutex::new(Inner::default()),
            ejected: AtomicU64::new(0),
            healthy_since: AtomicU64::new(0),
            state: watch::Sender::new(State::Healthy),
        }
    }

    /// Whether the balancer may choose this target.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The state and counters now.
    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    /// Its share of its full weight at `now` during a `slow_start` of `window` (not zero)
    /// since it last turned healthy: from 0 to 1, linearly; 1 for a target healthy from the
    /// start or past the window. One atomic load.
    pub fn warmth(&self, now: Instant, window: Duration) -> f64 {
        let since = self.healthy_since.load(Ordering::Relaxed);
        if since == 0 {
            return 1.0;
        }
        let elapsed = now.saturating_duration_since(epoch() + Duration::from_nanos(since));
        (elapsed.as_secs_f64() / window.as_secs_f64()).min(1.0)
    }

    /// How many times passive checks made it unhealthy.
    pub fn ejections(&self) -> u64 {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Waits for state changes.
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }

    /// `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Counts an outcome of an active probe against `thresholds`.
    pub fn record(&self, outcome: Outcome, thresholds: &Thresholds, source: Source) -> Option<Transition> {
        let transition = {
            let mut inner = self.lock();
            let transition = inner.counters.record(outcome, thresholds);
            inner.other(transition, Instant::now());
            transition
        };
        self.apply(transition, source)
    }

    /// Counts a proxied exchange's outcome at `now` against `policy`. When it ejects the target
    /// and the policy has an `ejection_time`, returns when the target is due back: the caller
    /// then calls [`TargetHealth::return_from_ejection`] at that time.
    pub fn record_passive(&self, outcome: Outcome, policy: &PassivePolicy, now: Instant) -> Option<Instant> {
        let (transition, due) = {
            let mut inner = self.lock();
            let transition = inner.counters.record(outcome, &policy.thresholds);
            let due = match transition.map(|t| t.to) {
                Some(State::Unhealthy) => {
                    self.ejected.fetch_add(1, Ordering::Relaxed);
                    let base = policy.ejection_time;
                    (!base.is_zero()).then(|| inner.ejections.eject(now, base))
                }
                Some(State::Healthy) => {
                    inner.ejections.returned(now);
                    None
                }
                None => None,
            };
            (transition, due)
        };
        self.apply(transition, Source::Passive);
        due
    }

    /// Ends the ejection due back at `due`: the target is healthy again, unless a probe, an
    /// operator or traffic changed its state meanwhile.
    pub fn return_from_ejection(&self, due: Instant) -> Option<Transition> {
        let transition = {
            let mut inner = self.lock();
            if !inner.ejections.is_due(due) {
                return None;
            }
            inner.ejections.returned(due);
            inner.counters.set(State::Healthy).map(|t| Transition { cause: "ejection_time", ..t })
        };
        self.apply(transition, Source::Ejection)
    }

    /// An operator's set: takes `state` and clears the counters. `source` says whether it was
    /// made on this node or received from another.
    pub fn set(&self, state: State, source: Source) -> Option<Transition> {
        let transition = {
            let mut inner = self.lock();
            let transition = inner.counters.set(state);
            inner.other(transition, Instant::now());
            if state == State::Unhealthy {
                // Also on a target already out: an operator's word is never timed.
                inner.ejections.cancel();
            }
            transition
        };
        self.apply(transition, source)
    }

    fn apply(&self, transition: Option<Transition>, source: Source) -> Option<Transition> {
        let t = transition?;
        if t.to == State::Healthy {
            let since = Instant::now().saturating_duration_since(epoch()).as_nanos();
            self.healthy_since.store(u64::try_from(since).unwrap_or(u64::MAX).max(1), Ordering::Relaxed);
        }
        self.healthy.store(t.to == State::Healthy, Ordering::Relaxed);
        self.state.send_replace(t.to);
        let span = tracing::info_span!(
            target: crate::telemetry::traces::TARGET,
            "health change",
            upstream = %self.upstream,
            target = %self.address,
            to = %t.to,
        );
        let _entered = span.enter();
        tracing::info!(
            upstream = %self.upstream,
            target = %self.address,
            from = %t.from,
            to = %t.to,
            cause = t.cause,
            count = t.count,
            source = source.as_str(),
            "target health changed"
        );
        Some(t)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Policy;

    #[test]
    fn warmth_grows_linearly_from_the_return_over_the_window() {
        let t = TargetHealth::new("u", "10.0.0.1:80");
        let window = Duration::from_secs(10);
        assert_eq!(t.warmth(Instant::now(), window), 1.0, "healthy from the start: full share");
        t.set(State::Unhealthy, Source::Manual);
        t.set(State::Healthy, Source::Manual);
        let now = Instant::now();
        assert!(t.warmth(now, window) < 0.05);
        assert!((t.warmth(now + window / 2, window) - 0.5).abs() < 0.05);
        assert_eq!(t.warmth(now + window, window), 1.0);
    }

    #[test]
    fn a_timed_return_brings_the_target_back_unless_an_operator_came_first() {
        let config = serde_json::json!({ "passive": { "unhealthy": { "http_failures": 1, "ejection_time": 1 } } });
        let policy = Policy::new(&serde_json::from_value(config).unwrap()).passive;
        let t = TargetHealth::new("u", "10.0.0.1:80");
        let now = Instant::now();
        let due = t.record_passive(Outcome::HttpFailure, &policy, now).expect("a timed ejection");
        assert_eq!(due - now, Duration::from_secs(1));
        assert!(!t.is_healthy());
        let back = t.return_from_ejection(due).expect("back when due");
        assert_eq!((back.to, back.cause), (State::Healthy, "ejection_time"));
        assert!(t.is_healthy());
        let due = t.record_passive(Outcome::HttpFailure, &policy, due).expect("ejected again");
        assert_eq!(due - now, Duration::from_secs(3), "twice as long the second time");
        t.set(State::Unhealthy, Source::Manual);
        assert_eq!(t.return_from_ejection(due), None, "an operator's word is not timed");
        assert!(!t.is_healthy());
        assert_eq!(t.ejections(), 2);
    }
}
