//! The end-to-end harness: real gateway processes, real upstream servers, real sockets, on
//! loopback (or a network the test makes) and on ports the OS picks.
//!
//! - [`echo`]: the demo and test upstream (also the `echo-upstream` binary).
//! - [`Upstream`]: an echo server on a free port, in the test's process.
//! - [`Gateway`]: a `gateway run` process with a config file of the test's, or on etcd, its
//!   ports read from its log.
//! - [`Etcd`]: a real etcd server on free ports; [`Relay`]: a TCP relay that can cut one
//!   node's connection to it.
//! - [`Redis`]: a real redis-server on a free port, stoppable and restartable; [`RedisCluster`]:
//!   three of them forming one Redis Cluster.
//! - [`otlp`]: an OTLP trace receiver (gRPC and HTTP), standing in for Jaeger.
//! - [`collector`]: an HTTP log collector for `http-log`, that can hang, fail or be stopped.
//! - [`grpc`]: the gRPC test service and client (Python's `grpcio`).
//! - [`http`]: a small client and the replies tests assert on.
//! - [`tls`]: a private CA and the certificates it signs, and a TLS client.
//! - [`netns`]: a network the test makes, a namespace and an address per node, whose links
//!   can be cut.
//! - [`eventually`]: polls a condition against a deadline; tests never sleep to wait.

pub mod cache;
pub mod collector;
pub mod echo;
mod etcd;
mod gateway;
pub mod grpc;
pub mod http;
pub mod netns;
pub mod origin;
pub mod otlp;
mod redis;
mod tempdir;
pub mod tls;
mod upstream;

pub use etcd::{Etcd, Relay, SecureFiles};
pub use gateway::{binary as gateway_binary, pair, run as run_gateway, validate as validate_config, Gateway};
pub use redis::{Redis, RedisCluster};
pub use tempdir::TempDir;
pub use upstream::{closed_port, Upstream};

use std::future::Future;
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 free a moment ago, for a server that must be told its port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// A process's peak resident memory so far, KiB (`VmHWM` of `/proc/PID/status`); none once it
/// has exited.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Polls `check` every 20 ms until it yields a value, or panics after `deadline` naming `what`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
