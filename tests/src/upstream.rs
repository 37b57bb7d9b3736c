//! Echo upstreams on free ports, served from the test's own process.

use crate::echo::{serve, serve_with, EchoConfig, EchoStats};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

/// A running echo server; stops when dropped.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The name it answers with.
    pub name: String,
    stats: Arc<EchoStats>,
    task: JoinHandle<()>,
    /// Its port once stopped, held so that no other server of the run is given it.
    stopped: Option<ClosedPort>,
}

impl Upstream {
    /// Starts an echo server named `name`.
    pub async fn start(name: &str) -> Upstream {
        Upstream::start_with_delay(name, Duration::ZERO).await
    }

    /// Starts an echo server named `name` on `ip` (a free port).
    pub async fn start_on(ip: std::net::IpAddr, name: &str) -> Upstream {
        Upstream::bind(SocketAddr::new(ip, 0), name, Duration::ZERO).await
    }

    /// Starts an echo server that waits `delay` before every answer.
    pub async fn start_with_delay(name: &str, delay: Duration) -> Upstream {
        Upstream::bind(SocketAddr::from(([127, 0, 0, 1], 0)), name, delay).await
    }

    async fn bind(addr: SocketAddr, name: &str, delay: Duration) -> Upstream {
        let listener = TcpListener::bind(addr).await.expect("bind an upstream");
        let addr = listener.local_addr().expect("a bound address");
        let stats = Arc::new(EchoStats::default());
        let config = EchoConfig { name: name.to_owned(), delay };
        let task = tokio::spawn(serve(listener, config, stats.clone()));
        Upstream { addr, name: name.to_owned(), stats, task, stopped: None }
    }

    /// Starts an echo server named `name` that speaks only TLS, with `tls` (a certificate, and
    /// perhaps a demand for the client's).
    pub async fn start_tls(name: &str, tls: Arc<rustls::ServerConfig>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind an upstream");
        let addr = listener.local_addr().expect("a bound address");
        let stats = Arc::new(EchoStats::default());
        let config = EchoConfig { name: name.to_owned(), delay: Duration::ZERO };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let task = tokio::spawn(serve_with(listener, config, stats.clone(), Some(acceptor)));
        Upstream { addr, name: name.to_owned(), stats, task, stopped: None }
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

    /// Answers every other request with `status` from now on (0: back to normal).
    pub fn flaky_status(&self, status: u16) {
        self.stats.flaky_status.store(status, Ordering::Relaxed);
    }

    /// How many answers had the flaky status.
    pub fn flaked(&self) -> u64 {
        self.stats.flaked.load(Ordering::Relaxed)
    }

    /// Cuts every exchange without an answer from now on (false: back to normal).
    pub fn drop_requests(&self, on: bool) {
        self.stats.drop_requests.store(on, Ordering::Relaxed);
    }

    /// Stops accepting; the port refuses connections afterwards, and stays this server's until
    /// it is dropped: a port merely closed can be given to another test's server at once, and a
    /// test waiting for this one to be found dead would then find it alive.
    pub async fn stop(&mut self) {
        self.task.abort();
        // Settles once the task, and its listener, are dropped.
        let _ = (&mut self.task).await;
        self.stopped = Some(ClosedPort::hold(self.addr));
    }

    /// Listens again on its address after [`Upstream::stop`] (with no delay), keeping its counts.
    pub async fn restart(&mut self) {
        let held = self.stopped.take().expect("restart follows stop");
        drop(held);
        let socket = TcpSocket::new_v4().expect("a socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(self.addr).unwrap_or_else(|e| panic!("bind {} again: {e}", self.addr));
        let listener = socket.listen(1024).expect("listen");
        let config = EchoConfig { name: self.name.clone(), delay: Duration::ZERO };
        self.task = tokio::spawn(serve(listener, config, self.stats.clone()));
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback address where nothing listens: connections to it are refused. The port stays
/// bound (without listening) while this lives, so that no other socket of the test run is given
/// it meanwhile; its `Display` is the address.
pub struct ClosedPort {
    /// The address.
    pub addr: SocketAddr,
    _socket: TcpSocket,
}

impl ClosedPort {
    /// Binds `addr` without listening. `SO_REUSEADDR` lets it take a port whose earlier
    /// connections linger in `TIME_WAIT`.
    pub(crate) fn hold(addr: SocketAddr) -> ClosedPort {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(addr).unwrap_or_else(|e| panic!("hold {addr}: {e}"));
        ClosedPort { addr: socket.local_addr().expect("a bound address"), _socket: socket }
    }
}

impl std::fmt::Display for ClosedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// A free loopback port where nothing listens, held while the result lives.
pub fn closed_port() -> ClosedPort {
    ClosedPort::hold(SocketAddr::from(([127, 0, 0, 1], 0)))
}
