//! Real `redis-server` processes for the integration tests: a free port, a temp dir, ready when
//! `PING` answers, killed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    cluster: bool,
}

impl RedisServer {
    /// A standalone server on a free port; panics if `redis-server` is not installed.
    pub fn start() -> Option<Self> {
        Self::start_on(free_port(), false)
    }

    /// A server on `port`, with `cluster-enabled` when `cluster` (its bus on `port + 10000`).
    pub fn start_on(port: u16, cluster: bool) -> Option<Self> {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let start = STARTS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ratelimit-redis-{}-{port}-{start}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if cluster {
            command.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]);
        }
        let child = match command.spawn() {
            Ok(child) => child,
            // A test that cannot run must not pass: scripts/test installs redis-server.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("redis-server is not installed (Debian's redis-server; scripts/test installs it)")
            }
            Err(e) => panic!("redis-server: {e}"),
        };
        let server = Self { child: Some(child), port, dir, cluster };
        server.wait_ready();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain connection for inspecting the server.
    pub fn admin(&self) -> redis::Connection {
        redis::Client::open(self.url()).and_then(|c| c.get_connection()).expect("admin connection")
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let again = Self::start_on(self.port, self.cluster).expect("redis-server");
        *self = again;
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ping(self.port) {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server on {} did not answer PING", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// A port nothing listens on (nor on `port + 10000`, a cluster node's bus).
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind port 0").port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// `N` distinct ports as [`free_port`] finds them.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let mut ports = [0; N];
    for i in 0..N {
        ports[i] = loop {
            let port = free_port();
            if !ports[..i].contains(&port) {
                break port;
            }
        };
    }
    ports
}

/// Three cluster-enabled servers sharing the 16,384 slots, once the cluster says `ok`.
pub fn start_cluster() -> Option<Vec<RedisServer>> {
    start_cluster_on(free_ports())
}

/// [`start_cluster`] on the given ports.
pub fn start_cluster_on(ports: [u16; 3]) -> Option<Vec<RedisServer>> {
    let mut nodes = Vec::new();
    for port in ports {
        nodes.push(RedisServer::start_on(port, true)?);
    }
    let ranges = [(0, 5_460), (5_461, 10_922), (10_923, 16_383)];
    for (node, (from, to)) in nodes.iter().zip(ranges) {
        let _: () = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(from)
            .arg(to)
            .query(&mut node.admin())
            .expect("ADDSLOTSRANGE");
    }
    for other in &nodes[1..] {
        let _: () = redis::cmd("CLUSTER")
            .arg("MEET")
            .arg("127.0.0.1")
            .arg(other.port)
            .query(&mut nodes[0].admin())
            .expect("MEET");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !nodes.iter().all(|node| {
        let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut node.admin()).unwrap_or_default();
        info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
    }) {
        assert!(Instant::now() < deadline, "the cluster did not form");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(nodes)
}
