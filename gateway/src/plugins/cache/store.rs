//! Where cached responses live: Redis (the `redis` strategy: one cache for the cluster; a single
//! server or Redis Cluster, where each entry is one key in its own slot) or this node's memory
//! (`memory`). Every Redis call is bounded; a Redis that fails or is known to be down makes the
//! cache step aside (`Bypass`), never an error.
//!
//! The `redis` strategy has two levels: a copy of each entry read or stored on this node stays
//! in a bounded memory level for at most [`LEVEL_RESIDENCY`], so a fresh hit costs no Redis call;
//! purges and invalidations reach every node's level by gossip, and the residency bounds how
//! long a copy may outlive a purge whose gossip a node missed.
//!
//! Concurrent misses for one key make one upstream request: on one node the first becomes the
//! filler and the others wait for it (bounded) and look again; across the cluster, the filler
//! first claims the key in Redis (a short lock it renews while it fills), and the nodes that
//! find it claimed wait for the entry instead, or go to the upstream themselves when the claim
//! ends without one (its holder died, or the response could not be stored).

use super::entry::{now_ms, Entry};
use super::memory::MemoryCache;
use config_sync::model::CacheStrategy;
use ratelimit::RedisConnection;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// How long a request waits for another one filling the same key.
const FILL_WAIT: Duration = Duration::from_secs(10);
/// Prefix of every cache key in Redis.
const PREFIX: &str = "pc:";
/// Prefix of the index of each resource's keys, in Redis (a set).
const INDEX_PREFIX: &str = "pc-res:";
/// Prefix of the claims to fill a key, in Redis.
const CLAIM_PREFIX: &str = "pc-fill:";
/// How long a claim holds unless renewed: when its holder dies, the others stop waiting for it
/// after at most this. The holder renews it every third of it.
const CLAIM_TTL: Duration = Duration::from_secs(2);
/// How often a node waiting on another's claim looks for the entry.
const CLAIM_POLL: Duration = Duration::from_millis(10);
/// How long a memory-level copy stands in for the Redis entry before it is read again.
pub const LEVEL_RESIDENCY: Duration = Duration::from_secs(5);

/// Deletes a claim only if it is still the caller's (it may have expired and been taken).
const RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0";
/// Adds a key to its resource's index, which lives at least as long as the entry.
const INDEX: &str = "redis.call('sadd', KEYS[1], ARGV[1]) \
    if redis.call('pttl', KEYS[1]) < tonumber(ARGV[2]) then redis.call('pexpire', KEYS[1], ARGV[2]) end return 1";
/// Extends a claim only if it is still the caller's.
const RENEW: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0";

/// The stores, and the fills in progress.
pub struct Caches {
    memory: MemoryCache,
    /// Copies of Redis entries, in front of Redis.
    level: MemoryCache,
    redis: Option<RedisConnection>,
    /// How long one Redis call may take.
    timeout: Duration,
    filling: Mutex<HashMap<String, Arc<Notify>>>,
    /// Tells the other nodes to drop a key from their memory, once gossip has started.
    peers: OnceLock<Peers>,
    /// Makes this node's claims unique.
    claims: AtomicU64,
    node: u64,
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

/// Marks a key as being filled by this request; dropping it lets the waiters look again, and
/// ends the claim in Redis if it holds one.
pub struct FillGuard {
    caches: Arc<Caches>,
    key: String,
    claim: Option<Claim>,
}

/// This node's claim to fill a key, cluster-wide.
struct Claim {
    name: String,
    token: String,
    renewing: tokio::task::JoinHandle<()>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        if let Some(done) = self.caches.filling.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key) {
            done.notify_waiters();
        }
        if let Some(claim) = self.claim.take() {
            claim.renewing.abort();
            let caches = self.caches.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let mut connection = caches.redis.clone()?;
                    let release = redis::Script::new(RELEASE);
                    let mut call = release.key(&claim.name);
                    call.arg(&claim.token);
                    caches.bounded(call.invoke_async::<i64>(&mut connection)).await.ok()
                });
            }
        }
    }
}

