//! An upstream's two tiers of targets: its primary targets, and its `backup` targets, chosen
//! only while no primary target may be chosen (nginx's `backup`).
//!
//! Each tier has its own balancer, built when the config is compiled, so a pick costs what the
//! algorithm's pick costs: the backup tier is asked only when the primary tier's pick found no
//! target, never by scanning the targets for a healthy primary.

use super::{Balancer, Pick, TargetSpec};
use config_sync::Algorithm;
use std::time::{Duration, Instant};

/// The two balancers. Target indices are one space: the primary targets first (`0..primaries`),
/// then the backups.
#[derive(Debug, Clone)]
pub(crate) struct Tiers {
    primary: Balancer,
    backup: Balancer,
    primaries: usize,
}

/// What a tiered pick needs besides the balancers' state.
pub(crate) struct TieredPick<'a> {
    /// The request's hashed key, for consistent hashing.
    pub hash_key: Option<u64>,
    /// The current time.
    pub now: Instant,
    /// Targets that may not be chosen at all (unhealthy), by index.
    pub unhealthy: &'a dyn Fn(usize) -> bool,
    /// Targets this request already tried, avoided while another of the tier may be chosen.
    pub tried: &'a [usize],
}

impl Tiers {
    /// Balancers of `algorithm` over `primary` and `backup` targets (see [`Balancer::new`]).
    pub(crate) fn new(
        algorithm: Algorithm,
        primary: &[TargetSpec<'_>],
        backup: &[TargetSpec<'_>],
        slots: u32,
        seed: u64,
    ) -> Tiers {
        Tiers {
            primary: Balancer::new(algorithm, primary, slots, seed),
            backup: Balancer::new(algorithm, backup, slots, seed.rotate_left(1)),
            primaries: primary.len(),
        }
    }

    /// Chooses a target and records one request in flight on it: a healthy primary not tried
    /// yet, else any healthy primary (every one was tried: they go round again), and only when
    /// no primary is healthy, a backup in the same order. `None` when no target is healthy.
    pub(crate) fn pick(&mut self, pick: &TieredPick<'_>) -> Option<usize> {
        let primary = tier(&mut self.primary, pick, 0);
        if primary.is_some() {
            return primary;
        }
        tier(&mut self.backup, pick, self.primaries)
    }

    /// Ends one request started by [`pick`](Self::pick) on `index` (see [`Balancer::finish`]).
    pub(crate) fn finish(&mut self, index: usize, latency: Option<Duration>, now: Instant) {
        match index.checked_sub(self.primaries) {
            None => self.primary.finish(index, latency, now),
            Some(backup) => self.backup.finish(backup, latency, now),
        }
    }

    /// Requests picked on `index` and not yet finished.
    #[cfg(test)]
    fn in_flight(&self, index: usize) -> u32 {
        match index.checked_sub(self.primaries) {
            None => self.primary.in_flight(index),
            Some(backup) => self.backup.in_flight(backup),
        }
    }
}

/// A pick in one tier, whose indices start at `offset`.
fn tier(balancer: &mut Balancer, pick: &TieredPick<'_>, offset: usize) -> Option<usize> {
    let fresh = |i: usize| (pick.unhealthy)(i + offset) || pick.tried.contains(&(i + offset));
    let healthy = |i: usize| (pick.unhealthy)(i + offset);
    let mut found = balancer.pick(&Pick { hash_key: pick.hash_key, now: pick.now, skip: &fresh });
    if found.is_none() && !pick.tried.is_empty() {
        found = balancer.pick(&Pick { hash_key: pick.hash_key, now: pick.now, skip: &healthy });
    }
    found.map(|i| i + offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Algorithm; 4] =
        [Algorithm::RoundRobin, Algorithm::LeastConnections, Algorithm::ConsistentHashing, Algorithm::Latency];

    fn tiers(algorithm: Algorithm) -> Tiers {
        let keys = super::super::test_keys(4);
        let specs = super::super::test_specs(&keys, &[1, 1, 1, 1]);
        Tiers::new(algorithm, &specs[..2], &specs[2..], 100, 3)
    }

    fn pick(t: &mut Tiers, unhealthy: &dyn Fn(usize) -> bool, tried: &[usize]) -> Option<usize> {
        let p = TieredPick { hash_key: Some(7), now: Instant::now(), unhealthy, tried };
        let i = t.pick(&p);
        if let Some(i) = i {
            t.finish(i, None, p.now);
        }
        i
    }

    #[test]
    fn backups_serve_only_while_no_primary_is_healthy() {
        for algorithm in ALL {
            let mut t = tiers(algorithm);
            for _ in 0..20 {
                assert!(pick(&mut t, &|_| false, &[]).is_some_and(|i| i < 2), "{algorithm:?}");
            }
            // Both primaries tried: they go round again rather than to a backup.
            assert!(pick(&mut t, &|_| false, &[0, 1]).is_some_and(|i| i < 2), "{algorithm:?}");
            // One primary down: the other serves.
            for _ in 0..10 {
                assert_eq!(pick(&mut t, &|i| i == 0, &[]), Some(1), "{algorithm:?}");
            }
            // Both down: the backups serve, retries go to the other backup, then round again.
            let down = |i: usize| i < 2;
            assert!(pick(&mut t, &down, &[]).is_some_and(|i| i >= 2), "{algorithm:?}");
            assert_eq!(pick(&mut t, &down, &[2]), Some(3), "{algorithm:?}");
            assert!(pick(&mut t, &down, &[2, 3]).is_some_and(|i| i >= 2), "{algorithm:?}");
            // Everything down: nothing.
            assert_eq!(pick(&mut t, &|_| true, &[]), None, "{algorithm:?}");
            // Primaries back: traffic returns to them.
            assert!(pick(&mut t, &|i| i >= 2, &[]).is_some_and(|i| i < 2), "{algorithm:?}");
            assert!((0..4).all(|i| t.in_flight(i) == 0), "{algorithm:?}");
        }
    }

    #[test]
    fn an_upstream_of_backups_only_uses_them() {
        let keys = super::super::test_keys(2);
        let specs = super::super::test_specs(&keys, &[1, 1]);
        let mut t = Tiers::new(Algorithm::RoundRobin, &[], &specs, 100, 1);
        assert_eq!(pick(&mut t, &|_| false, &[]), Some(0));
        assert_eq!(pick(&mut t, &|_| false, &[]), Some(1));
    }
}
