//! The gateway node: everything between a client's request and an upstream's response.
//!
//! - [`node`] wires a running node: listeners, the live config, shutdown.
//! - [`sources`]: config from the declarative file (SIGHUP) or from etcd (as it changes).
//! - [`settings`] and [`cli`]: what an operator sets, and how.
//! - [`runtime`]: a config snapshot compiled for the request path, behind an `ArcSwap`.
//! - [`router`]: matches requests to routes, compiled once per snapshot.
//! - [`balance`]: the sans-IO load balancers.
//! - [`health`]: per-node target health from active probes and proxied traffic.
//! - [`exchange`]: what the proxy and the plugins both handle (the client, bodies, answers).
//! - [`plugins`]: the plugin pipeline and its plugins (auth, rate limiting, cache).
//! - [`proxy`]: forwarding, retries, the upstream connection pool, header rewriting.
//! - [`server`]: accepting connections, client limits, graceful shutdown.
//! - [`client_address`]: the client's real address behind trusted proxies.
//! - [`request_log`]: the log phase: each request's record, for `http-log` and `access_log`.
//! - [`admin`]: the admin API.
//! - [`cluster_link`]: gossip membership, and health resets sent to and received from the
//!   other nodes.
//! - [`telemetry`]: logs, OpenTelemetry traces, Prometheus metrics; [`state_metrics`]: the
//!   gauges read from the node's state at each scrape.

pub mod admin;
pub mod balance;
pub mod cli;
pub mod client_address;
pub mod cluster_link;
pub mod exchange;
pub mod health;
pub mod node;
pub mod plugins;
pub mod proxy;
pub mod request_log;
pub mod router;
pub mod runtime;
pub mod server;
pub mod settings;
pub mod sources;
pub mod state_metrics;
pub mod telemetry;
pub mod tls;
