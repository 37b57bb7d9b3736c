//! The memory strategy: entries in this node's memory, bounded in bytes; the oldest stored go
//! first when it is full, and those past their keep are dropped when met.

use super::entry::Entry;
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
    entries: HashMap<String, Entry>,
    /// Keys in the order stored (a key stored again is found later with a fresher entry).
    order: VecDeque<String>,
    bytes: usize,
}

impl MemoryCache {
    /// A cache holding at most `max_bytes`.
    pub fn new(max_bytes: usize) -> MemoryCache {
        MemoryCache { inner: Mutex::new(Inner::default()), max_bytes }
    }

    /// The entry at `key`, if it is still kept (fresh, or stale within its keep).
    pub fn get(&self, key: &str, now: SystemTime) -> Option<Entry> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match inner.entries.get(key) {
            Some(entry) if entry.kept(now) => Some(entry.clone()),
            Some(_) => {
                inner.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `entry` at `key`, making room by dropping the oldest entries.
    pub fn put(&self, key: &str, entry: Entry) {
        let weight = entry.weight();
        if weight > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.remove(key);
        while inner.bytes + weight > self.max_bytes {
            let Some(oldest) = inner.order.pop_front() else { break };
            inner.remove(&oldest);
        }
        inner.bytes += weight;
        inner.order.push_back(key.to_owned());
        inner.entries.insert(key.to_owned(), entry);
    }

    /// Drops the entry at `key`; whether there was one.
    pub fn purge(&self, key: &str) -> bool {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).remove(key)
    }

    /// Drops every entry.
    pub fn purge_all(&self) {
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner) = Inner::default();
    }
}

impl Inner {
    fn remove(&mut self, key: &str) -> bool {
        match self.entries.remove(key) {
            Some(entry) => {
                self.bytes -= entry.weight();
                self.order.retain(|k| k != key);
                true
            }
            None => false,
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
}
