//! Refusals known to hold, so that a client over its limit costs Redis nothing (Envoy's rate
//! limit service caches over-limit keys the same way).
//!
//! Once Redis refuses a key, no check of it anywhere in the cluster can be allowed before the
//! refusal's retry-after: a refused check counts nothing, so the counts stay as they were read, and
//! the estimate only decays. Until then, or until the shortest of its calendar windows rolls over
//! (whichever comes first; after it the counts mean something else), this node decides the key's
//! checks from those counts with the same code as the store ([`crate::decide`]): the same
//! verdict, remaining counts and retry-after Redis would give, with no call. Clocks are the only
//! source of difference, as for every window edge (see [`crate::RedisStore`]).
//!
//! In normal operation (no key over its limit) a check costs one atomic load here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::algorithm::decide_ms;
use crate::{Algorithm, Decision, Window, WindowCounts};

/// Most keys remembered; a refusal that finds the map full is not remembered.
const MAX_KEYS: usize = 100_000;

/// Refusals by counter key.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    /// How many are remembered: none, and a check does not take the lock.
    len: AtomicUsize,
    map: Mutex<HashMap<Box<str>, Refusal>>,
}

#[derive(Debug)]
struct Refusal {
    limits: Vec<(Window, u64)>,
    algorithm: Algorithm,
    /// The counts the refusal was decided from.
    counts: Vec<WindowCounts>,
    /// When it stops being known to hold, ms since the epoch.
    until_ms: u64,
}

impl Refusals {
    /// The decision for `key` at `now_ms` if a refusal remembered for it still holds.
    pub fn check(&self, key: &str, limits: &[(Window, u64)], algorithm: Algorithm, now_ms: u64) -> Option<Decision> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let refusal = map.get(key)?;
        if now_ms < refusal.until_ms && refusal.limits == limits && refusal.algorithm == algorithm {
            let decision = decide_ms(limits, algorithm, now_ms, &refusal.counts, None);
            if !decision.allowed {
                return Some(decision);
            }
        }
        map.remove(key);
        self.len.store(map.len(), Ordering::Relaxed);
        None
    }

    /// Remembers that `decision`, made at `now_ms` from `counts`, refused `key`.
    pub fn remember(
        &self,
        key: &str,
        limits: &[(Window, u64)],
        algorithm: Algorithm,
        counts: Vec<WindowCounts>,
        decision: &Decision,
        now_ms: u64,
    ) {
        let Some(retry_after) = decision.retry_after else { return };
        let shortest_reset = decision.windows.iter().map(|w| w.reset).min().unwrap_or_default();
        let holds_for = retry_after.min(shortest_reset).as_millis() as u64;
        if holds_for == 0 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_KEYS {
            map.retain(|_, refusal| refusal.until_ms > now_ms);
            if map.len() >= MAX_KEYS {
                return;
            }
        }
        let refusal = Refusal { limits: limits.to_vec(), algorithm, counts, until_ms: now_ms + holds_for };
        map.insert(key.into(), refusal);
        self.len.store(map.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-01T00:00:00Z, in ms: a minute boundary.
    const T0: u64 = 1_704_067_200_000;

    #[test]
    fn a_refusal_holds_until_the_window_rolls_over_and_answers_as_the_store_would() {
        let refusals = Refusals::default();
        let limits = [(Window::Minute, 5), (Window::Hour, 100)];
        let counts = vec![WindowCounts { current: 5, previous: 0 }, WindowCounts { current: 40, previous: 0 }];
        assert_eq!(refusals.check("k", &limits, Algorithm::Fixed, T0 + 10_000), None, "nothing remembered");
        let refused = decide_ms(&limits, Algorithm::Fixed, T0 + 10_000, &counts, None);
        assert!(!refused.allowed);
        refusals.remember("k", &limits, Algorithm::Fixed, counts.clone(), &refused, T0 + 10_000);

        let later = refusals.check("k", &limits, Algorithm::Fixed, T0 + 30_000).expect("still refused");
        assert_eq!(later, decide_ms(&limits, Algorithm::Fixed, T0 + 30_000, &counts, None));
        assert_eq!(later.retry_after, Some(std::time::Duration::from_secs(30)));
        assert_eq!(later.windows[1].remaining, 60, "the other window's count, as read");
        assert_eq!(refusals.check("other", &limits, Algorithm::Fixed, T0 + 30_000), None);
        assert_eq!(refusals.check("k", &[(Window::Minute, 6)], Algorithm::Fixed, T0 + 30_000), None, "other limits");
        // The minute rolls over: the store decides again, and the key is forgotten.
        assert_eq!(refusals.check("k", &limits, Algorithm::Fixed, T0 + 60_000), None);
        assert_eq!(refusals.len.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_sliding_refusal_ends_when_the_estimate_has_decayed() {
        let refusals = Refusals::default();
        let limits = [(Window::Minute, 10)];
        // 10 in the previous minute, 3 in this one, 6 s in: 10 * 0.9 + 3 = 12 >= 10.
        let counts = vec![WindowCounts { current: 3, previous: 10 }];
        let now = T0 + 6_000;
        let refused = decide_ms(&limits, Algorithm::Sliding, now, &counts, None);
        assert!(!refused.allowed);
        refusals.remember("k", &limits, Algorithm::Sliding, counts.clone(), &refused, now);
        let retry_after = refused.retry_after.unwrap().as_millis() as u64;
        assert!(refusals.check("k", &limits, Algorithm::Sliding, now + retry_after - 1).is_some());
        assert_eq!(refusals.check("k", &limits, Algorithm::Sliding, now + retry_after), None);
    }
}
