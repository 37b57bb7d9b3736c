//! [`RedisConnection`]: one multiplexed, self-reconnecting connection to Redis, a single server or
//! a Redis Cluster ([`RedisTarget`]). The rate-limit store talks through one; the gateway's
//! response cache through another, so that large cached bodies never queue ahead of decisions.
//!
//! It implements `redis::aio::ConnectionLike`, so every command of `redis::AsyncCommands` and
//! `redis::Script` runs over it as over a plain connection; on a cluster the client routes each
//! command by its keys' slot and follows moved slots and failovers. What a cluster cannot route by
//! key (a `SCAN` of the whole key space) goes to each primary in turn: [`RedisConnection::primaries`]
//! and [`RedisConnection::query_at`].

use std::fmt;
use std::future::Future;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, Value,
};

use crate::StoreError;

/// How a connection talks to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisConfig {
    /// Longest a call (a rate-limit decision, a ping, a cache read) may take, from the call to
    /// the answer, reconnection included; past it the call fails with [`StoreError::Timeout`].
    /// Default 50 ms.
    pub timeout: Duration,
    /// Longest one connection attempt may take, and [`RedisConnection::connect`] in all.
    /// Default 1 s.
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

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server: `redis://[user:password@]host[:port][/db]`, or `rediss://` (the `tls` feature).
    Server(String),
    /// A Redis Cluster, known by one or more of its nodes' URLs (database 0 only); the client
    /// learns the rest of the cluster from them.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// The target a node's settings name: `urls` is one URL, or for a cluster (`cluster`) one or
    /// more comma-separated seeds. `None` when `urls` names none.
    pub fn from_settings(urls: &str, cluster: bool) -> Result<Option<RedisTarget>, StoreError> {
        let urls: Vec<String> = urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
        match (cluster, urls.len()) {
            (_, 0) => Ok(None),
            (true, _) => Ok(Some(RedisTarget::Cluster(urls))),
            (false, 1) => Ok(urls.into_iter().next().map(RedisTarget::Server)),
            (false, n) => Err(StoreError::InvalidUrl(format!(
                "{n} URLs for one server; a Redis Cluster's seed nodes need the cluster mode"
            ))),
        }
    }
}

impl From<String> for RedisTarget {
    fn from(url: String) -> Self {
        RedisTarget::Server(url)
    }
}

impl From<&str> for RedisTarget {
    fn from(url: &str) -> Self {
        RedisTarget::Server(url.to_owned())
    }
}

/// URLs may carry a password: the `Debug` form shows hosts only.
impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts = |urls: &[String]| -> Vec<String> { urls.iter().map(|u| without_credentials(u)).collect() };
        match self {
            RedisTarget::Server(url) => f.debug_tuple("Server").field(&without_credentials(url)).finish(),
            RedisTarget::Cluster(urls) => f.debug_tuple("Cluster").field(&hosts(urls)).finish(),
        }
    }
}

/// `url` with any `user:password@` cut out.
fn without_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}{}", &url[..scheme + 3], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// A connection to a [`RedisTarget`]. Cloning is cheap and shares it.
#[derive(Clone)]
pub struct RedisConnection(Inner);

#[derive(Clone)]
enum Inner {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

/// One primary of the target, for [`RedisConnection::query_at`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary(Option<(String, u16)>);

impl RedisConnection {
    /// A connection made by its first command, so that a node can start while Redis is down and
    /// use it once it is up; fails only on URLs it cannot use. Must be called within a Tokio
    /// runtime. Attempts are bounded by [`RedisConfig::connect_timeout`] and, while Redis is down,
    /// spaced by at most [`RedisConfig::reconnect_max_delay`].
    pub fn open(target: &RedisTarget, config: &RedisConfig) -> Result<Self, StoreError> {
        install_crypto_provider();
        match target {
            RedisTarget::Server(url) => {
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_max_delay(config.reconnect_max_delay);
                let manager = ConnectionManager::new_lazy_with_config(server_client(url)?, manager)
                    .map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
                Ok(RedisConnection(Inner::Server(manager)))
            }
            RedisTarget::Cluster(urls) => {
                let client = cluster_client(urls, config)?;
                Ok(RedisConnection(Inner::Cluster(
                    client.get_pending_async_connection_with_config(ClusterConfig::new()),
                )))
            }
        }
    }

    /// Connects now, within [`RedisConfig::connect_timeout`]: a wrong address or password is
    /// reported as such, not retried. The connection then reconnects by itself like
    /// [`RedisConnection::open`]'s.
    pub async fn connect(target: &RedisTarget, config: &RedisConfig) -> Result<Self, StoreError> {
        install_crypto_provider();
        let connection = match target {
            RedisTarget::Server(url) => {
                // One direct attempt first: the manager would keep retrying a refusal.
                let direct = AsyncConnectionConfig::new().set_connection_timeout(Some(config.connect_timeout));
                let client = server_client(url)?;
                within(config.connect_timeout, async {
                    let mut direct = client.get_multiplexed_async_connection_with_config(&direct).await?;
                    ::redis::cmd("PING").query_async::<Value>(&mut direct).await
                })
                .await?;
                Self::open(target, config)?
            }
            RedisTarget::Cluster(urls) => {
                let client = cluster_client(urls, config)?;
                RedisConnection(Inner::Cluster(within(config.connect_timeout, client.get_async_connection()).await?))
            }
        };
        let mut ping = connection.clone();
        within(config.connect_timeout, ::redis::cmd("PING").query_async::<Value>(&mut ping)).await?;
        Ok(connection)
    }

