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
//! with `SCRIPT LOAD` when connecting and then called by its SHA-1 (`EVALSHA`); after a `NOSCRIPT`
//! (a restarted or flushed server) it is loaded again and the call retried once (`redis::Script`).
//!
//! Calls go over one multiplexed connection per store (`redis::aio::ConnectionManager`, or a
//! `redis::cluster_async::ClusterConnection` for Redis Cluster), so concurrent requests pipeline
//! instead of queueing for a connection, and a dropped connection is remade in the background.
//! Every call is bounded by [`RedisConfig::timeout`]: no request waits on a dead Redis longer than
//! that (Envoy ratelimit #462), whether the connection is up, reconnecting, or hanging.
//!
//! The window keys come from [`crate::key`], so all of one decision's keys share a hash tag and one
//! cluster slot. Windows are placed by the caller's `now`, so nodes' clocks should agree (NTP);
//! a skew of a few milliseconds moves a few requests across a window boundary, nothing more.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    AsyncConnectionConfig, ErrorKind, FromRedisValue, RedisError, RedisResult, Script, ScriptInvocation, Value,
};

use tokio::sync::oneshot;

use crate::algorithm::{decide_ms, normalize};
use crate::coalesce::{Drain, Enqueued, Queues};
use crate::key::window_key_at;
use crate::window::unix_ms;
use crate::{Algorithm, Decision, Store, StoreError, Window, WindowCounts};

/// The decision script; see its header for KEYS, ARGV and the reply.
const SCRIPT: &str = include_str!("redis.lua");

/// How a [`RedisStore`] talks to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisConfig {
    /// Longest a call ([`Store::check`], [`Store::ping`]) may take, from the call to the answer,
    /// reconnection included; past it the call fails with [`StoreError::Timeout`]. Default 50 ms.
    pub timeout: Duration,
    /// Longest one connection attempt may take, and [`RedisStore::connect`] in all. Default 1 s.
    pub connect_timeout: Duration,
    /// Longest pause between two reconnection attempts while Redis is down, so it is used again
    /// soon after it returns. Default 1 s.
    pub reconnect_max_delay: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            reconnect_max_delay: Duration::from_secs(1),
        }
    }
}

/// Counters in Redis (a single server, or Redis Cluster). Cloning is cheap and shares the
/// connection; stores made by separate `connect` calls behave as separate nodes would.
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    script: Script,
    timeout: Duration,
    queues: Arc<Queues>,
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisStore {
    /// Connects to one Redis server (`redis://[user:password@]host[:port][/db]`, or `rediss://`
    /// with the `tls` feature) and loads the script, within [`RedisConfig::connect_timeout`]. A
    /// refused connection fails at once with the reason; it is not retried.
    pub async fn connect(url: &str, config: RedisConfig) -> Result<Self, StoreError> {
        let client = client(url)?;
        // One direct attempt first, so a wrong address or password is reported as such, and the
        // script loaded over it (the script cache is the server's, not the connection's).
        let direct = AsyncConnectionConfig::new().set_connection_timeout(Some(config.connect_timeout));
        let script = Script::new(SCRIPT);
        within(config.connect_timeout, async {
            let mut direct = client.get_multiplexed_async_connection_with_config(&direct).await?;
            script.prepare_invoke().load_async(&mut direct).await
        })
        .await?;
        let store = Self::with_client(client, config, script)?;
        within(config.connect_timeout, store.connection.clone().query::<Value>(&::redis::cmd("PING"))).await?;
        Ok(store)
    }

    /// Like [`RedisStore::connect`] but without waiting: the connection is made by the first call
    /// (e.g. the gateway's background [`Store::ping`]) and the script loaded by the first check,
    /// so a node can start while Redis is down. Fails only on a URL it cannot use. Must be called
    /// within a Tokio runtime.
    pub fn open(url: &str, config: RedisConfig) -> Result<Self, StoreError> {
        Self::with_client(client(url)?, config, Script::new(SCRIPT))
    }

    fn with_client(client: ::redis::Client, config: RedisConfig, script: Script) -> Result<Self, StoreError> {
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_max_delay(config.reconnect_max_delay);
        let manager = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        Ok(Self { connection: Connection::Single(manager), script, timeout: config.timeout, queues: Arc::default() })
    }

    /// Connects to a Redis Cluster through any of its nodes (`urls`: one or more `redis://` URLs),
    /// learns its slots, and loads the script on every primary, within
    /// [`RedisConfig::connect_timeout`]. Moved slots and failovers are followed by the client.
    pub async fn connect_cluster<I>(urls: I, config: RedisConfig) -> Result<Self, StoreError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        install_crypto_provider();
        let urls: Vec<String> = urls.into_iter().map(|url| url.as_ref().to_owned()).collect();
        let client = ClusterClient::builder(urls)
            .connection_timeout(config.connect_timeout)
            // The client's own bound (slot refreshes included); each call is bounded by `timeout` above it.
            .response_timeout(config.connect_timeout)
            .max_retry_wait(u64::try_from(config.reconnect_max_delay.as_millis()).unwrap_or(u64::MAX))
            .build()
            .map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        let connection = within(config.connect_timeout, client.get_async_connection()).await?;
        let store = Self {
            connection: Connection::Cluster(connection),
            script: Script::new(SCRIPT),
            timeout: config.timeout,
            queues: Arc::default(),
        };
        store.load_script(config.connect_timeout).await?;
        Ok(store)
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
        let reply: Vec<i64> = within(self.timeout, async move { connection.invoke(&invocation).await }).await?;

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
        let decisions = (0..n)
            .map(|j| {
                let seen = j.min(allowed) as u64;
                let counts: Vec<WindowCounts> =
                    before.iter().map(|c| WindowCounts { current: c.current + seen, previous: c.previous }).collect();
                decide_ms(limits, algorithm, now_ms, &counts, Some(j < allowed))
            })
            .collect();
        Ok(decisions)
    }

    /// Loads the script over the store's connection (on every primary of a cluster).
    async fn load_script(&self, limit: Duration) -> Result<(), StoreError> {
        let invocation = self.script.prepare_invoke();
        let mut connection = self.connection.clone();
        within(limit, async move { connection.load(&invocation).await }).await
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

    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        within(self.timeout, async move { connection.query::<Value>(&::redis::cmd("PING")).await.map(drop) }).await
    }
}