impl Caches {
    /// The stores of a node: memory of at most `memory_bytes` for the memory strategy, a memory
    /// level of at most `level_bytes` in front of Redis (0: none), and Redis over `redis`, each
    /// call bounded by `timeout`.
    pub fn new(memory_bytes: usize, level_bytes: usize, redis: Option<RedisConnection>, timeout: Duration) -> Caches {
        Caches {
            memory: MemoryCache::new(memory_bytes),
            level: MemoryCache::new(level_bytes),
            redis,
            timeout,
            filling: Mutex::new(HashMap::new()),
            peers: OnceLock::new(),
            claims: AtomicU64::new(0),
            node: fastrand::u64(..),
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
        Some(FillGuard { caches: self.clone(), key: key.to_owned(), claim: None })
    }

    /// The entry at `key` (fresh, or stale within its keep); or, when there is none, the right
    /// to fill it (or word that another request filled it meanwhile). In Redis, the right to
    /// fill is claimed for the cluster; while another node holds it, this waits for its entry.
    /// While Redis is known to be down (`redis_down`), only the memory level answers.
    pub async fn lookup(
        self: &Arc<Self>,
        key: &str,
        redis: bool,
        redis_down: bool,
        now: SystemTime,
    ) -> Result<Lookup, Unavailable> {
        if redis && redis_down {
            return match self.fresh_copy(key, now) {
                Some(entry) => Ok(Lookup::Hit(entry)),
                None => Err(Unavailable("redis is down".into())),
            };
        }
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
            None => {
                let guard = FillGuard { caches: self.clone(), key: key.to_owned(), claim: None };
                if redis {
                    return self.claim(guard).await;
                }
                Ok(Lookup::Fill(guard))
            }
            Some(done) => {
                let _ = tokio::time::timeout(FILL_WAIT, done).await;
                Ok(Lookup::Waited)
            }
        }
    }