    /// Whether this is a connection to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Inner::Cluster(_))
    }

    /// The primaries that hold the key space: the one server, or each primary of the cluster as
    /// its slot map says now.
    pub async fn primaries(&mut self) -> RedisResult<Vec<Primary>> {
        let Inner::Cluster(cluster) = &mut self.0 else { return Ok(vec![Primary(None)]) };
        let mut slots = Cmd::new();
        slots.arg("CLUSTER").arg("SLOTS");
        let ranges: Vec<Vec<Value>> = FromRedisValue::from_redis_value(
            cluster.route_command(slots, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)).await?,
        )?;
        let mut primaries = Vec::new();
        // Each range: start, end, then the primary as [host, port, id, ...], then its replicas.
        for range in ranges {
            let Some(primary) = range.into_iter().nth(2) else { continue };
            let (host, port): (String, u16) = match primary {
                Value::Array(node) if node.len() >= 2 => (
                    FromRedisValue::from_redis_value(node[0].clone())?,
                    FromRedisValue::from_redis_value(node[1].clone())?,
                ),
                _ => continue,
            };
            let primary = Primary(Some((host, port)));
            if !primaries.contains(&primary) {
                primaries.push(primary);
            }
        }
        Ok(primaries)
    }

    /// Runs `cmd` on `primary` (one of [`RedisConnection::primaries`]) whatever its keys.
    pub async fn query_at<T: FromRedisValue>(&mut self, primary: &Primary, cmd: &Cmd) -> RedisResult<T> {
        match (&mut self.0, &primary.0) {
            (Inner::Cluster(cluster), Some((host, port))) => {
                let to = SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port };
                let reply = cluster.route_command(cmd.clone(), RoutingInfo::SingleNode(to)).await?;
                Ok(FromRedisValue::from_redis_value(reply)?)
            }
            _ => cmd.query_async(self).await,
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Inner::Server(c) => c.req_packed_command(cmd),
            Inner::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Inner::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Inner::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::Server(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
        }
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_cluster() { "RedisConnection(cluster)" } else { "RedisConnection(server)" })
    }
}

/// A client for one server's `url`, or why the URL cannot be used.
fn server_client(url: &str) -> Result<::redis::Client, StoreError> {
    ::redis::Client::open(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))
}

/// A client for the cluster seeded by `urls`.
fn cluster_client(urls: &[String], config: &RedisConfig) -> Result<ClusterClient, StoreError> {
    ClusterClient::builder(urls.iter().map(String::as_str))
        .connection_timeout(config.connect_timeout)
        // The client's own bound (slot refreshes included); each call is bounded by `timeout` above it.
        .response_timeout(config.connect_timeout)
        .max_retry_wait(u64::try_from(config.reconnect_max_delay.as_millis()).unwrap_or(u64::MAX))
        .build()
        .map_err(|e| StoreError::InvalidUrl(e.to_string()))
}

/// Runs `call`, giving up after `limit`.
pub(crate) async fn within<T>(limit: Duration, call: impl Future<Output = RedisResult<T>>) -> Result<T, StoreError> {
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

    #[test]
    fn settings_name_a_server_or_a_cluster() {
        assert_eq!(RedisTarget::from_settings("", false), Ok(None));
        assert_eq!(RedisTarget::from_settings(" , ", true), Ok(None));
        assert_eq!(
            RedisTarget::from_settings("redis://a:6379", false),
            Ok(Some(RedisTarget::Server("redis://a:6379".into())))
        );
        assert_eq!(
            RedisTarget::from_settings("redis://a:6379, redis://b:6379", true),
            Ok(Some(RedisTarget::Cluster(vec!["redis://a:6379".into(), "redis://b:6379".into()])))
        );
        assert_eq!(
            RedisTarget::from_settings("redis://a:6379", true),
            Ok(Some(RedisTarget::Cluster(vec!["redis://a:6379".into()]))),
            "one seed is enough"
        );
        let err = RedisTarget::from_settings("redis://a,redis://b", false).unwrap_err();
        assert!(err.to_string().contains("2 URLs"), "{err}");
    }

    #[test]
    fn debug_hides_passwords() {
        let target = RedisTarget::Cluster(vec!["redis://:s3cret@a:1".into(), "redis://b:2".into()]);
        let shown = format!("{target:?} {:?}", RedisTarget::from("rediss://u:p@w@c:3/1"));
        assert!(!shown.contains("s3cret") && !shown.contains("u:p"), "{shown}");
        assert!(shown.contains("redis://a:1") && shown.contains("rediss://c:3/1"), "{shown}");
    }

    #[test]
    fn server_errors_are_script_errors() {
        let err = RedisError::from((ErrorKind::Server(::redis::ServerErrorKind::ReadOnly), "READONLY"));
        assert!(matches!(classify(err), StoreError::Script(_)));
        let err = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(classify(err), StoreError::Connection(_)));
    }

    #[tokio::test]
    async fn bad_urls_are_refused_when_opened() {
        let config = RedisConfig::default();
        let err = RedisConnection::open(&"http://localhost".into(), &config).unwrap_err();
        assert!(matches!(err, StoreError::InvalidUrl(_)), "{err:?}");
        let err = RedisConnection::open(&RedisTarget::Cluster(vec!["http://localhost".into()]), &config).unwrap_err();
        assert!(matches!(err, StoreError::InvalidUrl(_)), "{err:?}");
        let open = RedisConnection::open(&RedisTarget::Cluster(vec!["redis://127.0.0.1:1".into()]), &config);
        assert!(open.expect("a usable url, nothing listening yet").is_cluster());
    }
}
