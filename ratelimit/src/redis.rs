//! [`RedisStore`]: counters in Redis, shared by every node of the cluster.
//!
//! Decisions are calls of one Lua script (`redis.lua`), atomic on the server: it reads every
//! window's current and previous counters with one `MGET`, applies the same test as
//! [`crate::decide`] to each of the call's requests in turn, increments (and sets the TTL of) every
//! window's current counter by the number allowed, and returns that number and the counts it read;
//! the Rust side turns them into remaining, reset and retry-after with [`crate::decide`]'s code, so
//! the two stores answer alike. A call carries one request, or all the checks of its key that
//! queued while the previous call was in flight ([`crate::coalesce`]): under load a busy key costs
//! Redis one script run per round trip, not one per request. The script is loaded
//! with `SCRIPT LOAD` when connecting and by every [`Store::ping`] that finds it missing, and
//! called by its SHA-1 (`EVALSHA`); after a `NOSCRIPT` (a restarted or flushed server) it is
//! loaded again and the call retried once (`redis::Script`).
//!
//! Calls go over one multiplexed [`RedisConnection`] per store (a single server or Redis Cluster),
//! so concurrent requests pipeline instead of queueing for a connection, and a dropped connection
//! is remade in the background.
//! Every call is bounded by [`RedisConfig::timeout`]: no request waits on a dead Redis longer than
//! that (Envoy ratelimit #462), whether the connection is up, reconnecting, or hanging.
//!
//! A key Redis refused is refused locally, with no call, for as long as that refusal is known to
//! hold ([`crate::refusals`]): a client far over its limit costs Redis nothing.
//!
//! The window keys come from [`crate::key`], so all of one decision's keys share a hash tag and one
//! cluster slot. Windows are placed by the caller's `now`, so nodes' clocks should agree (NTP);
//! a skew of a few milliseconds moves a few requests across a window boundary, nothing more.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::redis::Script;

use tokio::sync::oneshot;

use crate::algorithm::{decide_ms, normalize};
use crate::coalesce::{Drain, Enqueued, Queues};
use crate::connection::{within, RedisConfig, RedisConnection, RedisTarget};
use crate::key::window_key_at;
use crate::refusals::Refusals;
use crate::window::unix_ms;
use crate::{Algorithm, Decision, Store, StoreError, Window, WindowCounts};

/// The decision script; see its header for KEYS, ARGV and the reply.
const SCRIPT: &str = include_str!("redis.lua");

/// Counters in Redis (a single server, or Redis Cluster). Cloning is cheap and shares the
/// connection; stores made by separate `connect` calls behave as separate nodes would.
#[derive(Clone)]
pub struct RedisStore {
    connection: RedisConnection,
    script: Script,
    timeout: Duration,
    queues: Arc<Queues>,
    refusals: Arc<Refusals>,
}

impl RedisStore {
    /// Connects to `target` and loads the script (on every primary of a cluster), within
    /// [`RedisConfig::connect_timeout`]. A refused connection fails at once with the reason; it
    /// is not retried.
    pub async fn connect(target: impl Into<RedisTarget>, config: RedisConfig) -> Result<Self, StoreError> {
        let store = Self::new(RedisConnection::connect(&target.into(), &config).await?, config);
        store.load_script_where_missing(config.connect_timeout).await?;
        Ok(store)
    }

    /// Like [`RedisStore::connect`] but without waiting: the connection is made by the first call
    /// (e.g. the gateway's background [`Store::ping`], which also loads the script), so a node can
    /// start while Redis is down. Fails only on a URL it cannot use. Must be called
    /// within a Tokio runtime.
    pub fn open(target: impl Into<RedisTarget>, config: RedisConfig) -> Result<Self, StoreError> {
        Ok(Self::new(RedisConnection::open(&target.into(), &config)?, config))
    }

    /// A store over `connection`, each call bounded by [`RedisConfig::timeout`].
    pub fn new(connection: RedisConnection, config: RedisConfig) -> Self {
        let script = Script::new(SCRIPT);
        Self { connection, script, timeout: config.timeout, queues: Arc::default(), refusals: Arc::default() }
    }

