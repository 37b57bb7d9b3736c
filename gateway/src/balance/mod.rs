//! Load balancers: which target of an upstream gets the next request.
//!
//! This module owns the choice of target and the per-target state that choice
//! needs (requests in flight, smooth round-robin weights, the hash ring,
//! latency estimates). It is sans-IO: it does no I/O, reads no clock and uses
//! no global randomness. Time comes in as [`Pick::now`] and the `now` argument
//! of [`Balancer::finish`], randomness from an RNG seeded by the caller, so
//! every behaviour is reproducible in a test.
//!
//! The parts, one per algorithm of [`config_sync::Algorithm`]:
//!
//! - [`SmoothWeighted`] (`round_robin.rs`): nginx's smooth weighted round-robin.
//! - [`LeastConnections`] (`least_conn.rs`): fewest requests in flight per unit of weight.
//! - [`HashRing`] (`ring.rs`): Kong-style ring of slots, owners chosen by
//!   weighted rendezvous hashing, for sticky (consistent-hashing) routing.
//! - [`PeakEwma`] (`ewma.rs`): peak-EWMA latency with the power of two random choices.
//!
//! [`budget`] counts an upstream's retries against Envoy's retry budget; `tiers.rs` keeps an
//! upstream's primary and `backup` targets in two balancers of its algorithm.
//!
//! [`Balancer`] unifies them. The gateway builds one per upstream from the
//! upstream's algorithm and target list and keeps it behind a mutex. Before
//! each attempt it calls [`Balancer::pick`], passing in [`Pick::skip`] the
//! targets it must not use (already tried in this request, unhealthy), and
//! when the attempt ends it calls [`Balancer::finish`] exactly once for that
//! pick. Target indices are positions in the `targets` slice given to
//! [`Balancer::new`]. When the target set changes the gateway builds a new
//! balancer; state (in-flight counts, latency estimates) starts afresh.

pub(crate) mod budget;
mod ewma;
mod least_conn;
mod ring;
mod round_robin;
pub(crate) mod tiers;

pub use ewma::PeakEwma;
pub use least_conn::LeastConnections;
pub use ring::HashRing;
pub use round_robin::SmoothWeighted;

use std::time::{Duration, Instant};

use config_sync::Algorithm;

/// One target as a balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetSpec<'a> {
    /// `"host:port"`: the target's stable identity. The hash ring hashes it, so
    /// it must be unique within an upstream and the same on every node.
    pub key: &'a str,
    /// Relative share of the traffic. 0 = present but never chosen.
    pub weight: u32,
}

/// What a pick may use besides the balancer's own state.
#[derive(Clone, Copy)]
pub struct Pick<'a> {
    /// Consistent hashing: the request's hashed key (e.g. xxh3 of a header
    /// value). `None` = no key; the ring then walks its slots in turn. Ignored
    /// by the other algorithms.
    pub hash_key: Option<u64>,
    /// The current time, for the latency estimate's decay. Ignored by the
    /// other algorithms.
    pub now: Instant,
    /// Targets not to choose, by index: already tried in this request, or
    /// unhealthy. Called at most O(targets) times per pick.
    pub skip: &'a dyn Fn(usize) -> bool,
}

impl Pick<'static> {
    /// A pick at `now` with no hash key that skips nothing.
    pub fn new(now: Instant) -> Self {
        Pick { hash_key: None, now, skip: &skip_nothing }
    }
}

impl std::fmt::Debug for Pick<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pick").field("hash_key", &self.hash_key).field("now", &self.now).finish_non_exhaustive()
    }
}

fn skip_nothing(_: usize) -> bool {
    false
}

/// Whether target `index` of weight `weight` may be chosen by `pick`.
fn eligible(weight: u32, index: usize, pick: &Pick<'_>) -> bool {
    weight > 0 && !(pick.skip)(index)
}

