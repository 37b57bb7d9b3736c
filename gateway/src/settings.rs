//! The node's settings: defaults < TOML file (`--config`) < `GATEWAY_*` environment variables <
//! command-line flags. Every setting has a default that works on one machine with nothing else
//! running.

use crate::client_address::{Addressing, RealIp, TrustedProxies};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Dict;
use figment::{Figment, Metadata, Profile};
use ipnet::IpNet;
use ratelimit::RedisTarget;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The environment variables' prefix.
const ENV_PREFIX: &str = "GATEWAY_";

/// Where config comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigSource {
    /// A declarative file (`config_file`), re-read on SIGHUP.
    File,
    /// Keys under `etcd_prefix` in etcd.
    Etcd,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable, coloured.
    Pretty,
}

/// Every setting of a node, one struct per concern. The keys stay flat (`proxy_listen`,
/// `etcd_prefix`) in TOML, env and flags alike: each concern is flattened. Durations are written
/// as milliseconds (`*_ms`) and held as `Duration`; lists are a TOML list, or comma-separated in
/// env and flags.
///
/// [`Settings::load`] extracts the concerns one by one rather than `Settings` whole: through
/// `#[serde(flatten)]`, figment's error for a bad value would lose which key and layer it came
/// from.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Settings {
    /// `node_id`, `worker_threads`, `log_format`, `log_level`.
    #[serde(flatten)]
    pub node: Node,
    #[serde(flatten)]
    pub(crate) serving: Serving,
    #[serde(flatten)]
    pub(crate) admin: Admin,
    #[serde(flatten)]
    pub(crate) config: ConfigOrigin,
    #[serde(flatten)]
    pub(crate) etcd: Etcd,
    #[serde(flatten)]
    pub(crate) redis: Redis,
    #[serde(flatten)]
    pub(crate) cache: Cache,
    #[serde(flatten)]
    pub(crate) cluster: Gossip,
    #[serde(flatten)]
    pub(crate) clients: Clients,
    #[serde(flatten)]
    pub(crate) upstream_keepalive: UpstreamKeepalive,
    #[serde(flatten)]
    pub(crate) request_logs: RequestLogs,
}

/// This node: its name, runtime and logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// This node's name in the cluster, logs, traces and metrics. Default: the host name.
    #[serde(deserialize_with = "lenient::string")]
    pub(crate) node_id: String,
    /// Runtime worker threads; 0: one per core. Default 0.
    pub worker_threads: usize,
    /// `json` or `pretty`; none: pretty on a terminal, JSON otherwise.
    pub(crate) log_format: Option<LogFormat>,
    /// `RUST_LOG` syntax. Default info. `RUST_LOG` itself, when set, wins.
    #[serde(deserialize_with = "lenient::string")]
    pub(crate) log_level: String,
}

impl Default for Node {
    fn default() -> Self {
        Node { node_id: default_node_id(), worker_threads: 0, log_format: None, log_level: "info".into() }
    }
}

/// The proxy listeners, and the limits every client connection is held to (the admin
/// listener's too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Serving {
    /// Where clients send traffic. Default 0.0.0.0:8000.
    pub(crate) proxy_listen: SocketAddr,
    /// Where clients send HTTPS traffic, with the certificates of the config; none: no TLS
    /// listener. Default none.
    pub(crate) proxy_listen_tls: Option<SocketAddr>,
    /// Make a self-signed certificate for this name at start, served on the TLS listener to
    /// every client the config has no certificate for (a demo or a first try: clients must be
    /// told to accept it). Default none.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub(crate) proxy_tls_self_signed: Option<String>,
    /// Longest wait for a client's request head; slower clients are dropped. Default 10000 ms.
    #[serde(rename = "header_read_timeout_ms", with = "millis")]
    pub(crate) header_read_timeout: Duration,
    /// Longest a client may take nothing of what is sent to it (a response, a tunnel's data)
    /// before its connection is closed; between two writes, not for a whole response.
    /// Default 60000 ms.
    #[serde(rename = "client_send_timeout_ms", with = "millis")]
    pub(crate) client_send_timeout: Duration,
    /// Forward HTTP/1 header names, both ways, with the letter case they arrived in, as nginx
    /// does; off, they go out in lower case (as HTTP/2 requires, and HTTP/1 allows). Costs a
    /// record of the names per message, about a quarter more work per request. Default false.
    pub(crate) preserve_header_case: bool,
    /// Largest request head (request line and headers), bytes; larger gets 431. Default 32768.
    pub(crate) max_header_bytes: usize,
    /// Client connections served at once, per listener; more wait in the kernel's backlog.
    /// Default 16384.
    pub(crate) max_connections: usize,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish. Default 30000 ms.
    #[serde(rename = "shutdown_grace_ms", with = "millis")]
    pub(crate) shutdown_grace: Duration,
    /// On SIGTERM/SIGINT, how long the node goes on serving with `/status/ready` answering 503,
    /// before it stops accepting: time for a load balancer's readiness checks to take it out.
    /// Default 0 ms.
    #[serde(rename = "shutdown_drain_ms", with = "millis")]
    pub(crate) shutdown_drain: Duration,
}

