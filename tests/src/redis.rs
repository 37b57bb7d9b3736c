//! A real Redis server (Debian's `redis-server`) on a free loopback port for one test; it can be
//! stopped and started again on the same port. [`RedisCluster`]: three of them forming one Redis
//! Cluster (with Debian's `redis-cli --cluster create`).

use crate::tempdir::TempDir;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A running redis-server; killed when dropped.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    /// With TLS: the CA that signed the server's certificate, and the password.
    tls: Option<(std::path::PathBuf, String)>,
    /// A Redis Cluster node (its cluster bus on `port + 10000`).
    cluster: bool,
}

impl Redis {
    /// Starts one and waits until it answers.
    pub async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let mut redis = Redis { child: None, port, dir: TempDir::new(), tls: None, cluster: false };
        redis.launch().await;
        redis
    }

    /// Starts a node for a Redis Cluster, not yet part of one: see [`RedisCluster`].
    async fn start_cluster_node() -> Redis {
        // Its bus listens on port + 10000: both must be free.
        let port = loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port").port();
            if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
                break port;
            }
        };
        let mut redis = Redis { child: None, port, dir: TempDir::new(), tls: None, cluster: true };
        redis.launch().await;
        redis
    }

    /// What `redis-cli` prints for `args` sent to this server.
    pub async fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .await
            .expect("run redis-cli (Debian's redis-tools, installed with redis-server)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts one that speaks only TLS (a certificate for 127.0.0.1 from a CA made here with
    /// `openssl`) and requires `password`.
    pub async fn start_tls(password: &str) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let dir = TempDir::new();
        let run = |args: &[&str]| {
            let status = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run openssl");
            assert!(status.success(), "openssl {args:?}");
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(dir.path().join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
            .expect("write ext.cnf");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        let ca = dir.path().join("ca.pem");
        let mut redis = Redis { child: None, port, dir, tls: Some((ca, password.to_owned())), cluster: false };
        redis.launch().await;
        redis
    }

    /// The CA file a client must trust, for a TLS server.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().map(|(ca, _)| ca.as_path())
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        match &self.tls {
            Some((_, password)) => format!("rediss://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    async fn launch(&mut self) {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]).arg("--dir").arg(self.dir.path());
        if self.cluster {
            command.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]);
        }
        match &self.tls {
            None => command.args(["--port", &port]),
            Some((_, password)) => command
                .args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no", "--requirepass", password])
                .args([
                    "--tls-cert-file",
                    "server.pem",
                    "--tls-key-file",
                    "server.key",
                    "--tls-ca-cert-file",
                    "ca.pem",
                ]),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server (Debian's redis-server; scripts/test installs it)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        if self.tls.is_some() {
            // Ready once it accepts connections (speaking TLS needs a TLS client).
            crate::eventually(Duration::from_secs(10), "redis to listen", || async {
                tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
            })
            .await;
            return;
        }
        crate::eventually(Duration::from_secs(10), "redis to answer", || async {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream.write_all(b"PING\r\n").await.ok()?;
            let mut reply = [0u8; 7];
            stream.read_exact(&mut reply).await.ok()?;
            (&reply == b"+PONG\r\n").then_some(())
        })
        .await;
    }

    /// Kills the server; its counters are lost (no persistence).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }
}

/// Three redis-servers forming one Redis Cluster, each the primary of a third of the slots.
pub struct RedisCluster {
    /// The servers, in the order they were started.
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    /// Starts the servers, joins them, and waits until every one says the cluster is ok.
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(Redis::start_cluster_node().await);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let create = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run redis-cli --cluster create");
        assert!(create.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&create.stdout));
        for node in &nodes {
            crate::eventually(Duration::from_secs(20), "the Redis Cluster to be ok", || async {
                let info = node.cli(&["CLUSTER", "INFO"]).await;
                (info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")).then_some(())
            })
            .await;
        }
        RedisCluster { nodes }
    }

    /// Each node's `redis://` URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }

    /// How many keys each node holds that match `pattern`.
    pub async fn keys_per_node(&self, pattern: &str) -> Vec<usize> {
        let mut counts = Vec::new();
        for node in &self.nodes {
            counts.push(node.cli(&["--scan", "--pattern", pattern]).await.lines().count());
        }
        counts
    }
}