/// Requests in flight per target: the bookkeeping every balancer shares.
/// Saturating both ways, so a stray `end` never underflows.
#[derive(Debug, Clone)]
struct InFlight(Vec<u32>);

impl InFlight {
    fn new(len: usize) -> Self {
        InFlight(vec![0; len])
    }

    fn get(&self, index: usize) -> u32 {
        self.0.get(index).copied().unwrap_or(0)
    }

    fn start(&mut self, index: usize) {
        if let Some(n) = self.0.get_mut(index) {
            *n = n.saturating_add(1);
        }
    }

    fn end(&mut self, index: usize) {
        if let Some(n) = self.0.get_mut(index) {
            *n = n.saturating_sub(1);
        }
    }
}

/// A load balancer of one of the four algorithms, over a fixed target list.
#[derive(Debug, Clone)]
pub enum Balancer {
    /// Smooth weighted round-robin.
    RoundRobin(SmoothWeighted),
    /// Fewest in flight per unit of weight.
    LeastConnections(LeastConnections),
    /// Ring of slots, for sticky routing by a hashed key.
    ConsistentHashing(HashRing),
    /// Peak-EWMA latency with the power of two random choices.
    Latency(PeakEwma),
}

impl Balancer {
    /// Builds a balancer of `algorithm` over `targets` (indices into this
    /// slice are the target indices of [`pick`](Self::pick)). `slots` is the
    /// ring size for consistent hashing (clamped to
    /// [`HashRing::MIN_SLOTS`]..=[`HashRing::MAX_SLOTS`]; Kong's default is
    /// [`HashRing::DEFAULT_SLOTS`]) and `seed` seeds the latency balancer's
    /// RNG; each is ignored by the other algorithms.
    pub fn new(algorithm: Algorithm, targets: &[TargetSpec<'_>], slots: u32, seed: u64) -> Self {
        match algorithm {
            Algorithm::RoundRobin => Balancer::RoundRobin(SmoothWeighted::new(targets)),
            Algorithm::LeastConnections => Balancer::LeastConnections(LeastConnections::new(targets)),
            Algorithm::ConsistentHashing => Balancer::ConsistentHashing(HashRing::new(targets, slots)),
            Algorithm::Latency => Balancer::Latency(PeakEwma::new(targets, seed)),
        }
    }

    /// The algorithm this balancer runs.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Balancer::RoundRobin(_) => Algorithm::RoundRobin,
            Balancer::LeastConnections(_) => Algorithm::LeastConnections,
            Balancer::ConsistentHashing(_) => Algorithm::ConsistentHashing,
            Balancer::Latency(_) => Algorithm::Latency,
        }
    }

    /// Chooses a target index among those with weight > 0 and not skipped,
    /// and records one request in flight on it. `None` when no target is
    /// eligible.
    pub fn pick(&mut self, pick: &Pick<'_>) -> Option<usize> {
        match self {
            Balancer::RoundRobin(b) => b.pick(pick),
            Balancer::LeastConnections(b) => b.pick(pick),
            Balancer::ConsistentHashing(b) => b.pick(pick),
            Balancer::Latency(b) => b.pick(pick),
        }
    }

    /// Ends one request started by [`pick`](Self::pick) on `index`;
    /// `latency` is the time to the response head when there was one (`None`
    /// on failure). Call it exactly once per pick; extra calls and unknown
    /// indices are ignored (counts never underflow).
    pub fn finish(&mut self, index: usize, latency: Option<Duration>, now: Instant) {
        match self {
            Balancer::RoundRobin(b) => b.finish(index),
            Balancer::LeastConnections(b) => b.finish(index),
            Balancer::ConsistentHashing(b) => b.finish(index),
            Balancer::Latency(b) => b.finish(index, latency, now),
        }
    }

    /// Requests picked on target `index` and not yet finished (0 for an
    /// unknown index).
    pub fn in_flight(&self, index: usize) -> u32 {
        match self {
            Balancer::RoundRobin(b) => b.in_flight(index),
            Balancer::LeastConnections(b) => b.in_flight(index),
            Balancer::ConsistentHashing(b) => b.in_flight(index),
            Balancer::Latency(b) => b.in_flight(index),
        }
    }

    /// Number of targets, including those of weight 0.
    pub fn len(&self) -> usize {
        match self {
            Balancer::RoundRobin(b) => b.len(),
            Balancer::LeastConnections(b) => b.len(),
            Balancer::ConsistentHashing(b) => b.len(),
            Balancer::Latency(b) => b.len(),
        }
    }

    /// Whether there are no targets at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `n` distinct target keys, for tests.