impl Default for Serving {
    fn default() -> Self {
        Serving {
            proxy_listen: ([0, 0, 0, 0], 8000).into(),
            proxy_listen_tls: None,
            proxy_tls_self_signed: None,
            header_read_timeout: Duration::from_secs(10),
            client_send_timeout: Duration::from_secs(60),
            preserve_header_case: false,
            max_header_bytes: 32 * 1024,
            max_connections: 16_384,
            shutdown_grace: Duration::from_secs(30),
            shutdown_drain: Duration::ZERO,
        }
    }
}

/// The admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Admin {
    /// Admin API, `/metrics`, `/status`. Default 127.0.0.1:8001.
    #[serde(rename = "admin_listen")]
    pub(crate) listen: SocketAddr,
    /// When set, admin requests must carry `Authorization: Bearer <token>`.
    #[serde(rename = "admin_token", deserialize_with = "lenient::opt_string")]
    pub(crate) token: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin { listen: ([127, 0, 0, 1], 8001).into(), token: None }
    }
}

/// Where the config comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ConfigOrigin {
    /// `file` or `etcd`. Default file.
    #[serde(rename = "config_source")]
    pub(crate) source: ConfigSource,
    /// The declarative file for `config_source = file`; none: start with an empty config.
    #[serde(rename = "config_file")]
    pub(crate) file: Option<PathBuf>,
}

impl Default for ConfigOrigin {
    fn default() -> Self {
        ConfigOrigin { source: ConfigSource::File, file: None }
    }
}

/// etcd: where it is, and how to reach it when it is secured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Etcd {
    /// etcd endpoints; in env and flags comma-separated. Default http://127.0.0.1:2379.
    #[serde(rename = "etcd_endpoints", deserialize_with = "lenient::list")]
    pub(crate) endpoints: Vec<String>,
    /// Every config key lives under it. Default /gateway.
    #[serde(rename = "etcd_prefix", deserialize_with = "lenient::string")]
    pub(crate) prefix: String,
    /// A quiet etcd watch is asked for a progress notification this often, and counts as dead
    /// when none comes within another such interval. Default 5000 ms.
    #[serde(rename = "etcd_liveness_interval_ms", with = "millis")]
    pub(crate) liveness_interval: Duration,
    /// CA certificates (PEM) etcd's certificate must lead to, for `https://` endpoints; none:
    /// the system's roots.
    #[serde(rename = "etcd_ca_file")]
    pub(crate) ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM), for etcd's `--client-cert-auth`; with `etcd_key_file`.
    #[serde(rename = "etcd_cert_file")]
    pub(crate) cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(rename = "etcd_key_file")]
    pub(crate) key_file: Option<PathBuf>,
    /// A user of etcd's auth; with `etcd_password`.
    #[serde(rename = "etcd_username", deserialize_with = "lenient::opt_string")]
    pub(crate) username: Option<String>,
    /// The etcd user's password.
    #[serde(rename = "etcd_password", deserialize_with = "lenient::opt_string")]
    pub(crate) password: Option<String>,
}

impl Default for Etcd {
    fn default() -> Self {
        Etcd {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/gateway".into(),
            liveness_interval: Duration::from_secs(5),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password: None,
        }
    }
}

/// The Redis that rate limits and the cache share with the other nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Redis {
    /// `redis://…`; none: rate limits and cache are node-local. With `redis_cluster`: one or
    /// more nodes of a Redis Cluster, comma-separated.
    #[serde(rename = "redis_url", deserialize_with = "lenient::opt_string")]
    pub(crate) url: Option<String>,
    /// `redis_url` names a Redis Cluster (its seed nodes), not one server. Default false.
    #[serde(rename = "redis_cluster")]
    pub(crate) cluster: bool,
    /// Longest wait for one Redis call (a rate-limit decision, a cache read or write); past it
    /// the node falls back (limits) or bypasses (cache). Default 50 ms.
    #[serde(rename = "redis_timeout_ms", with = "millis")]
    pub(crate) timeout: Duration,
    /// Longest wait for one connection attempt to Redis; attempts repeat in the background
    /// while Redis is down. Default 1000 ms.
    #[serde(rename = "redis_connect_timeout_ms", with = "millis")]
    pub(crate) connect_timeout: Duration,
}

impl Default for Redis {
    fn default() -> Self {
        Redis { url: None, cluster: false, timeout: Duration::from_millis(50), connect_timeout: Duration::from_secs(1) }
    }
}

impl Redis {
    /// The Redis that `redis_url` and `redis_cluster` name; none without `redis_url`.
    pub(crate) fn target(&self) -> Result<Option<RedisTarget>, Problem> {
        match RedisTarget::from_settings(self.url.as_deref().unwrap_or_default(), self.cluster) {
            Ok(None) if self.cluster => Err(Problem::new("redis_cluster", "true needs redis_url")),
            Ok(target) => Ok(target),
            Err(e) => Err(Problem::new("redis_url", format!("{e} (redis_cluster = true)"))),
        }
    }
}

