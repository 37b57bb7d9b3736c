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
}

impl Redis {
    /// Starts one and waits until it answers.
    pub async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let mut redis = Redis { child: None, port, dir: TempDir::new() };
        redis.launch().await;
        redis
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server (Debian's redis-server; scripts/test installs it)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
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