impl Connection {
    async fn invoke<T: FromRedisValue>(&mut self, invocation: &ScriptInvocation<'_>) -> RedisResult<T> {
        match self {
            Connection::Single(c) => invocation.invoke_async(c).await,
            Connection::Cluster(c) => invocation.invoke_async(c).await,
        }
    }

    async fn load(&mut self, invocation: &ScriptInvocation<'_>) -> RedisResult<()> {
        match self {
            Connection::Single(c) => invocation.load_async(c).await.map(drop),
            Connection::Cluster(c) => invocation.load_async(c).await.map(drop),
        }
    }

    async fn query<T: FromRedisValue>(&mut self, cmd: &::redis::Cmd) -> RedisResult<T> {
        match self {
            Connection::Single(c) => cmd.query_async(c).await,
            Connection::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.connection {
            Connection::Single(_) => "single",
            Connection::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore").field("connection", &kind).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// A client for `url`, or why the URL cannot be used.
fn client(url: &str) -> Result<::redis::Client, StoreError> {
    install_crypto_provider();
    ::redis::Client::open(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))
}

/// Runs `call`, giving up after `limit`.
async fn within<T>(limit: Duration, call: impl Future<Output = RedisResult<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(classify),
        Err(_) => Err(StoreError::Timeout(limit)),
    }
}

/// Sorts a client error into what the caller acts on.
fn classify(err: RedisError) -> StoreError {
    match err.kind() {
        ErrorKind::Server(_) if !err.is_cluster_error() => StoreError::Script(err.to_string()),
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType | ErrorKind::Extension => {
            StoreError::Script(err.to_string())
        }
        _ => StoreError::Connection(err.to_string()),
    }
}

/// rustls needs a process-wide crypto provider; install ring's unless one is already there.
#[cfg(feature = "tls")]
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(not(feature = "tls"))]
fn install_crypto_provider() {}

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

    #[test]
    fn server_errors_are_script_errors() {
        let err = RedisError::from((ErrorKind::Server(::redis::ServerErrorKind::ReadOnly), "READONLY"));
        assert!(matches!(classify(err), StoreError::Script(_)));
        let err = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(classify(err), StoreError::Connection(_)));
    }
}