/// The proxy cache's memory on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cache {
    /// Bytes the proxy-cache's memory strategy may hold on this node. Default 64 MiB.
    #[serde(rename = "proxy_cache_memory_bytes")]
    pub(crate) memory_bytes: usize,
    /// Bytes the memory level in front of the Redis strategy may hold on this node (copies of
    /// Redis entries, each served for at most 5 s before Redis is read again); 0: no level.
    /// Default 16 MiB.
    #[serde(rename = "proxy_cache_memory_level_bytes")]
    pub(crate) level_bytes: usize,
}

impl Default for Cache {
    fn default() -> Self {
        Cache { memory_bytes: 64 << 20, level_bytes: 16 << 20 }
    }
}

/// Gossip with the other nodes of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Gossip {
    /// UDP address for gossip. Default 0.0.0.0:7946.
    #[serde(rename = "cluster_bind")]
    pub(crate) bind: SocketAddr,
    /// The address other nodes reach this one at; none: derived from `cluster_bind`.
    #[serde(rename = "cluster_advertise", deserialize_with = "lenient::opt_string")]
    pub(crate) advertise: Option<String>,
    /// Other nodes, `host:port`; in env and flags comma-separated. None: a cluster of one.
    #[serde(rename = "cluster_seeds", deserialize_with = "lenient::list")]
    pub(crate) seeds: Vec<String>,
    /// Gossip secrets (`cluster_key`; in env and flags comma-separated): every packet is sealed
    /// with the first, and packets sealed with any of them are accepted (rotated at run time in
    /// three rounds: `PUT /cluster/keys`). None: gossip is not authenticated.
    #[serde(rename = "cluster_key", deserialize_with = "lenient::list")]
    pub(crate) keys: Vec<String>,
    /// SWIM probe period; none: the cluster crate's LAN default.
    #[serde(rename = "cluster_probe_period_ms", with = "opt_millis")]
    pub(crate) probe_period: Option<Duration>,
    /// How long a suspected member has to refute before it is declared down; none: the
    /// cluster crate's LAN default.
    #[serde(rename = "cluster_suspect_timeout_ms", with = "opt_millis")]
    pub(crate) suspect_timeout: Option<Duration>,
    /// How often this node compares the durable cluster state (operators' health sets) with one
    /// random member's; it also does when a member comes up. Default 2000 ms.
    #[serde(rename = "cluster_push_pull_interval_ms", with = "millis")]
    pub(crate) push_pull_interval: Duration,
}

impl Default for Gossip {
    fn default() -> Self {
        Gossip {
            bind: ([0, 0, 0, 0], 7946).into(),
            advertise: None,
            seeds: Vec::new(),
            keys: Vec::new(),
            probe_period: None,
            suspect_timeout: None,
            push_pull_interval: Duration::from_secs(2),
        }
    }
}

/// Who the proxy listeners' clients are, behind trusted proxies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Clients {
    /// Proxies whose word about the client is taken (`real_ip_header`): CIDRs or single
    /// addresses, v4 and v6; in env and flags comma-separated. Default none.
    #[serde(serialize_with = "nets::serialize", deserialize_with = "nets::deserialize")]
    pub(crate) trusted_ips: Vec<IpNet>,
    /// The header in which a trusted proxy names the client; `proxy_protocol`: none, the PROXY
    /// header's source is the client. Default X-Forwarded-For.
    #[serde(deserialize_with = "lenient::string")]
    pub(crate) real_ip_header: String,
    /// Walk `real_ip_header` from the right past trusted addresses (nginx's
    /// `real_ip_recursive`); off, its rightmost address is the client. Default true.
    pub(crate) real_ip_recursive: bool,
    /// The proxy listener expects a PROXY protocol header (v1 or v2) before anything else on
    /// every connection; its source address stands for the peer's. Default false.
    pub(crate) proxy_protocol: bool,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            trusted_ips: Vec::new(),
            real_ip_header: "X-Forwarded-For".into(),
            real_ip_recursive: true,
            proxy_protocol: false,
        }
    }
}

impl Clients {
    /// Where the proxy listener finds its clients' addresses.
    pub(crate) fn addressing(&self) -> Result<Addressing, Problem> {
        let real_ip = RealIp::new(&self.trusted_ips, &self.real_ip_header, self.real_ip_recursive)
            .map_err(|e| Problem::new("real_ip_header", e))?;
        Ok(Addressing::new(real_ip, self.proxy_protocol))
    }
}

/// Idle upstream connections kept for reuse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct UpstreamKeepalive {
    /// Idle upstream connections kept per target; 0: a new connection for every request.
    /// Default 128.
    #[serde(rename = "upstream_keepalive_max")]
    pub(crate) max: usize,
    /// How long an idle upstream connection is kept. Default 60000 ms.
    #[serde(rename = "upstream_keepalive_idle_ms", with = "millis")]
    pub(crate) idle: Duration,
}

