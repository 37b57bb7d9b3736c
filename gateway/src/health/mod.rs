//! Per-node health of upstream targets, with Kong's counters and thresholds.
//!
//! Each node decides on its own, from its active probes and the traffic it proxies, whether a
//! target may take traffic; the balancer skips those that may not. Health is kept in a
//! [`Registry`] outside the compiled runtime, keyed by upstream and target address, so a config
//! change (a target added, a threshold edited) never resets the health of targets whose address
//! did not change (Kong #7835).
//!
//! - [`counters`]: the sans-IO state machine.
//! - [`policy`]: an upstream's `healthchecks` compiled into thresholds and status sets.
//! - [`TargetHealth`]: one target's counters and the flag the balancer reads.
//! - [`active`]: the probe tasks.

pub mod active;
pub mod counters;
pub mod policy;
mod target;

pub use counters::{Counters, Outcome, State, Thresholds, Transition};
pub use policy::{ActivePolicy, PassivePolicy, Policy};
pub use target::{Source, TargetHealth};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

type Key = (String, String);

struct Probe {
    policy: Arc<ActivePolicy>,
    handle: AbortHandle,
}

/// One upstream's targets, as [`Registry::sync`] needs them.
pub struct Watched<'a> {
    /// The upstream's name.
    pub upstream: &'a str,
    /// Its active probing.
    pub active: &'a Arc<ActivePolicy>,
    /// Its targets' health records.
    pub targets: &'a [Arc<TargetHealth>],
}

/// Every target's health on this node, and the probes that feed it.
#[derive(Default)]
pub struct Registry {
    targets: Mutex<HashMap<Key, Arc<TargetHealth>>>,
    /// The operators' latest word on each target, whether this node serves it yet or not: a
    /// target configured later starts in that state.
    operator: Mutex<HashMap<Key, State>>,
    probes: Mutex<HashMap<Key, Probe>>,
    /// One semaphore per upstream, with the concurrency it was made for.
    permits: Mutex<HashMap<String, (u32, Arc<Semaphore>)>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The health of `address` in `upstream`, made the first time it is asked for: healthy, or
    /// as an operator last set it.
    pub fn target(&self, upstream: &str, address: &str) -> Arc<TargetHealth> {
        let key = (upstream.to_owned(), address.to_owned());
        let mut targets = lock(&self.targets);
        if let Some(health) = targets.get(&key) {
            return health.clone();
        }
        let health = Arc::new(TargetHealth::new(upstream, address));
        if let Some(&state) = lock(&self.operator).get(&key) {
            health.set(state, Source::Gossip);
        }
        targets.insert(key, health.clone());
        health
    }

    /// An operator's word: `address` in `upstream` takes `state` and its counters are cleared,
    /// here (made here, `Source::Manual`, or on another node, `Source::Gossip`). Remembered for
    /// when the target is configured here later; whether it is served here now.
    pub fn set(&self, upstream: &str, address: &str, state: State, source: Source) -> bool {
        let key = (upstream.to_owned(), address.to_owned());
        lock(&self.operator).insert(key.clone(), state);
        let health = lock(&self.targets).get(&key).cloned();
        match health {
            Some(health) => {
                health.set(state, source);
                true
            }
            None => false,
        }
    }

    /// Forgets the operators' word on `address` in `upstream` (the cluster dropped it: the
    /// target left the config long ago).
    pub fn forget(&self, upstream: &str, address: &str) {
        lock(&self.operator).remove(&(upstream.to_owned(), address.to_owned()));
    }

    /// Brings probes and records in line with the `upstreams` a runtime serves, once it serves:
    /// probes start for new targets, stop for removed ones, and restart where the upstream's
    /// active settings changed; the others are not disturbed. Health of targets no longer
    /// configured is forgotten, and so is the operators' word on them.
    pub fn sync<'a>(&self, upstreams: impl Iterator<Item = Watched<'a>>) {
        let mut configured = HashSet::new();
        let mut wanted = HashMap::new();
        let mut names = HashSet::new();
        for Watched { upstream: name, active, targets } in upstreams {
            names.insert(name.to_owned());
            for health in targets {
                let key = (name.to_owned(), health.address().to_owned());
                configured.insert(key.clone());
                if active.enabled() {
                    wanted.insert(key, (health.clone(), active.clone()));
                }
            }
        }
        let mut probes = lock(&self.probes);
        probes.retain(|key, probe| {
            let keep = wanted.get(key).is_some_and(|(_, policy)| *policy == probe.policy);
            if !keep {
                probe.handle.abort();
            }
            keep
        });
        let mut permits = lock(&self.permits);
        permits.retain(|name, _| names.contains(name));
        for (key, (health, policy)) in wanted {
            if probes.contains_key(&key) {
                continue;
            }
            let concurrency = policy.concurrency;
            let entry = permits
                .entry(key.0.clone())
                .or_insert_with(|| (concurrency, Arc::new(Semaphore::new(concurrency as usize))));
            if entry.0 != concurrency {
                *entry = (concurrency, Arc::new(Semaphore::new(concurrency as usize)));
            }
            let handle = active::spawn(health, policy.clone(), entry.1.clone());
            probes.insert(key, Probe { policy, handle });
        }
        // A target removed starts afresh if added again (as in Kong): the operators' word on it
        // goes with it. Words on targets not configured yet stay, for when they are.
        let mut targets = lock(&self.targets);
        let mut operator = lock(&self.operator);
        targets.retain(|key, _| {
            let keep = configured.contains(key);
            if !keep {
                operator.remove(key);
            }
            keep
        });
    }

    /// Stops every probe.
    pub fn shutdown(&self) {
        for (_, probe) in lock(&self.probes).drain() {
            probe.handle.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
