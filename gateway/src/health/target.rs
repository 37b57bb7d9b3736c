//! One target's health on this node: its counters, and the flag the balancer reads on every
//! request.

use super::counters::{Counters, Outcome, State, Thresholds, Transition};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use tokio::sync::watch;

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
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Active => "active",
            Source::Passive => "passive",
            Source::Manual => "manual",
            Source::Gossip => "gossip",
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
    counters: Mutex<Counters>,
    /// The state, for probe loops that wait on a change.
    state: watch::Sender<State>,
}

impl TargetHealth {
    /// A healthy target with zeroed counters.
    pub fn new(upstream: &str, address: &str) -> TargetHealth {
        TargetHealth {
            upstream: upstream.to_owned(),
            address: address.to_owned(),
            healthy: AtomicBool::new(true),
            counters: Mutex::new(Counters::default()),
            state: watch::Sender::new(State::Healthy),
        }
    }

    /// Whether the balancer may choose this target.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The state and counters now.
    pub fn counters(&self) -> Counters {
        *self.lock()
    }

    /// Waits for state changes.
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }

    /// `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Counts an outcome against `thresholds`.
    pub fn record(&self, outcome: Outcome, thresholds: &Thresholds, source: Source) -> Option<Transition> {
        let transition = self.lock().record(outcome, thresholds);
        self.apply(transition, source)
    }

    /// An operator's set: takes `state` and clears the counters. `source` says whether it was
    /// made on this node or received from another.
    pub fn set(&self, state: State, source: Source) -> Option<Transition> {
        let transition = self.lock().set(state);
        self.apply(transition, source)
    }

    fn apply(&self, transition: Option<Transition>, source: Source) -> Option<Transition> {
        let t = transition?;
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