impl Default for UpstreamKeepalive {
    fn default() -> Self {
        UpstreamKeepalive { max: 128, idle: Duration::from_secs(60) }
    }
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLog {
    /// No access log.
    #[default]
    Off,
    /// One JSON line per request on standard output.
    Stdout,
    /// One JSON line per request appended to this file, reopened on SIGUSR1.
    File(PathBuf),
}

impl Serialize for AccessLog {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AccessLog::Off => s.serialize_str("off"),
            AccessLog::Stdout => s.serialize_str("stdout"),
            AccessLog::File(path) => path.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AccessLog {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = lenient::string(d)?;
        Ok(match text.trim() {
            "" => return Err(serde::de::Error::custom("may not be empty: off, stdout or a file path")),
            "off" => AccessLog::Off,
            "stdout" => AccessLog::Stdout,
            path => AccessLog::File(PathBuf::from(path)),
        })
    }
}

/// The log of every request this node serves (the `http-log` plugin's records, written here).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct RequestLogs {
    /// `off`, `stdout`, or a file path: one JSON line per request, written by a task of its
    /// own (a line that finds its queue full is dropped and counted, never waited for). A file
    /// is opened for appending, and reopened on SIGUSR1 (log rotation). Default off.
    pub(crate) access_log: AccessLog,
}

/// Strings written without quotes: environment values are parsed as TOML-like values, so
/// `GATEWAY_ADMIN_TOKEN=123456` arrives as a number and `GATEWAY_NODE_ID=true` as a boolean.
mod lenient {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Uint(u64),
        Float(f64),
        Bool(bool),
    }

    impl From<Scalar> for String {
        fn from(value: Scalar) -> String {
            match value {
                Scalar::Text(s) => s,
                Scalar::Int(n) => n.to_string(),
                Scalar::Uint(n) => n.to_string(),
                Scalar::Float(n) => n.to_string(),
                Scalar::Bool(b) => b.to_string(),
            }
        }
    }

    /// A string, or a number or boolean taken as its text.
    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Scalar::deserialize(d).map(String::from)
    }

    /// An optional string, likewise.
    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Option::<Scalar>::deserialize(d).map(|v| v.map(String::from))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Items(Vec<Scalar>),
        Joined(Scalar),
    }

    /// A list of strings: a list (TOML), or one string of comma-separated items (env, flags).
    pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let items = match List::deserialize(d)? {
            List::Items(items) => items.into_iter().map(String::from).collect(),
            List::Joined(joined) => vec![String::from(joined)],
        };
        let split = items.iter().flat_map(|item| item.split(',')).map(str::trim);
        Ok(split.filter(|item| !item.is_empty()).map(str::to_owned).collect())
    }
}

/// A `Duration` written as whole milliseconds.
mod millis {
    use super::*;

    pub fn serialize<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// An optional `Duration` written as whole milliseconds.
mod opt_millis {
    use super::*;

    pub fn serialize<S: Serializer>(duration: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => super::millis::serialize(duration, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|ms| ms.map(Duration::from_millis))
    }
}

/// `trusted_ips`: a list of CIDRs and addresses, parsed by [`TrustedProxies::parse`].
mod nets {
    use super::*;

    pub fn serialize<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(nets.iter().map(IpNet::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        let entries = lenient::list(d)?;
        let trusted = TrustedProxies::parse(entries.iter().map(String::as_str)).map_err(serde::de::Error::custom)?;
        Ok(trusted.into())
    }
}

fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "gateway".into())
}

/// One thing wrong with the settings, and the setting it is wrong in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub(crate) struct Problem {
    setting: String,
    message: String,
}

impl Problem {
    fn new(setting: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { setting: setting.into(), message: message.into() }
    }

    /// One of figment's errors: the key it names, its message, and the layer the value came from.
    fn from_figment(error: figment::Error) -> Problem {
        let setting = if error.path.is_empty() { "config".to_owned() } else { error.path.join(".") };
        let origin = origin(error.metadata.as_ref(), &error.path);
        Problem::new(setting, format!("{}{origin}", error.kind.to_string().trim_end()))
    }
}

/// Which layer a value came from, as ` (in …)`, for a message about `key`.
fn origin(metadata: Option<&Metadata>, key: &[String]) -> String {
    use figment::Source;
    match metadata.map(|m| (m, &m.source)) {
        Some((_, Some(Source::File(path)))) => format!(" (in {})", path.display()),
        Some((_, Some(Source::Code(_)))) => " (in the command line)".to_owned(),
        // The environment layer is the only one without a source.
        Some((metadata, None)) if !key.is_empty() => {
            format!(" (in {ENV_PREFIX}{})", metadata.interpolate(&Profile::Default, key))
        }
        Some((metadata, _)) => format!(" (in {})", metadata.name),
        None => String::new(),
    }
}

/// Why settings could not be loaded: every problem found, each naming its setting.
#[derive(Debug, thiserror::Error)]
pub struct SettingsError {
    problems: Vec<Problem>,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid settings: {one}"),
            all => {
                write!(f, "invalid settings ({} problems):", all.len())?;
                all.iter().try_for_each(|problem| write!(f, "\n  {problem}"))
            }
        }
    }
}

