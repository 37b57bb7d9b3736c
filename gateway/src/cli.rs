//! The command line: `gateway run` and `gateway validate FILE`.

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A clustered HTTP API gateway.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node. Settings: defaults < --config TOML < GATEWAY_* env < these flags.
    Run(Box<RunArgs>),
    /// Check a declarative config file; exit 0, or 1 listing every error and where it is.
    Validate {
        /// The declarative file (YAML or JSON).
        file: PathBuf,
    },
    /// Make etcd hold exactly what a declarative file says, in one transaction; prints what it
    /// creates, changes and deletes.
    Apply {
        /// The declarative file (YAML or JSON).
        file: PathBuf,
        /// Where etcd is.
        #[command(flatten)]
        etcd: EtcdArgs,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the config in etcd as a declarative file (secrets read `<redacted>`).
    Dump {
        /// Where etcd is.
        #[command(flatten)]
        etcd: EtcdArgs,
        /// Print key-auth keys, basic-auth password hashes and jwt secrets, so that the file
        /// applies.
        #[arg(long)]
        with_secrets: bool,
    },
}

/// Where etcd is and how to reach it, for `apply` and `dump`: flags, else the `GATEWAY_ETCD_*`
/// variables, else the node's defaults.
#[derive(Debug, Args, Serialize)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated.
    #[arg(long = "etcd", value_name = "URLS")]
    #[serde(rename = "etcd_endpoints", skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<String>,
    /// Prefix of every config key.
    #[arg(long)]
    #[serde(rename = "etcd_prefix", skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// TLS and a user for etcd.
    #[command(flatten)]
    #[serde(flatten)]
    pub access: EtcdAccess,
}

/// How to reach a secured etcd: its settings, as flags of `run`, `apply` and `dump`.
#[derive(Debug, Args, Serialize)]
pub struct EtcdAccess {
    /// CA certificates (PEM) etcd's certificate must lead to (https:// endpoints).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for etcd's --client-cert-auth.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_key_file: Option<PathBuf>,
    /// An etcd user (etcd's auth).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_username: Option<String>,
    /// The etcd user's password (prefer GATEWAY_ETCD_PASSWORD: flags show in `ps`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_password: Option<String>,
}

/// `gateway run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A TOML file of settings.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Settings given as flags; they win over every other layer.
    #[command(flatten)]
    pub flags: Flags,
}

/// One flag per setting; only those given are applied.
#[derive(Debug, Args, Serialize)]
pub struct Flags {
    /// This node's name.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Where clients send traffic.
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_listen: Option<SocketAddr>,
    /// Where clients send HTTPS traffic (none: no TLS listener).
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_listen_tls: Option<SocketAddr>,
    /// A self-signed certificate for this name, made at start, for clients the config has none for.
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_tls_self_signed: Option<String>,
    /// Admin API address.
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token every admin request must carry.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// `file` or `etcd`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_source: Option<String>,
    /// The declarative config file.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
    /// etcd endpoints, comma-separated.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_endpoints: Option<String>,
    /// Prefix of every config key in etcd.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_prefix: Option<String>,
    /// How often a quiet etcd watch must prove it is alive, ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_liveness_interval_ms: Option<u64>,
    /// TLS and a user for etcd.
    #[command(flatten)]
    #[serde(flatten)]
    pub etcd_access: EtcdAccess,
    /// `redis://…` for shared rate limits and cache (with --redis-cluster: seed nodes, comma-separated).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// `--redis-url` names a Redis Cluster.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cluster: Option<bool>,
    /// UDP address for gossip.
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_bind: Option<SocketAddr>,
    /// Address other nodes reach this one at.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_advertise: Option<String>,
    /// Other nodes, comma-separated host:port.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_seeds: Option<String>,
    /// Shared gossip secret.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_key: Option<String>,
    /// SWIM probe period, ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_probe_period_ms: Option<u64>,
    /// Time a suspected member has to refute, ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_suspect_timeout_ms: Option<u64>,
    /// How often the durable cluster state is compared with a random member's, ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_push_pull_interval_ms: Option<u64>,
    /// `json` or `pretty`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// Log filter, RUST_LOG syntax.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Runtime worker threads; 0: one per core.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
    /// Longest wait for a client's request head, ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_read_timeout_ms: Option<u64>,
    /// Longest a client may take nothing of what is sent to it, ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_send_timeout_ms: Option<u64>,
    /// Forward header names with the letter case they came with (HTTP/1), as nginx does.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preserve_header_case: Option<bool>,
    /// Largest request head, bytes.
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<usize>,
    /// Proxies whose word about the client is taken: CIDRs or addresses, comma-separated.
    #[arg(long, value_name = "CIDRS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_ips: Option<String>,
    /// The header a trusted proxy names the client in (`proxy_protocol`: none).
    #[arg(long, value_name = "HEADER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_ip_header: Option<String>,
    /// Skip trusted addresses from the right of the header (nginx's real_ip_recursive).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_ip_recursive: Option<bool>,
    /// Expect a PROXY protocol header (v1 or v2) on every proxy connection.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<bool>,
    /// Client connections served at once, per listener.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Longest wait for one Redis call, ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_timeout_ms: Option<u64>,
    /// Longest wait for one connection attempt to Redis, ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_connect_timeout_ms: Option<u64>,
    /// Bytes the memory cache may hold.
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_cache_memory_bytes: Option<usize>,
    /// Bytes the memory level in front of the Redis cache may hold; 0: none.
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_cache_memory_level_bytes: Option<usize>,
    /// Idle upstream connections kept per target; 0: none.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_keepalive_max: Option<usize>,
    /// How long an idle upstream connection is kept, ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_keepalive_idle_ms: Option<u64>,
    /// Grace period for in-flight requests on shutdown, ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_ms: Option<u64>,
    /// Time to go on serving, not ready, before stopping on shutdown, ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_drain_ms: Option<u64>,
    /// `off`, `stdout` or a file: one JSON line per request (a file is reopened on SIGUSR1).
    #[arg(long, value_name = "WHERE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<String>,
}
