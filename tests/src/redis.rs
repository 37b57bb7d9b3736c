//! A real Redis server (Debian's `redis-server`) on a free loopback port for one test; it can be
//! stopped and started again on the same port.

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
}

impl Redis {
    /// Starts one and waits until it answers.
    pub async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let mut redis = Redis { child: None, port, dir: TempDir::new(), tls: None };
        redis.launch().await;
        redis
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
        let mut redis = Redis { child: None, port, dir, tls: Some((ca, password.to_owned())) };
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