impl From<Problem> for SettingsError {
    fn from(problem: Problem) -> SettingsError {
        SettingsError { problems: vec![problem] }
    }
}

impl Settings {
    /// Loads the layers in order. `flags` holds only the settings given on the command line.
    pub fn load(config: Option<&std::path::Path>, flags: impl Serialize) -> Result<Settings, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = config {
            if !path.exists() {
                return Err(Problem::new("config", format!("{} does not exist", path.display())).into());
            }
            figment = figment.merge(Toml::file(path));
        }
        // Only the variables named after a setting: others that share the prefix (such as
        // GATEWAY_IMAGE in docker-compose) are not ours.
        let known = Settings::keys();
        let named = known.clone();
        figment = figment
            .merge(
                Env::prefixed(ENV_PREFIX).filter(move |key| named.iter().any(|k| key.as_str().eq_ignore_ascii_case(k))),
            )
            .merge(Serialized::globals(flags));
        Settings::extract(&figment, &known)
    }

    /// Every setting's key.
    fn keys() -> Vec<String> {
        match serde_json::to_value(Settings::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Each concern from the merged layers, then [`Settings::validate`]; every problem found
    /// is reported. A concern whose extraction failed is left at its defaults for the checks
    /// (which hold for the defaults).
    fn extract(figment: &Figment, known: &[String]) -> Result<Settings, SettingsError> {
        // A layer that cannot be read (a file that is not TOML) leaves nothing to check.
        let given: Dict = figment.extract().map_err(|e| SettingsError::from(Problem::from_figment(e)))?;
        let mut problems: Vec<Problem> = given
            .keys()
            .filter(|key| !known.contains(key))
            .map(|key| {
                let origin = origin(figment.find_metadata(key), std::slice::from_ref(key));
                Problem::new(key, format!("not a setting{origin}"))
            })
            .collect();
        let settings = Settings {
            node: concern(figment, &mut problems),
            serving: concern(figment, &mut problems),
            admin: concern(figment, &mut problems),
            config: concern(figment, &mut problems),
            etcd: concern(figment, &mut problems),
            redis: concern(figment, &mut problems),
            cache: concern(figment, &mut problems),
            cluster: concern(figment, &mut problems),
            clients: concern(figment, &mut problems),
            upstream_keepalive: concern(figment, &mut problems),
            request_logs: concern(figment, &mut problems),
        };
        settings.validate(&mut problems);
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(SettingsError { problems })
        }
    }

    /// The checks beyond each value's type: ranges, settings that go together, the Redis named
    /// and the client addressing.
    fn validate(&self, problems: &mut Vec<Problem>) {
        let mut check = |ok: bool, setting: &str, message: &str| {
            if !ok {
                problems.push(Problem::new(setting, message));
            }
        };
        check(!self.node.node_id.is_empty(), "node_id", "may not be empty");
        let (etcd, serving) = (&self.etcd, &self.serving);
        let needs_endpoints = self.config.source == ConfigSource::Etcd;
        check(!needs_endpoints || !etcd.endpoints.is_empty(), "etcd_endpoints", "needed with config_source = etcd");
        check(etcd.liveness_interval >= Duration::from_millis(50), "etcd_liveness_interval_ms", "must be at least 50");
        for (a, a_set, b, b_set) in [
            ("etcd_cert_file", etcd.cert_file.is_some(), "etcd_key_file", etcd.key_file.is_some()),
            ("etcd_username", etcd.username.is_some(), "etcd_password", etcd.password.is_some()),
        ] {
            let missing = if a_set { b } else { a };
            check(a_set == b_set, missing, &format!("missing ({a} and {b} go together)"));
        }
        check(serving.max_header_bytes >= 8192, "max_header_bytes", "must be at least 8192");
        check(serving.max_connections >= 1, "max_connections", "must be at least 1");
        check(!serving.header_read_timeout.is_zero(), "header_read_timeout_ms", "must be at least 1");
        check(!serving.client_send_timeout.is_zero(), "client_send_timeout_ms", "must be at least 1");
        check(!self.redis.timeout.is_zero(), "redis_timeout_ms", "must be at least 1");
        check(!self.redis.connect_timeout.is_zero(), "redis_connect_timeout_ms", "must be at least 1");
        let push_pull = self.cluster.push_pull_interval;
        check(push_pull >= Duration::from_millis(10), "cluster_push_pull_interval_ms", "must be at least 10");
        problems.extend(self.redis.target().err());
        problems.extend(self.clients.addressing().err());
    }
}

/// One concern's settings from the merged layers; its defaults, and the problems recorded, when
/// a value is bad.
fn concern<T: DeserializeOwned + Default>(figment: &Figment, problems: &mut Vec<Problem>) -> T {
    figment.extract().unwrap_or_else(|error| {
        problems.extend(error.into_iter().map(Problem::from_figment));
        T::default()
    })
}

