//! Entries in this node's memory, bounded in bytes: the `memory` strategy's store, and the
//! memory level in front of Redis. The oldest stored go first when it is full; those past their
//! keep, or past the residency they were stored with, are dropped when met. Every operation is
//! O(1) (amortised): a removed key's place in the eviction order is skipped, not searched for.

use super::entry::{now_ms, Entry};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// A bounded in-memory cache.
pub struct MemoryCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Resident>,
    /// Keys in the order stored, with the generation they were stored at: a key removed or
    /// stored again leaves its old place behind, skipped when met.
    order: VecDeque<(String, u64)>,
    /// The keys stored under each resource ([`super::key::resource_key`]), for invalidation.
    by_resource: HashMap<Box<str>, Vec<String>>,
    bytes: usize,
    generation: u64,
}

struct Resident {
    entry: Entry,
    /// Served from here until then, ms since the epoch (the memory level's bound on how long a
    /// copy may stand in for Redis's); `u64::MAX` for the memory strategy.
    until_ms: u64,
    generation: u64,
}

impl MemoryCache {
    /// A cache holding at most `max_bytes` (0: nothing is kept).
    pub fn new(max_bytes: usize) -> MemoryCache {
        MemoryCache { inner: Mutex::new(Inner::default()), max_bytes }
    }

    /// The entry at `key`, if it is still kept (fresh, or stale within its keep) and resident.
    pub fn get(&self, key: &str, now: SystemTime) -> Option<Entry> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match inner.entries.get(key) {
            Some(resident) if resident.entry.kept(now) && now_ms(now) < resident.until_ms => {
                Some(resident.entry.clone())
            }
            Some(_) => {
                inner.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `entry` at `key` for as long as it is kept, making room by dropping the oldest
    /// entries.
    pub fn put(&self, key: &str, entry: Entry) {
        self.put_until(key, entry, u64::MAX);
    }

    /// Stores `entry` at `key`, served from here until `until_ms` at the latest.
    pub fn put_until(&self, key: &str, entry: Entry, until_ms: u64) {
        let weight = entry.weight();
        if weight > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.remove(key);
        while inner.bytes + weight > self.max_bytes {
            let Some((oldest, generation)) = inner.order.pop_front() else { break };
            if inner.entries.get(&oldest).is_some_and(|r| r.generation == generation) {
                inner.remove(&oldest);
            }
        }
        inner.generation += 1;
        let generation = inner.generation;
        inner.bytes += weight;
        inner.order.push_back((key.to_owned(), generation));
        if let Some(resource) = &entry.resource {
            inner.by_resource.entry(resource.as_str().into()).or_default().push(key.to_owned());
        }
        inner.entries.insert(key.to_owned(), Resident { entry, until_ms, generation });
        inner.compact();
    }

    /// Drops the entry at `key`; whether there was one.
    pub fn purge(&self, key: &str) -> bool {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).remove(key)
    }

    /// Drops every entry stored under `resource`; how many there were.
    pub fn purge_resource(&self, resource: &str) -> usize {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let keys = inner.by_resource.remove(resource).unwrap_or_default();
        keys.iter().filter(|key| inner.remove(key)).count()
    }

    /// Drops every entry.
    pub fn purge_all(&self) {
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner) = Inner::default();
    }
}

impl Inner {
    fn remove(&mut self, key: &str) -> bool {
        match self.entries.remove(key) {
            Some(resident) => {
                self.bytes -= resident.entry.weight();
                if let Some(resource) = resident.entry.resource.as_deref() {
                    if let Some(keys) = self.by_resource.get_mut(resource) {
                        keys.retain(|k| k != key);
                        if keys.is_empty() {
                            self.by_resource.remove(resource);
                        }
                    }
                }
                true
            }
            None => false,
        }
    }

    /// Forgets the places left behind once they outnumber the entries, so the order stays
    /// within twice the entries (each place is dropped once: amortised O(1)).
    fn compact(&mut self) {
        if self.order.len() > 2 * self.entries.len() + 16 {
            let entries = &self.entries;
            self.order.retain(|(key, generation)| entries.get(key).is_some_and(|r| r.generation == *generation));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;
    use std::time::{Duration, UNIX_EPOCH};

    fn entry(body: usize) -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: vec![],
            body: Bytes::from(vec![b'x'; body]),
            stored_at_ms: 1_000,
            ttl_ms: 1_000,
            initial_age_ms: 0,
            keep_ms: 0,
            vary: vec![],
            resource: None,
        }
    }

    #[test]
    fn bounded_oldest_first_and_stale_dropped() {
        let cache = MemoryCache::new(1_000);
        let now = UNIX_EPOCH + Duration::from_millis(1_500);
        cache.put("a", entry(300));
        cache.put("b", entry(300));
        cache.put("c", entry(300));
        assert!(cache.get("a", now).is_none(), "a went to make room for c");
        assert!(cache.get("b", now).is_some() && cache.get("c", now).is_some());
        cache.put("huge", entry(5_000));
        assert!(cache.get("huge", now).is_none(), "larger than the whole cache");
        let later = UNIX_EPOCH + Duration::from_millis(2_500);
        assert!(cache.get("b", later).is_none(), "stale");
        assert!(cache.purge("c") && !cache.purge("c"));
        cache.put("d", entry(10));
        cache.purge_all();
        assert!(cache.get("d", now).is_none());
    }

    #[test]
    fn a_key_stored_again_goes_by_its_new_place_and_residency_bounds_a_copy() {
        let cache = MemoryCache::new(1_000);
        let now = UNIX_EPOCH + Duration::from_millis(1_500);
        cache.put("a", entry(300));
        cache.put("b", entry(300));
        cache.put("a", entry(300));
        cache.put("c", entry(300));
        assert!(cache.get("b", now).is_none(), "b is now the oldest stored");
        assert!(cache.get("a", now).is_some() && cache.get("c", now).is_some());
        cache.put_until("level", entry(10), 1_200);
        assert!(cache.get("level", UNIX_EPOCH + Duration::from_millis(1_100)).is_some());
        assert!(cache.get("level", now).is_none(), "past its residency, though still fresh");
    }

    #[test]
    fn the_eviction_order_stays_bounded_under_rewrites() {
        let cache = MemoryCache::new(1 << 20);
        for _ in 0..10_000 {
            cache.put("same", entry(10));
        }
        let inner = cache.inner.lock().unwrap();
        assert_eq!(inner.entries.len(), 1);
        assert!(inner.order.len() <= 2 * inner.entries.len() + 17, "{} places kept", inner.order.len());
        assert_eq!(inner.bytes, entry(10).weight());
    }

    #[test]
    fn a_resource_drops_every_key_stored_under_it_and_forgets_those_gone() {
        let cache = MemoryCache::new(1_000);
        let now = UNIX_EPOCH + Duration::from_millis(1_500);
        let of = |resource: &str, body| Entry { resource: Some(resource.into()), ..entry(body) };
        cache.put("ann", of("items", 10));
        cache.put("bob", of("items", 10));
        cache.put("other", of("orders", 10));
        cache.purge("bob");
        assert_eq!(cache.purge_resource("items"), 1, "ann; bob was gone already");
        assert!(cache.get("ann", now).is_none() && cache.get("other", now).is_some());
        assert_eq!(cache.purge_resource("items"), 0);
        cache.put("big", of("big", 900));
        let inner = cache.inner.lock().unwrap();
        assert!(!inner.by_resource.contains_key("orders"), "evicted to make room, and forgotten");
    }
}
