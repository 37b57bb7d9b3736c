//! Echo upstreams on free ports, served from the test's own process.

use crate::echo::{serve, EchoConfig, EchoStats};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running echo server; stops when dropped.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The name it answers with.
    pub name: String,
    stats: Arc<EchoStats>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Starts an echo server named `name`.
    pub async fn start(name: &str) -> Upstream {
        Upstream::start_with_delay(name, Duration::ZERO).await
    }

    /// Starts an echo server that waits `delay` before every answer.
    pub async fn start_with_delay(name: &str, delay: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind an upstream");
        let addr = listener.local_addr().expect("a bound address");
        let stats = Arc::new(EchoStats::default());
        let config = EchoConfig { name: name.to_owned(), delay };
        let task = tokio::spawn(serve(listener, config, stats.clone()));
        Upstream { addr, name: name.to_owned(), stats, task }
    }

    /// How many requests it answered.
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }

    /// How many connections it accepted.
    pub fn connections(&self) -> u64 {
        self.stats.connections.load(Ordering::Relaxed)
    }

    /// Answers every request with `status` from now on (0: back to normal).
    pub fn force_status(&self, status: u16) {
        self.stats.forced_status.store(status, Ordering::Relaxed);
    }

    /// Cuts every exchange without an answer from now on (false: back to normal).
    pub fn drop_requests(&self, on: bool) {
        self.stats.drop_requests.store(on, Ordering::Relaxed);
    }

    /// Stops accepting; the port refuses connections afterwards.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address on loopback where nothing listens: connections to it are refused.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("a bound address")
}
