//! Where cached responses live: Redis (the `redis` strategy: one cache for the cluster; a single
//! server or Redis Cluster, where each entry is one key in its own slot) or this node's memory
//! (`memory`). Every Redis call is bounded; a Redis that fails or is known to be down makes the
//! cache step aside (`Bypass`), never an error.
//!
//! Concurrent misses for one key on one node fetch the upstream once: the first becomes the
//! filler, the others wait for it (bounded) and look again.

use super::entry::Entry;
use super::memory::MemoryCache;
use config_sync::model::CacheStrategy;
use ratelimit::RedisConnection;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

/// How long a request waits for another one filling the same key.
const FILL_WAIT: Duration = Duration::from_secs(10);
/// Prefix of every cache key in Redis.
const PREFIX: &str = "pc:";

/// The stores, and the fills in progress.
pub struct Caches {
    memory: MemoryCache,
    redis: Option<RedisConnection>,
    /// How long one Redis call may take.
    timeout: Duration,
    filling: Mutex<HashMap<String, Arc<Notify>>>,
    /// Tells the other nodes to drop a key from their memory, once gossip has started.
    peers: OnceLock<Peers>,
}

type Peers = Box<dyn Fn(String) + Send + Sync>;

/// Why the cache could not answer: it steps aside.
#[derive(Debug, thiserror::Error)]
#[error("cache unavailable: {0}")]
pub struct Unavailable(String);

/// What a lookup found.
pub enum Lookup {
    /// A fresh entry.
    Hit(Entry),
    /// Nothing; this request fills the key (drop the guard when done).
    Fill(FillGuard),
    /// Nothing, and another request was filling it; look again.
    Waited,
}

/// Marks a key as being filled by this request; dropping it lets the waiters look again.
pub struct FillGuard {
    caches: Arc<Caches>,
    key: String,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        if let Some(done) = self.caches.filling.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key) {
            done.notify_waiters();
        }
    }
}

impl Caches {
    /// The stores of a node: memory of at most `memory_bytes`, and Redis over `redis`, each
    /// call bounded by `timeout`.
    pub fn new(memory_bytes: usize, redis: Option<RedisConnection>, timeout: Duration) -> Caches {
        Caches {
            memory: MemoryCache::new(memory_bytes),
            redis,
            timeout,
            filling: Mutex::new(HashMap::new()),
            peers: OnceLock::new(),
        }
    }

    /// Whether `strategy` uses Redis on this node (unset: when the node has Redis).
    pub fn uses_redis(&self, strategy: Option<CacheStrategy>) -> bool {
        match strategy {
            Some(CacheStrategy::Memory) => false,
            Some(CacheStrategy::Redis) | None => self.redis.is_some(),
        }
    }

    /// The right to fill `key` when no other request of this node is filling it.
    pub fn try_fill(self: &Arc<Self>, key: &str) -> Option<FillGuard> {
        let mut filling = self.filling.lock().unwrap_or_else(PoisonError::into_inner);
        if filling.contains_key(key) {
            return None;
        }
        filling.insert(key.to_owned(), Arc::new(Notify::new()));
        Some(FillGuard { caches: self.clone(), key: key.to_owned() })
    }

    /// The entry at `key` (fresh, or stale within its keep); or, when there is none, the right to fill it (or word that
    /// another request filled it meanwhile).
    pub async fn lookup(self: &Arc<Self>, key: &str, redis: bool, now: SystemTime) -> Result<Lookup, Unavailable> {
        if let Some(entry) = self.get(key, redis, now).await? {
            return Ok(Lookup::Hit(entry));
        }
        let waiting = {
            let mut filling = self.filling.lock().unwrap_or_else(PoisonError::into_inner);
            match filling.get(key) {
                Some(done) => {
                    let done = done.clone();
                    Some(async move { done.notified_owned().await })
                }
                None => {
                    filling.insert(key.to_owned(), Arc::new(Notify::new()));
                    None
                }
            }
        };
        match waiting {
            None => Ok(Lookup::Fill(FillGuard { caches: self.clone(), key: key.to_owned() })),
            Some(done) => {
                let _ = tokio::time::timeout(FILL_WAIT, done).await;
                Ok(Lookup::Waited)
            }
        }
    }

    /// The entry at `key`, if it is still kept (fresh, or stale within its keep).
    pub async fn get(&self, key: &str, redis: bool, now: SystemTime) -> Result<Option<Entry>, Unavailable> {
        if !redis {
            return Ok(self.memory.get(key, now));
        }
        let mut connection = self.redis.clone().ok_or_else(|| Unavailable("no redis".into()))?;
        let bytes: Option<Vec<u8>> = self.bounded(connection.get(format!("{PREFIX}{key}"))).await?;
        Ok(bytes.and_then(|b| super::entry::Entry::decode(b.into()).ok()).filter(|e| e.kept(now)))
    }

    /// Stores `entry` at `key` for as long as it is kept.
    pub async fn put(&self, key: &str, entry: Entry, redis: bool) -> Result<(), Unavailable> {
        if !redis {
            self.memory.put(key, entry);
            return Ok(());
        }
        let mut connection = self.redis.clone().ok_or_else(|| Unavailable("no redis".into()))?;
        let ttl = (entry.remaining(SystemTime::now()).as_millis() as u64).max(1);
        let bytes = entry.encode().to_vec();
        self.bounded(connection.pset_ex::<_, _, ()>(format!("{PREFIX}{key}"), bytes, ttl)).await
    }

    /// Drops the entry at `key` in memory and in Redis; whether either had it.
    pub async fn purge(&self, key: &str) -> Result<bool, Unavailable> {
        let mut found = self.memory.purge(key);
        if let Some(mut connection) = self.redis.clone() {
            let removed: u64 = self.bounded(connection.del(format!("{PREFIX}{key}"))).await?;
            found |= removed > 0;
        }
        Ok(found)
    }

    /// Sets how the other nodes are told of an invalidation (once; later calls are ignored).
    pub fn tell_peers(&self, tell: impl Fn(String) + Send + Sync + 'static) {
        let _ = self.peers.set(Box::new(tell));
    }

    /// Drops the entry at `key` everywhere: here, in Redis, and in every node's memory.
    pub async fn invalidate(&self, key: &str) -> Result<bool, Unavailable> {
        if let Some(tell) = self.peers.get() {
            tell(key.to_owned());
        }
        self.purge(key).await
    }

    /// Drops the entry at `key` in this node's memory only (a purge made on another node).
    pub fn purge_memory(&self, key: Option<&str>) {
        match key {
            Some(key) => {
                self.memory.purge(key);
            }
            None => self.memory.purge_all(),
        }
    }

    /// Drops every entry, in memory and in Redis (on each primary of a cluster in turn).
    pub async fn purge_all(&self) -> Result<(), Unavailable> {
        self.memory.purge_all();
        let Some(mut connection) = self.redis.clone() else { return Ok(()) };
        for primary in self.bounded(connection.primaries()).await? {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(format!("{PREFIX}*")).arg("COUNT").arg(500);
                let (next, keys): (u64, Vec<String>) = self.bounded(connection.query_at(&primary, &scan)).await?;
                if !keys.is_empty() {
                    self.bounded(connection.unlink::<_, ()>(keys)).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }
}

impl Caches {
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unavailable> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Unavailable(e.to_string())),
            Err(_) => Err(Unavailable(format!("redis did not answer within {:?}", self.timeout))),
        }
    }
}