    /// Loads the script on every primary that lacks it (the one server, or each primary of a
    /// cluster by its slot map), within `limit`; fails if any primary does not answer.
    async fn load_script_where_missing(&self, limit: Duration) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let sha = self.script.get_hash();
        within(limit, async move {
            for primary in connection.primaries().await? {
                let loaded: Vec<bool> =
                    connection.query_at(&primary, ::redis::cmd("SCRIPT").arg("EXISTS").arg(sha)).await?;
                if loaded != [true] {
                    connection.query_at::<String>(&primary, ::redis::cmd("SCRIPT").arg("LOAD").arg(SCRIPT)).await?;
                }
            }
            Ok(())
        })
        .await
    }

    /// The bound on each call ([`RedisConfig::timeout`]).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The SHA-1 the script is called by (`EVALSHA`), e.g. to check `SCRIPT EXISTS`.
    pub fn script_sha(&self) -> &str {
        self.script.get_hash()
    }

    /// Sends the checks queued for the drained key, one call per batch, until none is left.
    async fn drain(self, mut drain: Drain) {
        while let Some(batch) = drain.next() {
            let n = batch.waiters.len();
            match self.call(drain.key(), &batch.limits, batch.algorithm, batch.now, n).await {
                Ok(decisions) => {
                    for (waiter, decision) in batch.waiters.into_iter().zip(decisions) {
                        let _ = waiter.send(Ok(decision));
                    }
                }
                Err(err) => {
                    for waiter in batch.waiters {
                        let _ = waiter.send(Err(err.clone()));
                    }
                }
            }
        }
    }

    /// Decides `n` checks of `key_base` at `now` in one script call, in order: the first ones are
    /// allowed while every window has room, each seeing the counts its predecessors left.
    async fn call(
        &self,
        key_base: &str,
        limits: &[(Window, u64)],
        algorithm: Algorithm,
        now: SystemTime,
        n: usize,
    ) -> Result<Vec<Decision>, StoreError> {
        let now_ms = unix_ms(now);
        let sliding = algorithm == Algorithm::Sliding;
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(u8::from(sliding)).arg(n);
        for &(window, limit) in limits {
            let clock = window.clock(now_ms);
            invocation.key(window_key_at(key_base, window, clock.start_secs()));
            if sliding {
                invocation.key(window_key_at(key_base, window, clock.start_secs().saturating_sub(window.secs())));
            }
            let ttl_ms = if sliding { 2 * clock.len_ms } else { clock.len_ms };
            invocation.arg(limit).arg(clock.len_ms).arg(clock.elapsed_ms).arg(ttl_ms);
        }
        let mut connection = self.connection.clone();
        let reply: Vec<i64> =
            within(self.timeout, async move { invocation.invoke_async(&mut connection).await }).await?;

        let parsed = reply.split_first().and_then(|(&allowed, counts)| {
            let allowed = usize::try_from(allowed).ok().filter(|&allowed| allowed <= n)?;
            (counts.len() == 2 * limits.len()).then_some((allowed, counts))
        });
        let Some((allowed, counts)) = parsed else {
            return Err(StoreError::Script(format!("unexpected reply {reply:?}")));
        };
        let before: Vec<WindowCounts> = counts
            .chunks_exact(2)
            .map(|pair| WindowCounts {
                current: u64::try_from(pair[0]).unwrap_or(0),
                previous: u64::try_from(pair[1]).unwrap_or(0),
            })
            .collect();
        // Check j saw the counts plus the j before it that were allowed; the script's verdict,
        // which its increments followed, rules.
        let seen = |j: usize| -> Vec<WindowCounts> {
            let seen = j.min(allowed) as u64;
            before.iter().map(|c| WindowCounts { current: c.current + seen, previous: c.previous }).collect()
        };
        let decisions: Vec<Decision> =
            (0..n).map(|j| decide_ms(limits, algorithm, now_ms, &seen(j), Some(j < allowed))).collect();
        // The refused ones (the last n - allowed) saw the same counts: remember the refusal.
        if let Some(refused) = decisions.get(allowed) {
            self.refusals.remember(key_base, limits, algorithm, seen(allowed), refused, now_ms);
        }
        Ok(decisions)
    }
}

impl Store for RedisStore {
    async fn check(
        &self,
        key_base: &str,
        limits: &[(Window, u64)],
        algorithm: Algorithm,
        now: SystemTime,
    ) -> Result<Decision, StoreError> {
        let limits = normalize(limits);
        if limits.is_empty() {
            return Ok(decide_ms(&[], algorithm, unix_ms(now), &[], None));
        }
        if let Some(refused) = self.refusals.check(key_base, &limits, algorithm, unix_ms(now)) {
            return Ok(refused);
        }
        let (reply, decision) = oneshot::channel();
        match self.queues.enqueue(key_base, &limits, algorithm, now, reply) {
            // Spawned, so that a client going away mid-call does not strand the checks queued behind it.
            Enqueued::Lead => drop(tokio::spawn(self.clone().drain(Drain::new(self.queues.clone(), key_base)))),
            Enqueued::Joined => {}
            Enqueued::Alone => {
                let mut decisions = self.call(key_base, &limits, algorithm, now, 1).await?;
                return decisions.pop().ok_or_else(|| StoreError::Script("no decision".to_owned()));
            }
        }
        match tokio::time::timeout(self.timeout, decision).await {
            Ok(Ok(decision)) => decision,
            Ok(Err(_)) => Err(StoreError::Connection("the call for this check was abandoned".to_owned())),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// Answers once every primary does (the one server, or each primary of a cluster by its slot
    /// map: while one is lost, keys in a third of the slots would fail, so the whole store counts
    /// as down), with the script loaded on it, so that the first check after a connect or a Redis
    /// restart costs one round trip, not three.
    async fn ping(&self) -> Result<(), StoreError> {
        self.load_script_where_missing(self.timeout).await
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("connection", &self.connection)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_urls_are_typed() {
        let err = RedisStore::open("http://localhost", RedisConfig::default()).unwrap_err();
        assert!(matches!(err, StoreError::InvalidUrl(_)), "{err:?}");
        if !cfg!(feature = "tls") {
            let err = RedisStore::open("rediss://localhost", RedisConfig::default()).unwrap_err();
            assert!(matches!(err, StoreError::InvalidUrl(_)), "{err:?}");
        }
    }

    #[tokio::test]
    async fn nothing_listening_fails_within_the_timeout() {
        // Port 1 on loopback: nothing listens there in a test environment; the connection is refused.
        let config = RedisConfig { timeout: Duration::from_millis(50), ..RedisConfig::default() };
        let store = RedisStore::open("redis://127.0.0.1:1", config).expect("a usable url");
        assert!(store.ping().await.is_err());
        let started = std::time::Instant::now();
        let err = store.check("rl:{t:v}", &[(Window::Minute, 1)], Algorithm::Sliding, SystemTime::now()).await;
        assert!(err.is_err());
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
        let started = std::time::Instant::now();
        let err = RedisStore::connect("redis://127.0.0.1:1", config).await.unwrap_err();
        assert!(matches!(err, StoreError::Connection(_)), "a refusal is reported as such: {err:?}");
        assert!(started.elapsed() < Duration::from_millis(500), "and not retried: {:?}", started.elapsed());
    }
}