#[cfg(test)]
// figment's Jail API returns its large error type from the closures; that is its shape, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::{CommandFactory, Parser};
    use serde_json::json;
    use std::collections::BTreeMap;

    fn no_flags() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|net| net.parse().unwrap()).collect()
    }

    /// The flags of `gateway run ARGS…`, as the command line gives them.
    fn flags(args: &[&str]) -> crate::cli::Flags {
        match Cli::try_parse_from(["gateway", "run"].iter().chain(args)).unwrap().command {
            Command::Run(run) => run.flags,
            _ => unreachable!(),
        }
    }

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "gw.toml",
                "proxy_listen = \"127.0.0.1:9000\"\nadmin_listen = \"127.0.0.1:9001\"\nnode_id = \"toml\"",
            )?;
            jail.set_env("GATEWAY_ADMIN_LISTEN", "127.0.0.1:9101");
            jail.set_env("GATEWAY_NODE_ID", "env");
            jail.set_env("GATEWAY_IMAGE", "not-a-setting");
            let flags = BTreeMap::from([("node_id", "flag")]);
            let s = Settings::load(Some(std::path::Path::new("gw.toml")), flags).map_err(|e| e.to_string())?;
            assert_eq!(s.serving.proxy_listen.port(), 9000); // TOML over default
            assert_eq!(s.admin.listen.port(), 9101); // env over TOML
            assert_eq!(s.node.node_id, "flag"); // flag over env
            assert_eq!(s.node.log_level, "info"); // default
            Ok(())
        });
    }

    #[test]
    fn durations_and_lists_are_read_from_every_layer() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "gw.toml",
                "header_read_timeout_ms = 1500\ncluster_seeds = [\"a:1\", \"b:2\"]\n\
                 etcd_endpoints = [\"http://x:1\"]\nupstream_keepalive_idle_ms = 0",
            )?;
            let toml = Some(std::path::Path::new("gw.toml"));
            let s = Settings::load(toml, no_flags()).map_err(|e| e.to_string())?;
            assert_eq!(s.serving.header_read_timeout, Duration::from_millis(1500));
            assert_eq!(s.cluster.seeds, ["a:1", "b:2"]);
            assert_eq!(s.etcd.endpoints, ["http://x:1"]);
            assert_eq!(s.upstream_keepalive.idle, Duration::ZERO);
            assert_eq!((s.cluster.probe_period, s.cluster.suspect_timeout), (None, None));
            assert!(s.cluster.keys.is_empty());
            assert_eq!(s.serving.shutdown_grace, Duration::from_secs(30)); // default

            // The environment: numbers, and lists comma-separated, into the nested structs.
            jail.set_env("GATEWAY_CLIENT_SEND_TIMEOUT_MS", "2500");
            jail.set_env("GATEWAY_CLUSTER_PROBE_PERIOD_MS", "200");
            jail.set_env("GATEWAY_MAX_HEADER_BYTES", "65536");
            jail.set_env("GATEWAY_CLUSTER_KEY", "new-key, old-key");
            jail.set_env("GATEWAY_ETCD_ENDPOINTS", "http://a:1,http://b:2");
            let s = Settings::load(toml, no_flags()).map_err(|e| e.to_string())?;
            assert_eq!(s.serving.client_send_timeout, Duration::from_millis(2500));
            assert_eq!(s.cluster.probe_period, Some(Duration::from_millis(200)));
            assert_eq!(s.serving.max_header_bytes, 65536);
            assert_eq!(s.cluster.keys, ["new-key", "old-key"]);
            assert_eq!(s.etcd.endpoints, ["http://a:1", "http://b:2"]);
            assert_eq!(s.serving.header_read_timeout, Duration::from_millis(1500)); // TOML still

            // The flags, as clap gives them.
            let given = flags(&[
                "--shutdown-grace-ms",
                "7",
                "--cluster-suspect-timeout-ms",
                "900",
                "--cluster-seeds",
                "c:3, d:4",
                "--redis-timeout-ms",
                "80",
            ]);
            let s = Settings::load(toml, &given).map_err(|e| e.to_string())?;
            assert_eq!(s.serving.shutdown_grace, Duration::from_millis(7));
            assert_eq!(s.cluster.suspect_timeout, Some(Duration::from_millis(900)));
            assert_eq!(s.cluster.seeds, ["c:3", "d:4"]);
            assert_eq!(s.redis.timeout, Duration::from_millis(80));
            assert_eq!(s.cluster.probe_period, Some(Duration::from_millis(200))); // env still
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_PROXY_LISTEN", "not an address");
            jail.set_env("GATEWAY_REDIS_TIMEOUT_MS", "-1");
            let e = Settings::load(None, no_flags()).unwrap_err().to_string();
            assert!(e.contains("proxy_listen: invalid socket address syntax (in GATEWAY_PROXY_LISTEN)"), "{e}");
            assert!(e.contains("redis_timeout_ms: ") && e.contains("(in GATEWAY_REDIS_TIMEOUT_MS)"), "{e}");
            jail.create_file("gw.toml", "cluster_probe_period_ms = \"soon\"")?;
            let e = Settings::load(Some(std::path::Path::new("gw.toml")), no_flags()).unwrap_err().to_string();
            assert!(e.contains("cluster_probe_period_ms: ") && e.contains("gw.toml)"), "{e}");
            let e = Settings::load(None, json!({ "max_connections": "many" })).unwrap_err().to_string();
            assert!(e.contains("max_connections: ") && e.contains("(in the command line)"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn every_problem_is_reported_with_its_setting() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("gw.toml", "proxy_lisen = \"127.0.0.1:9000\"")?;
            jail.set_env("GATEWAY_ADMIN_LISTEN", "nowhere");
            let flags = json!({
                "max_header_bytes": 100,
                "header_read_timeout_ms": 0,
                "etcd_username": "root",
                "trusted_ips": "10.0.0.0/8,nope",
            });
            let e = Settings::load(Some(std::path::Path::new("gw.toml")), flags).unwrap_err();
            let named: Vec<&str> = e.problems.iter().map(|p| p.setting.as_str()).collect();
            assert_eq!(
                named,
                [
                    "proxy_lisen",
                    "admin_listen",
                    "trusted_ips",
                    "etcd_password",
                    "max_header_bytes",
                    "header_read_timeout_ms"
                ],
                "{e}"
            );
            let text = e.to_string();
            for line in [
                "invalid settings (6 problems):",
                "\n  proxy_lisen: not a setting (in ",
                "\n  admin_listen: invalid socket address syntax (in GATEWAY_ADMIN_LISTEN)",
                "\n  trusted_ips: `nope` is not an IP address or a CIDR (in the command line)",
                "\n  etcd_password: missing (etcd_username and etcd_password go together)",
                "\n  max_header_bytes: must be at least 8192",
                "\n  header_read_timeout_ms: must be at least 1",
            ] {
                assert!(text.contains(line), "{line:?} in {text}");
            }
            Ok(())
        });
    }

    #[test]
    fn zero_is_refused_where_it_means_nothing() {
        let flags = json!({
            "redis_timeout_ms": 0,
            "redis_connect_timeout_ms": 0,
            "client_send_timeout_ms": 0,
            "max_connections": 0,
            "etcd_liveness_interval_ms": 49,
            "config_source": "etcd",
            "etcd_endpoints": " , ",
        });
        let e = Settings::load(None, flags).unwrap_err();
        let named: Vec<&str> = e.problems.iter().map(|p| p.setting.as_str()).collect();
        let expected = [
            "etcd_endpoints",
            "etcd_liveness_interval_ms",
            "max_connections",
            "client_send_timeout_ms",
            "redis_timeout_ms",
            "redis_connect_timeout_ms",
        ];
        assert_eq!(named, expected, "{e}");
        // Zero is meaningful for these.
        let flags = json!({ "shutdown_grace_ms": 0, "upstream_keepalive_max": 0, "worker_threads": 0 });
        Settings::load(None, flags).unwrap();
    }

    #[test]
    fn the_access_log_is_off_stdout_or_a_file() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(
                Settings::load(None, no_flags()).map_err(|e| e.to_string())?.request_logs.access_log,
                AccessLog::Off
            );
            jail.set_env("GATEWAY_ACCESS_LOG", "stdout");
            let s = Settings::load(None, no_flags()).map_err(|e| e.to_string())?;
            assert_eq!(s.request_logs.access_log, AccessLog::Stdout);
            let s = Settings::load(None, flags(&["--access-log", "/var/log/gw.log"])).map_err(|e| e.to_string())?;
            assert_eq!(s.request_logs.access_log, AccessLog::File("/var/log/gw.log".into()));
            let e = Settings::load(None, json!({ "access_log": " " })).unwrap_err().to_string();
            assert!(e.contains("access_log: may not be empty: off, stdout or a file path"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn redis_is_one_server_or_a_cluster_named_by_its_seeds() {
        let load = |flags: serde_json::Value| Settings::load(None, flags).and_then(|s| Ok(s.redis.target()?));
        assert_eq!(load(json!({})).unwrap(), None);
        let one = load(json!({ "redis_url": "redis://r:6379" })).unwrap();
        assert_eq!(one, Some(RedisTarget::Server("redis://r:6379".into())));
        let seeds = load(json!({ "redis_url": "redis://a:7000, redis://b:7000", "redis_cluster": true })).unwrap();
        assert_eq!(seeds, Some(RedisTarget::Cluster(vec!["redis://a:7000".into(), "redis://b:7000".into()])));
        let e = load(json!({ "redis_url": "redis://a:7000,redis://b:7000" })).unwrap_err().to_string();
        assert!(e.contains("redis_url: ") && e.contains("redis_cluster = true"), "{e}");
        let e = load(json!({ "redis_cluster": true })).unwrap_err().to_string();
        assert!(e.contains("redis_cluster: true needs redis_url"), "{e}");
    }

    #[test]
    fn numbers_in_the_environment_are_fine_for_text_settings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_ADMIN_TOKEN", "123456");
            jail.set_env("GATEWAY_NODE_ID", "7");
            jail.set_env("GATEWAY_CLUSTER_KEY", "42");
            let s = Settings::load(None, no_flags()).map_err(|e| e.to_string())?;
            assert_eq!(s.admin.token.as_deref(), Some("123456"));
            assert_eq!(s.node.node_id, "7");
            assert_eq!(s.cluster.keys, ["42"]);
            Ok(())
        });
    }

    #[test]
    fn trusted_ips_are_a_list_in_toml_and_comma_separated_in_env_and_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("gw.toml", "trusted_ips = [\"10.0.0.0/8\", \"::1\"]\nreal_ip_recursive = false")?;
            let toml = Some(std::path::Path::new("gw.toml"));
            let s = Settings::load(toml, no_flags()).map_err(|e| e.to_string())?;
            assert_eq!(s.clients.trusted_ips, nets(&["10.0.0.0/8", "::1/128"]));
            assert!(!s.clients.real_ip_recursive && !s.clients.proxy_protocol);
            assert_eq!(s.clients.real_ip_header, "X-Forwarded-For");
            jail.set_env("GATEWAY_TRUSTED_IPS", "127.0.0.1/32, 2001:db8::/32");
            jail.set_env("GATEWAY_PROXY_PROTOCOL", "true");
            let s = Settings::load(toml, no_flags()).map_err(|e| e.to_string())?;
            assert_eq!(s.clients.trusted_ips, nets(&["127.0.0.1/32", "2001:db8::/32"]));
            assert!(s.clients.proxy_protocol);
            let s =
                Settings::load(toml, flags(&["--trusted-ips", "192.0.2.1,192.0.2.2"])).map_err(|e| e.to_string())?;
            assert_eq!(s.clients.trusted_ips, nets(&["192.0.2.1/32", "192.0.2.2/32"]));
            let e = Settings::load(toml, json!({ "trusted_ips": "192.0.2.1,192.0.2.300" })).unwrap_err().to_string();
            assert!(e.contains("trusted_ips: `192.0.2.300` is not an IP address or a CIDR"), "{e}");
            let e = Settings::load(None, json!({ "real_ip_header": "a b" })).unwrap_err().to_string();
            assert!(e.contains("real_ip_header: `a b` is not a header name"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn unknown_toml_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("gw.toml", "proxy_lisen = \"127.0.0.1:9000\"")?;
            let e = Settings::load(Some(std::path::Path::new("gw.toml")), no_flags()).unwrap_err();
            assert!(e.to_string().contains("proxy_lisen: not a setting (in "), "{e}");
            assert!(e.to_string().contains("gw.toml)"), "{e}");
            jail.create_file("bad.toml", "proxy_listen = ")?;
            let e = Settings::load(Some(std::path::Path::new("bad.toml")), no_flags()).unwrap_err();
            assert!(e.to_string().starts_with("invalid settings: config: "), "{e}");
            Ok(())
        });
    }

    /// The keys are those of the flat struct the settings were before they were grouped: the
    /// TOML keys, `GATEWAY_*` variables and flags users have.
    #[test]
    fn the_keys_stay_flat() {
        let mut keys = Settings::keys();
        keys.sort();
        let mut flat = [
            "node_id",
            "proxy_listen",
            "proxy_listen_tls",
            "proxy_tls_self_signed",
            "admin_listen",
            "admin_token",
            "config_source",
            "config_file",
            "etcd_endpoints",
            "etcd_prefix",
            "etcd_liveness_interval_ms",
            "etcd_ca_file",
            "etcd_cert_file",
            "etcd_key_file",
            "etcd_username",
            "etcd_password",
            "redis_url",
            "redis_cluster",
            "cluster_bind",
            "cluster_advertise",
            "cluster_seeds",
            "cluster_key",
            "cluster_probe_period_ms",
            "cluster_suspect_timeout_ms",
            "cluster_push_pull_interval_ms",
            "shutdown_drain_ms",
            "log_format",
            "log_level",
            "worker_threads",
            "header_read_timeout_ms",
            "client_send_timeout_ms",
            "preserve_header_case",
            "max_header_bytes",
            "trusted_ips",
            "real_ip_header",
            "real_ip_recursive",
            "proxy_protocol",
            "max_connections",
            "redis_timeout_ms",
            "redis_connect_timeout_ms",
            "proxy_cache_memory_bytes",
            "proxy_cache_memory_level_bytes",
            "upstream_keepalive_max",
            "upstream_keepalive_idle_ms",
            "shutdown_grace_ms",
            "access_log",
        ];
        flat.sort_unstable();
        assert_eq!(keys, flat);
        // Every flag of `gateway run` but `--config` is one of them.
        let cli = Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        let flags: Vec<String> = run
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .filter(|long| !["config", "help"].contains(long))
            .map(|long| long.replace('-', "_"))
            .collect();
        assert_eq!(flags.len(), flat.len(), "{flags:?}");
        for flag in flags {
            assert!(keys.contains(&flag), "--{flag} names no setting");
        }
    }
}