    /// Claims the guard's key in Redis for this node; or, while another node's claim holds,
    /// waits for that node's entry, which is then the answer. A claim that ends without an
    /// entry (its holder died, or the response was not one to store) leaves the upstream to
    /// this request, unclaimed: uncacheable responses are not fetched one node at a time.
    async fn claim(self: &Arc<Self>, mut guard: FillGuard) -> Result<Lookup, Unavailable> {
        let mut connection = self.redis.clone().ok_or_else(|| Unavailable("no redis".into()))?;
        let name = format!("{CLAIM_PREFIX}{}", guard.key);
        let token = format!("{:x}-{}", self.node, self.claims.fetch_add(1, Ordering::Relaxed));
        let mut set = redis::cmd("SET");
        set.arg(&name).arg(&token).arg("NX").arg("PX").arg(CLAIM_TTL.as_millis() as u64);
        let claimed: Option<String> = self.bounded(set.query_async(&mut connection)).await?;
        if claimed.is_some() {
            let renewing = self.renew(name.clone(), token.clone());
            guard.claim = Some(Claim { name, token, renewing });
            return Ok(Lookup::Fill(guard));
        }
        let deadline = Instant::now() + FILL_WAIT;
        let mut poll = tokio::time::interval(CLAIM_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        while Instant::now() < deadline {
            poll.tick().await;
            if let Some(entry) = self.get(&guard.key, true, SystemTime::now()).await? {
                return Ok(Lookup::Hit(entry));
            }
            let held: bool = self.bounded(connection.exists(&name)).await?;
            if !held {
                // The holder may have stored its entry just before it let go.
                if let Some(entry) = self.get(&guard.key, true, SystemTime::now()).await? {
                    return Ok(Lookup::Hit(entry));
                }
                break;
            }
        }
        Ok(Lookup::Fill(guard))
    }

    /// Keeps the claim `name` alive while it is `token`'s, for at most [`FILL_WAIT`] (the
    /// longest anyone waits for it); the task is aborted when the fill ends.
    fn renew(self: &Arc<Self>, name: String, token: String) -> tokio::task::JoinHandle<()> {
        let caches = self.clone();
        tokio::spawn(async move {
            let renew = redis::Script::new(RENEW);
            let until = Instant::now() + FILL_WAIT;
            let mut every = tokio::time::interval(CLAIM_TTL / 3);
            every.tick().await;
            while Instant::now() < until {
                every.tick().await;
                let Some(mut connection) = caches.redis.clone() else { return };
                let mut call = renew.key(&name);
                call.arg(&token).arg(CLAIM_TTL.as_millis() as u64);
                if !matches!(caches.bounded(call.invoke_async(&mut connection)).await, Ok(1i64)) {
                    return;
                }
            }
        })
    }

    /// The entry at `key`, if it is still kept (fresh, or stale within its keep): from memory,
    /// or from the memory level and then Redis.
    pub async fn get(&self, key: &str, redis: bool, now: SystemTime) -> Result<Option<Entry>, Unavailable> {
        if !redis {
            return Ok(self.memory.get(key, now));
        }
        if let Some(entry) = self.fresh_copy(key, now) {
            return Ok(Some(entry));
        }
        let mut connection = self.redis.clone().ok_or_else(|| Unavailable("no redis".into()))?;
        let bytes: Option<Vec<u8>> = self.bounded(connection.get(format!("{PREFIX}{key}"))).await?;
        let entry = bytes.and_then(|b| Entry::decode(b.into()).ok()).filter(|e| e.kept(now));
        if let Some(entry) = &entry {
            self.keep_level(key, entry.clone(), now);
        }
        Ok(entry)
    }

    /// Stores `entry` at `key` for as long as it is kept (in Redis, and a copy in the level).
    pub async fn put(&self, key: &str, entry: Entry, redis: bool) -> Result<(), Unavailable> {
        if !redis {
            self.memory.put(key, entry);
            return Ok(());
        }
        let mut connection = self.redis.clone().ok_or_else(|| Unavailable("no redis".into()))?;
        let now = SystemTime::now();
        let ttl = (entry.remaining(now).as_millis() as u64).max(1);
        let bytes = entry.encode().to_vec();
        self.bounded(connection.pset_ex::<_, _, ()>(format!("{PREFIX}{key}"), bytes, ttl)).await?;
        if let Some(resource) = &entry.resource {
            let index = redis::Script::new(INDEX);
            let mut call = index.key(format!("{INDEX_PREFIX}{resource}"));
            call.arg(key).arg(ttl);
            self.bounded(call.invoke_async::<i64>(&mut connection)).await?;
        }
        self.keep_level(key, entry, now);
        Ok(())
    }

    /// The memory level's copy of `key`, if fresh: only a fresh copy stands in for Redis, where
    /// a stale one may have been revalidated or replaced by another node.
    fn fresh_copy(&self, key: &str, now: SystemTime) -> Option<Entry> {
        self.level.get(key, now).filter(|e| e.fresh(now))
    }

    fn keep_level(&self, key: &str, entry: Entry, now: SystemTime) {
        self.level.put_until(key, entry, now_ms(now).saturating_add(LEVEL_RESIDENCY.as_millis() as u64));
    }

    /// Drops the entry at `key` in memory and in Redis; whether either had it.
    pub async fn purge(&self, key: &str) -> Result<bool, Unavailable> {
        let mut found = self.memory.purge(key);
        found |= self.level.purge(key);
        if let Some(mut connection) = self.redis.clone() {
            let removed: u64 = self.bounded(connection.del(format!("{PREFIX}{key}"))).await?;
            found |= removed > 0;
        }
        Ok(found)
    }

    /// Sets how the other nodes are told of an invalidation, given its resource (once; later
    /// calls are ignored).
    pub fn tell_peers(&self, tell: impl Fn(String) + Send + Sync + 'static) {
        let _ = self.peers.set(Box::new(tell));
    }

    /// Drops every entry stored under `resource`, whatever its method, consumer or varied
    /// headers, everywhere: here, in Redis, and in every node's memory; how many were found
    /// here and in Redis.
    pub async fn invalidate(&self, resource: &str) -> Result<usize, Unavailable> {
        if let Some(tell) = self.peers.get() {
            tell(resource.to_owned());
        }
        let mut dropped = self.invalidate_memory(resource);
        let Some(mut connection) = self.redis.clone() else { return Ok(dropped) };
        let index = format!("{INDEX_PREFIX}{resource}");
        loop {
            // Taken out of the set as they are read: a key added meanwhile stays for the next.
            let mut spop = redis::cmd("SPOP");
            spop.arg(&index).arg(500);
            let keys: Vec<String> = self.bounded(spop.query_async(&mut connection)).await?;
            if keys.is_empty() {
                return Ok(dropped);
            }
            for key in &keys {
                // One by one: on a Redis Cluster each key is in a slot of its own.
                let removed: u64 = self.bounded(connection.del(format!("{PREFIX}{key}"))).await?;
                dropped += removed as usize;
            }
        }
    }

    /// Drops the entries of `resource` in this node's memory and memory level only (an
    /// invalidation made on another node); how many there were.
    pub fn invalidate_memory(&self, resource: &str) -> usize {
        self.memory.purge_resource(resource) + self.level.purge_resource(resource)
    }

    /// Drops the entry at `key` in this node's memory and memory level only (a purge made on another node).
    pub fn purge_memory(&self, key: Option<&str>) {
        match key {
            Some(key) => {
                self.memory.purge(key);
                self.level.purge(key);
            }
            None => {
                self.memory.purge_all();
                self.level.purge_all();
            }
        }
    }

    /// Drops every entry, in memory and in Redis (on each primary of a cluster in turn).
    pub async fn purge_all(&self) -> Result<(), Unavailable> {
        self.memory.purge_all();
        self.level.purge_all();
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
