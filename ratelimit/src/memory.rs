//! [`MemoryStore`]: counters in this node's memory, for the `local` policy and as the fallback when
//! Redis is out of reach.
//!
//! Keys are spread over 32 shards, each a `Mutex<HashMap>`, so concurrent checks of different keys
//! rarely wait on each other; a check holds its shard's lock for a hash lookup and a few additions.
//! Memory is bounded two ways: a key whose counters no longer matter (see
//! [`Counters::is_expired`]) is dropped by the next sweep of its shard, which runs when the shard
//! has doubled since its last sweep (amortized O(1) per new key) or when [`MemoryStore::sweep`] is
//! called; and a shard never holds more than its share of `max_keys`: when full, the quarter of
//! its keys that expire soonest are forgotten (those clients start again from zero, which errs on
//! the side of letting requests through).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use crate::algorithm::normalize;
use crate::window::unix_ms;
use crate::{Algorithm, Counters, Decision, Store, StoreError, Window};

/// Shards per store; a power of two.
const SHARDS: usize = 32;

/// A shard is not swept before it holds this many keys.
const MIN_SWEEP: usize = 64;

/// Counters kept in this node's memory. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    /// Picks a key's shard.
    hasher: RandomState,
    /// Most keys one shard holds.
    max_per_shard: usize,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Box<str>, Counters>,
    /// Sweep when the map reaches this size.
    sweep_at: usize,
}

impl MemoryStore {
    /// How many keys a store made by [`MemoryStore::new`] holds at most: 100,000, about 20 MB.
    pub const DEFAULT_MAX_KEYS: usize = 100_000;

    /// A store of at most [`MemoryStore::DEFAULT_MAX_KEYS`] keys.
    pub fn new() -> Self {
        Self::with_max_keys(Self::DEFAULT_MAX_KEYS)
    }

    /// A store of at most about `max_keys` keys (rounded up to a multiple of 32; at least 32).
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            max_per_shard: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    /// [`Store::check`] without the future: decides at once (the lock is held for microseconds).
    pub fn check_sync(
        &self,
        key_base: &str,
        limits: &[(Window, u64)],
        algorithm: Algorithm,
        now: SystemTime,
    ) -> Decision {
        let limits = normalize(limits);
        let now_ms = unix_ms(now);
        let mut shard = self.shard(key_base);
        if let Some(counters) = shard.map.get_mut(key_base) {
            return counters.check_ms(&limits, algorithm, now_ms);
        }
        let mut counters = Counters::new();
        let decision = counters.check_ms(&limits, algorithm, now_ms);
        // A refused first request counted nothing: nothing to keep.
        if decision.allowed {
            shard.insert(key_base.into(), counters, now_ms, self.max_per_shard);
        }
        decision
    }

