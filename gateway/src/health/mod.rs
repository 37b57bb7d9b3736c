//! Per-node health of upstream targets, with Kong's counters and thresholds.
//!
//! Each node decides on its own, from its active probes and the traffic it proxies, whether a
//! target may take traffic; the balancer skips those that may not. Health is kept in a
//! [`Registry`] outside the compiled runtime, keyed by upstream and target address, so a config
//! change (a target added, a threshold edited) never resets the health of targets whose address
//! did not change (Kong #7835).
//!
//! - [`counters`]: the sans-IO state machine.
//! - [`ejection`]: how long a passive ejection lasts (`ejection_time`, doubling), sans-IO.
//! - [`policy`]: an upstream's `healthchecks` compiled into thresholds and status sets.
//! - [`TargetHealth`]: one target's counters and the flag the balancer reads.
//! - [`active`]: the probe tasks.

pub mod active;
pub mod counters;
pub mod ejection;
pub mod policy;
mod target;

pub use counters::{Counters, Outcome, State, Thresholds, Transition};
pub use policy::{ActivePolicy, PassivePolicy, Policy};
pub use target::{Source, TargetHealth};

use cluster::Version;
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

/// An operator's set of one target, and the cluster's version of it (none without a cluster).
#[derive(Clone)]
struct OperatorSet {
    state: State,
    version: Option<Version>,
}

/// What [`Registry::set`] did with a set.
#[derive(Debug, PartialEq, Eq)]
pub enum SetOutcome {
    /// The target is served here and took it.
    Applied,
    /// Remembered for when the target is configured here.
    Kept,
    /// A later set has already applied here; this one changes nothing.
    Superseded,
}

/// Every target's health on this node, and the probes that feed it.
#[derive(Default)]
pub struct Registry {
    targets: Mutex<HashMap<Key, Arc<TargetHealth>>>,
    /// The operators' latest word on each target, whether this node serves it yet or not: a
    /// target configured later starts in that state.
    operator: Mutex<HashMap<Key, OperatorSet>>,
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
        if let Some(set) = lock(&self.operator).get(&key) {
            health.set(set.state, Source::Gossip);
        }
        targets.insert(key, health.clone());
        health
    }

    /// An operator's word: `address` in `upstream` takes `state` and its counters are cleared,
    /// here (made here, `Source::Manual`, or on another node, `Source::Gossip`). Remembered for
    /// when the target is configured here later.
    ///
    /// With the cluster's `version` of the set, the latest set wins here as in the cluster's
    /// table, whatever order this node's own sets and its peers' reach it in: one older than a
    /// set already applied is [`SetOutcome::Superseded`]. A set without a version (no cluster)
    /// always applies.
    pub fn set(
        &self,
        upstream: &str,
        address: &str,
        state: State,
        source: Source,
        version: Option<Version>,
    ) -> SetOutcome {
        let key = (upstream.to_owned(), address.to_owned());
        // Both held across the target's update (taken in the order `target` and `sync` take
        // them), so that two sets apply in their versions' order and a target made meanwhile
        // starts from the latest.
        let targets = lock(&self.targets);
        let mut operator = lock(&self.operator);
        let held = operator.get(&key).and_then(|set| set.version.as_ref());
        if let (Some(held), Some(new)) = (held, version.as_ref()) {
            if held >= new {
                return SetOutcome::Superseded;
            }
        }
        let version = version.or_else(|| held.cloned());
        let health = targets.get(&key);
        operator.insert(key, OperatorSet { state, version });
        match health {
            Some(health) => {
                health.set(state, source);
                SetOutcome::Applied
            }
            None => SetOutcome::Kept,
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

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::Hlc;

    fn version(ms: u64, origin: &str) -> Option<Version> {
        Some(Version { time: Hlc { ms, counter: 0 }, origin: origin.into() })
    }

    /// A node's own set and a peer's can reach its registry in either order; the later
    /// version holds, as in the cluster's table (the race a partition test met: a peer's older
    /// set applied just after this node's own, leaving the node unhealthy against the table).
    #[test]
    fn the_latest_version_holds_whatever_order_sets_arrive_in() {
        let health = Registry::new();
        let target = health.target("api", "10.0.0.1:80");
        let own = health.set("api", "10.0.0.1:80", State::Healthy, Source::Manual, version(20, "gw-2"));
        assert_eq!(own, SetOutcome::Applied);
        let older = health.set("api", "10.0.0.1:80", State::Unhealthy, Source::Gossip, version(10, "gw-1"));
        assert_eq!(older, SetOutcome::Superseded);
        assert!(target.is_healthy());
        // The same time from another origin: the greater origin wins, as in the table.
        let tie = health.set("api", "10.0.0.1:80", State::Unhealthy, Source::Gossip, version(20, "gw-3"));
        assert_eq!(tie, SetOutcome::Applied);
        assert!(!target.is_healthy());
        // Without a cluster, a set always applies.
        assert_eq!(health.set("api", "10.0.0.1:80", State::Healthy, Source::Manual, None), SetOutcome::Applied);
        assert!(target.is_healthy());
        // ... and the version seen stays: an older peer set is still superseded.
        let late = health.set("api", "10.0.0.1:80", State::Unhealthy, Source::Gossip, version(15, "gw-1"));
        assert_eq!(late, SetOutcome::Superseded);
    }

    #[test]
    fn a_set_for_a_target_not_served_is_kept_with_its_version() {
        let health = Registry::new();
        let set = health.set("api", "10.0.0.9:80", State::Unhealthy, Source::Gossip, version(5, "gw-1"));
        assert_eq!(set, SetOutcome::Kept);
        let older = health.set("api", "10.0.0.9:80", State::Healthy, Source::Gossip, version(4, "gw-2"));
        assert_eq!(older, SetOutcome::Superseded);
        assert!(!health.target("api", "10.0.0.9:80").is_healthy());
    }
}