#[cfg(test)]
fn test_keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
}

/// Targets with `keys` and `weights`, for tests.
#[cfg(test)]
fn test_specs<'a>(keys: &'a [String], weights: &[u32]) -> Vec<TargetSpec<'a>> {
    keys.iter().zip(weights).map(|(key, &weight)| TargetSpec { key, weight }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Algorithm; 4] =
        [Algorithm::RoundRobin, Algorithm::LeastConnections, Algorithm::ConsistentHashing, Algorithm::Latency];

    fn targets() -> Vec<TargetSpec<'static>> {
        vec![
            TargetSpec { key: "10.0.0.1:80", weight: 1 },
            TargetSpec { key: "10.0.0.2:80", weight: 2 },
            TargetSpec { key: "10.0.0.3:80", weight: 0 },
            TargetSpec { key: "10.0.0.4:80", weight: 3 },
        ]
    }

    #[test]
    fn every_algorithm_returns_none_when_all_skipped() {
        let now = Instant::now();
        for algorithm in ALL {
            let mut b = Balancer::new(algorithm, &targets(), 100, 1);
            let pick = Pick { skip: &|_| true, ..Pick::new(now) };
            assert_eq!(b.pick(&pick), None, "{algorithm:?}");
            let pick = Pick { hash_key: Some(42), ..pick };
            assert_eq!(b.pick(&pick), None, "{algorithm:?}");
            assert!((0..b.len()).all(|i| b.in_flight(i) == 0));
        }
    }

    #[test]
    fn every_algorithm_returns_none_without_targets() {
        let now = Instant::now();
        for algorithm in ALL {
            let mut b = Balancer::new(algorithm, &[], 100, 1);
            assert!(b.is_empty());
            assert_eq!(b.pick(&Pick::new(now)), None, "{algorithm:?}");
            b.finish(0, None, now);
        }
    }

    #[test]
    fn pick_and_finish_keep_counts_consistent() {
        let now = Instant::now();
        for algorithm in ALL {
            let mut b = Balancer::new(algorithm, &targets(), 100, 7);
            assert_eq!(b.algorithm(), algorithm);
            assert_eq!(b.len(), 4);
            let mut picked = Vec::new();
            for k in 0..60u64 {
                let pick = Pick { hash_key: Some(k.wrapping_mul(0x9E37_79B9_7F4A_7C15)), ..Pick::new(now) };
                let i = b.pick(&pick).expect("eligible targets exist");
                assert_ne!(i, 2, "{algorithm:?} chose a weight-0 target");
                picked.push(i);
            }
            let total: u32 = (0..b.len()).map(|i| b.in_flight(i)).sum();
            assert_eq!(total, 60, "{algorithm:?}");
            for (n, &i) in picked.iter().enumerate() {
                let latency = (n % 3 != 0).then(|| Duration::from_millis(5));
                b.finish(i, latency, now);
            }
            assert!((0..b.len()).all(|i| b.in_flight(i) == 0), "{algorithm:?}");
            // Extra and unknown finishes are tolerated.
            b.finish(0, None, now);
            b.finish(99, None, now);
            assert_eq!(b.in_flight(0), 0, "{algorithm:?}");
        }
    }
}