    /// Forgets every key whose counters no longer matter at `now`; returns how many. Optional:
    /// shards also sweep themselves as they grow.
    pub fn sweep(&self, now: SystemTime) -> usize {
        let now_ms = unix_ms(now);
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = lock(shard);
                let before = shard.map.len();
                shard.map.retain(|_, counters| !counters.is_expired_ms(now_ms));
                before - shard.map.len()
            })
            .sum()
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).map.len()).sum()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        // Keyed SipHash, so a client cannot pick keys that crowd one shard.
        let hash = self.hasher.hash_one(key);
        lock(&self.shards[(hash >> 32) as usize & (SHARDS - 1)])
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Store for MemoryStore {
    async fn check(
        &self,
        key_base: &str,
        limits: &[(Window, u64)],
        algorithm: Algorithm,
        now: SystemTime,
    ) -> Result<Decision, StoreError> {
        Ok(self.check_sync(key_base, limits, algorithm, now))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A panic while a shard was locked leaves counters that are still counters: carry on.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shard {
    fn insert(&mut self, key: Box<str>, counters: Counters, now_ms: u64, max: usize) {
        if self.map.len() >= self.sweep_at.max(MIN_SWEEP).min(max) {
            self.map.retain(|_, counters| !counters.is_expired_ms(now_ms));
            if self.map.len() >= max {
                self.evict(self.map.len() - max * 3 / 4);
            }
            self.sweep_at = self.map.len() * 2;
        }
        self.map.insert(key, counters);
    }

    /// Forgets the `count` keys (at least one) that expire soonest.
    fn evict(&mut self, count: usize) {
        let count = count.clamp(1, self.map.len());
        let mut expiries: Vec<u64> = self.map.values().map(Counters::expires_ms).collect();
        let (_, &mut threshold, _) = expiries.select_nth_unstable(count - 1);
        let mut at_threshold = count - expiries.iter().filter(|&&e| e < threshold).count();
        self.map.retain(|_, counters| match counters.expires_ms().cmp(&threshold) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal if at_threshold > 0 => {
                at_threshold -= 1;
                false
            }
            _ => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_704_067_200_000 + ms)
    }

    #[test]
    fn decides_like_counters() {
        let store = MemoryStore::new();
        let limits = [(Window::Second, 3), (Window::Minute, 7)];
        for algorithm in [Algorithm::Sliding, Algorithm::Fixed] {
            let mut counters = Counters::new();
            let key = format!("{algorithm:?}");
            for step in 0..400 {
                let now = at(step * 137);
                assert_eq!(store.check_sync(&key, &limits, algorithm, now), counters.check(&limits, algorithm, now));
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_checks_never_let_more_than_the_limit_through() {
        let store = std::sync::Arc::new(MemoryStore::new());
        for algorithm in [Algorithm::Fixed, Algorithm::Sliding] {
            let tasks: Vec<_> = (0..32)
                .map(|task| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let mut allowed = 0;
                        for i in 0..100 {
                            // Spread over a few milliseconds of one second, and over two keys.
                            let now = at(1_000 + (task * 100 + i) % 7);
                            let limits = [(Window::Second, 500), (Window::Minute, 1_000)];
                            let decision = store.check(&format!("{algorithm:?}"), &limits, algorithm, now).await;
                            allowed += usize::from(decision.expect("memory never fails").allowed);
                            tokio::task::yield_now().await;
                        }
                        allowed
                    })
                })
                .collect();
            let mut allowed = 0;
            for task in tasks {
                allowed += task.await.expect("task");
            }
            assert_eq!(allowed, 500, "{algorithm:?}: 3,200 attempts, 500 per second");
        }
    }

    #[test]
    fn refused_first_requests_store_nothing() {
        let store = MemoryStore::new();
        assert!(!store.check_sync("k", &[(Window::Minute, 0)], Algorithm::Fixed, at(0)).allowed);
        assert!(store.is_empty());
    }

    #[test]
    fn sweep_forgets_expired_keys() {
        let store = MemoryStore::new();
        for i in 0..10 {
            store.check_sync(&format!("k{i}"), &[(Window::Minute, 5)], Algorithm::Sliding, at(1_000));
        }
        store.check_sync("day", &[(Window::Day, 5)], Algorithm::Fixed, at(1_000));
        assert_eq!(store.len(), 11);
        assert_eq!(store.sweep(at(2 * 60_000 - 1)), 0, "a sliding minute matters for two minutes");
        assert_eq!(store.sweep(at(2 * 60_000)), 10);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn growth_sweeps_expired_keys_on_insert() {
        let store = MemoryStore::new();
        // A stream of distinct clients, one per second for 2 hours, on a minute window: only the
        // last two minutes' worth can matter; sweeping on insert keeps the store near that.
        for i in 0..7_200 {
            let now = at(i * 1_000);
            assert!(store.check_sync(&format!("ip{i}"), &[(Window::Minute, 5)], Algorithm::Sliding, now).allowed);
        }
        assert!(store.len() < 32 * 2 * MIN_SWEEP + 120, "{} keys kept", store.len());
    }

    #[test]
    fn a_full_store_forgets_the_keys_that_expire_soonest() {
        let store = MemoryStore::with_max_keys(640);
        // Long-lived keys first, then a flood of short-lived ones, all still live.
        for i in 0..100 {
            store.check_sync(&format!("day{i}"), &[(Window::Day, 5)], Algorithm::Fixed, at(0));
        }
        for i in 0..10_000 {
            store.check_sync(&format!("sec{i}"), &[(Window::Second, 5)], Algorithm::Fixed, at(0));
        }
        assert!(store.len() <= 640, "{} keys", store.len());
        let days = (0..100)
            .filter(|i| !store.check_sync(&format!("day{i}"), &[(Window::Day, 1)], Algorithm::Fixed, at(0)).allowed)
            .count();
        assert_eq!(days, 100, "the keys that matter longest were kept");
    }
}
