//! The node's settings: defaults < TOML file (`--config`) < `GATEWAY_*` environment variables <
//! command-line flags. Every setting has a default that works on one machine with nothing else
//! running.

use crate::client_address::{Addressing, RealIp};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ratelimit::RedisTarget;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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

/// Every setting of a node. Durations are written as milliseconds (`*_ms`) or seconds (`*_secs`)
/// in TOML, env and flags, and held as `Duration` here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// This node's name in the cluster, logs, traces and metrics. Default: the host name.
    #[serde(deserialize_with = "lenient::string")]
    pub node_id: String,
    /// Where clients send traffic. Default 0.0.0.0:8000.
    pub proxy_listen: SocketAddr,
    /// Where clients send HTTPS traffic, with the certificates of the config; none: no TLS
    /// listener. Default none.
    pub proxy_listen_tls: Option<SocketAddr>,
    /// Make a self-signed certificate for this name at start, served on the TLS listener to
    /// every client the config has no certificate for (a demo or a first try: clients must be
    /// told to accept it). Default none.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub proxy_tls_self_signed: Option<String>,
    /// Admin API, `/metrics`, `/status`. Default 127.0.0.1:8001.
    pub admin_listen: SocketAddr,
    /// When set, admin requests must carry `Authorization: Bearer <token>`.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub admin_token: Option<String>,
    /// `file` or `etcd`. Default file.
    pub config_source: ConfigSource,
    /// The declarative file for `config_source = file`; none: start with an empty config.
    pub config_file: Option<PathBuf>,
    /// etcd endpoints, comma-separated. Default http://127.0.0.1:2379.
    #[serde(deserialize_with = "lenient::string")]
    pub etcd_endpoints: String,
    /// Every config key lives under it. Default /gateway.
    #[serde(deserialize_with = "lenient::string")]
    pub etcd_prefix: String,
    /// A quiet etcd watch is asked for a progress notification this often, and counts as dead
    /// when none comes within another such interval, ms. Default 5000.
    pub etcd_liveness_interval_ms: u64,
    /// CA certificates (PEM) etcd's certificate must lead to, for `https://` endpoints; none:
    /// the system's roots.
    pub etcd_ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM), for etcd's `--client-cert-auth`; with `etcd_key_file`.
    pub etcd_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub etcd_key_file: Option<PathBuf>,
    /// A user of etcd's auth; with `etcd_password`.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub etcd_username: Option<String>,
    /// The etcd user's password.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub etcd_password: Option<String>,
    /// `redis://…`; none: rate limits and cache are node-local. With `redis_cluster`: one or
    /// more nodes of a Redis Cluster, comma-separated.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub redis_url: Option<String>,
    /// `redis_url` names a Redis Cluster (its seed nodes), not one server. Default false.
    pub redis_cluster: bool,
    /// UDP address for gossip. Default 0.0.0.0:7946.
    pub cluster_bind: SocketAddr,
    /// The address other nodes reach this one at; none: derived from `cluster_bind`.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub cluster_advertise: Option<String>,
    /// Other nodes, comma-separated `host:port`; none: a cluster of one.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub cluster_seeds: Option<String>,
    /// Gossip secrets, comma-separated: every packet is sealed with the first, and packets sealed
    /// with any of them are accepted (rotate by putting the new key first everywhere, then
    /// removing the old one). None: gossip is not authenticated.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub cluster_key: Option<String>,
    /// SWIM probe period, ms; none: the cluster crate's LAN default.
    pub cluster_probe_period_ms: Option<u64>,
    /// How long a suspected member has to refute before it is declared down, ms; none: the
    /// cluster crate's LAN default.
    pub cluster_suspect_timeout_ms: Option<u64>,
    /// `json` or `pretty`; none: pretty on a terminal, JSON otherwise.
    pub log_format: Option<LogFormat>,
    /// `RUST_LOG` syntax. Default info. `RUST_LOG` itself, when set, wins.
    #[serde(deserialize_with = "lenient::string")]
    pub log_level: String,
    /// Runtime worker threads; 0: one per core. Default 0.
    pub worker_threads: usize,
    /// Longest wait for a client's request head, ms; slower clients are dropped. Default 10000.
    pub header_read_timeout_ms: u64,
    /// Longest a client may take nothing of what is sent to it (a response, a tunnel's data)
    /// before its connection is closed, ms; between two writes, not for a whole response.
    /// Default 60000.
    pub client_send_timeout_ms: u64,
    /// Forward HTTP/1 header names, both ways, with the letter case they arrived in, as nginx
    /// does; off, they go out in lower case (as HTTP/2 requires, and HTTP/1 allows). Costs a
    /// record of the names per message, about a quarter more work per request. Default false.
    pub preserve_header_case: bool,
    /// Largest request head (request line and headers), bytes; larger gets 431. Default 32768.
    pub max_header_bytes: usize,
    /// Proxies whose word about the client is taken (`real_ip_header`): CIDRs or single
    /// addresses, v4 and v6; in env and flags comma-separated. Default none.
    #[serde(deserialize_with = "lenient::list")]
    pub trusted_ips: Vec<String>,
    /// The header in which a trusted proxy names the client; `proxy_protocol`: none, the PROXY
    /// header's source is the client. Default X-Forwarded-For.
    #[serde(deserialize_with = "lenient::string")]
    pub real_ip_header: String,
    /// Walk `real_ip_header` from the right past trusted addresses (nginx's
    /// `real_ip_recursive`); off, its rightmost address is the client. Default true.
    pub real_ip_recursive: bool,
    /// The proxy listener expects a PROXY protocol header (v1 or v2) before anything else on
    /// every connection; its source address stands for the peer's. Default false.
    pub proxy_protocol: bool,
    /// Client connections served at once, per listener; more wait in the kernel's backlog.
    /// Default 16384.
    pub max_connections: usize,
    /// Longest wait for one Redis call (a rate-limit decision, a cache read or write), ms; past
    /// it the node falls back (limits) or bypasses (cache). Default 50.
    pub redis_timeout_ms: u64,
    /// Longest wait for one connection attempt to Redis, ms; attempts repeat in the background
    /// while Redis is down. Default 1000.
    pub redis_connect_timeout_ms: u64,
    /// Bytes the proxy-cache's memory strategy may hold on this node. Default 64 MiB.
    pub proxy_cache_memory_bytes: usize,
    /// Idle upstream connections kept per target; 0: a new connection for every request.
    /// Default 128.
    pub upstream_keepalive_max: usize,
    /// How long an idle upstream connection is kept, ms. Default 60000.
    pub upstream_keepalive_idle_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish, ms. Default 30000.
    pub shutdown_grace_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_id: default_node_id(),
            proxy_listen: ([0, 0, 0, 0], 8000).into(),
            proxy_listen_tls: None,
            proxy_tls_self_signed: None,
            admin_listen: ([127, 0, 0, 1], 8001).into(),
            admin_token: None,
            config_source: ConfigSource::File,
            config_file: None,
            etcd_endpoints: "http://127.0.0.1:2379".into(),
            etcd_prefix: "/gateway".into(),
            etcd_liveness_interval_ms: 5_000,
            etcd_ca_file: None,
            etcd_cert_file: None,
            etcd_key_file: None,
            etcd_username: None,
            etcd_password: None,
            redis_url: None,
            redis_cluster: false,
            cluster_bind: ([0, 0, 0, 0], 7946).into(),
            cluster_advertise: None,
            cluster_seeds: None,
            cluster_key: None,
            cluster_probe_period_ms: None,
            cluster_suspect_timeout_ms: None,
            log_format: None,
            log_level: "info".into(),
            worker_threads: 0,
            header_read_timeout_ms: 10_000,
            client_send_timeout_ms: 60_000,
            preserve_header_case: false,
            max_header_bytes: 32 * 1024,
            trusted_ips: Vec::new(),
            real_ip_header: "X-Forwarded-For".into(),
            real_ip_recursive: true,
            proxy_protocol: false,
            max_connections: 16_384,
            proxy_cache_memory_bytes: 64 << 20,
            redis_timeout_ms: 50,
            redis_connect_timeout_ms: 1_000,
            upstream_keepalive_max: 128,
            upstream_keepalive_idle_ms: 60_000,
            shutdown_grace_ms: 30_000,
        }
    }
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

fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "gateway".into())
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("invalid settings: {0}")]
pub struct SettingsError(String);

impl Settings {
    /// Loads the layers in order. `flags` holds only the settings given on the command line.
    pub fn load(config: Option<&std::path::Path>, flags: impl Serialize) -> Result<Settings, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = config {
            if !path.exists() {
                return Err(SettingsError(format!("config file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        // Only the variables named after a setting: others that share the prefix (such as
        // GATEWAY_IMAGE in docker-compose) are not ours.
        let known: Vec<String> = match serde_json::to_value(Settings::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        figment = figment
            .merge(
                Env::prefixed("GATEWAY_").filter(move |key| known.iter().any(|k| key.as_str().eq_ignore_ascii_case(k))),
            )
            .merge(Serialized::globals(flags));
        let settings: Settings = figment.extract().map_err(|e| SettingsError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if self.config_source == ConfigSource::Etcd && self.etcd_endpoints.split(',').all(|e| e.trim().is_empty()) {
            return Err(SettingsError("config_source = etcd needs etcd_endpoints".into()));
        }
        if self.node_id.is_empty() {
            return Err(SettingsError("node_id may not be empty".into()));
        }
        if self.etcd_cert_file.is_some() != self.etcd_key_file.is_some() {
            return Err(SettingsError("etcd_cert_file and etcd_key_file go together".into()));
        }
        if self.etcd_username.is_some() != self.etcd_password.is_some() {
            return Err(SettingsError("etcd_username and etcd_password go together".into()));
        }
        if self.max_header_bytes < 8192 {
            return Err(SettingsError("max_header_bytes must be at least 8192".into()));
        }
        if self.max_connections == 0 {
            return Err(SettingsError("max_connections must be at least 1".into()));
        }
        if self.header_read_timeout_ms == 0 {
            return Err(SettingsError("header_read_timeout_ms must be at least 1".into()));
        }
        if self.client_send_timeout_ms == 0 {
            return Err(SettingsError("client_send_timeout_ms must be at least 1".into()));
        }
        self.redis_target()?;
        self.addressing().map_err(SettingsError)?;
        Ok(())
    }

    /// Where the proxy listener finds its clients' addresses: `trusted_ips`, `real_ip_header`,
    /// `real_ip_recursive`, `proxy_protocol`; the error names the bad setting.
    pub fn addressing(&self) -> Result<Addressing, String> {
        let real_ip = RealIp::new(&self.trusted_ips, &self.real_ip_header, self.real_ip_recursive)?;
        Ok(Addressing::new(real_ip, self.proxy_protocol))
    }

    /// The Redis that `redis_url` and `redis_cluster` name; none without `redis_url`.
    pub fn redis_target(&self) -> Result<Option<RedisTarget>, SettingsError> {
        let urls = self.redis_url.as_deref().unwrap_or_default();
        match RedisTarget::from_settings(urls, self.redis_cluster) {
            Ok(None) if self.redis_cluster => Err(SettingsError("redis_cluster = true needs redis_url".into())),
            Ok(target) => Ok(target),
            Err(e) => Err(SettingsError(format!("redis_url: {e} (redis_cluster = true)"))),
        }
    }

    /// `header_read_timeout_ms` as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// `upstream_keepalive_idle_ms` as a duration.
    pub fn upstream_keepalive_idle(&self) -> Duration {
        Duration::from_millis(self.upstream_keepalive_idle_ms)
    }

    /// `shutdown_grace_ms` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

#[cfg(test)]
// figment's Jail API returns its large error type from the closures; that is its shape, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

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
            assert_eq!(s.proxy_listen.port(), 9000); // TOML over default
            assert_eq!(s.admin_listen.port(), 9101); // env over TOML
            assert_eq!(s.node_id, "flag"); // flag over env
            assert_eq!(s.log_level, "info"); // default
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_PROXY_LISTEN", "not an address");
            let e = Settings::load(None, BTreeMap::<String, String>::new()).unwrap_err().to_string();
            // figment names the variable as written: PROXY_LISTEN in `GATEWAY_`.
            assert!(e.to_ascii_lowercase().contains("proxy_listen"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn redis_is_one_server_or_a_cluster_named_by_its_seeds() {
        let load = |flags: serde_json::Value| Settings::load(None, flags).and_then(|s| s.redis_target());
        assert_eq!(load(json!({})).unwrap(), None);
        let one = load(json!({ "redis_url": "redis://r:6379" })).unwrap();
        assert_eq!(one, Some(RedisTarget::Server("redis://r:6379".into())));
        let seeds = load(json!({ "redis_url": "redis://a:7000, redis://b:7000", "redis_cluster": true })).unwrap();
        assert_eq!(seeds, Some(RedisTarget::Cluster(vec!["redis://a:7000".into(), "redis://b:7000".into()])));
        let e = load(json!({ "redis_url": "redis://a:7000,redis://b:7000" })).unwrap_err().to_string();
        assert!(e.contains("redis_url") && e.contains("redis_cluster = true"), "{e}");
        let e = load(json!({ "redis_cluster": true })).unwrap_err().to_string();
        assert!(e.contains("needs redis_url"), "{e}");
    }

    #[test]
    fn numbers_in_the_environment_are_fine_for_text_settings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_ADMIN_TOKEN", "123456");
            jail.set_env("GATEWAY_NODE_ID", "7");
            let s = Settings::load(None, BTreeMap::<String, String>::new()).map_err(|e| e.to_string())?;
            assert_eq!(s.admin_token.as_deref(), Some("123456"));
            assert_eq!(s.node_id, "7");
            Ok(())
        });
    }

    #[test]
    fn trusted_ips_are_a_list_in_toml_and_comma_separated_in_env_and_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("gw.toml", "trusted_ips = [\"10.0.0.0/8\", \"::1\"]\nreal_ip_recursive = false")?;
            let toml = Some(std::path::Path::new("gw.toml"));
            let s = Settings::load(toml, BTreeMap::<String, String>::new()).map_err(|e| e.to_string())?;
            assert_eq!(s.trusted_ips, ["10.0.0.0/8", "::1"]);
            assert!(!s.real_ip_recursive && !s.proxy_protocol);
            assert_eq!(s.real_ip_header, "X-Forwarded-For");
            jail.set_env("GATEWAY_TRUSTED_IPS", "127.0.0.1/32, 2001:db8::/32");
            jail.set_env("GATEWAY_PROXY_PROTOCOL", "true");
            let s = Settings::load(toml, BTreeMap::<String, String>::new()).map_err(|e| e.to_string())?;
            assert_eq!(s.trusted_ips, ["127.0.0.1/32", "2001:db8::/32"]);
            assert!(s.proxy_protocol);
            let s = Settings::load(toml, json!({ "trusted_ips": "192.0.2.1,192.0.2.2" })).map_err(|e| e.to_string())?;
            assert_eq!(s.trusted_ips, ["192.0.2.1", "192.0.2.2"]);
            let e = Settings::load(toml, json!({ "trusted_ips": "192.0.2.1,192.0.2.300" })).unwrap_err().to_string();
            assert!(e.contains("trusted_ips") && e.contains("192.0.2.300"), "{e}");
            let e = Settings::load(None, json!({ "real_ip_header": "a b" })).unwrap_err().to_string();
            assert!(e.contains("real_ip_header"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn unknown_toml_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("gw.toml", "proxy_lisen = \"127.0.0.1:9000\"")?;
            let e =
                Settings::load(Some(std::path::Path::new("gw.toml")), BTreeMap::<String, String>::new()).unwrap_err();
            assert!(e.to_string().contains("proxy_lisen"), "{e}");
            Ok(())
        });
    }
}
