//! The gRPC test service and client (`tests/grpc/echo_service.py`, on Python's `grpcio`): a
//! server process on a port, and calls made by a client process, each printing its outcome.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("grpc/echo_service.py")
}

/// A running gRPC server (`Echo` and the health service); killed when dropped.
pub struct GrpcServer {
    child: Child,
    /// Where a TLS server's certificate and key are.
    _files: Option<crate::TempDir>,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// Its port.
    pub port: u16,
}

impl GrpcServer {
    /// A server on a free port whose health service answers SERVING.
    pub async fn start() -> GrpcServer {
        GrpcServer::start_on(crate::free_port(), "SERVING").await
    }

    /// A server on a free port over TLS with `leaf`'s certificate.
    pub async fn start_tls(leaf: &crate::tls::Leaf) -> GrpcServer {
        let dir = crate::TempDir::new();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, &leaf.chain).expect("write the certificate");
        std::fs::write(&key, &leaf.key).expect("write the key");
        let files = [cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned()];
        let mut server = GrpcServer::spawn(crate::free_port(), "SERVING", &files).await;
        server._files = Some(dir);
        server
    }

    /// A server on `port` whose health service answers `health` (`SERVING`, `NOT_SERVING`).
    pub async fn start_on(port: u16, health: &str) -> GrpcServer {
        GrpcServer::spawn(port, health, &[]).await
    }

    async fn spawn(port: u16, health: &str, tls: &[String]) -> GrpcServer {
        let mut child = Command::new("python3")
            .arg(script())
            .args(["serve", &port.to_string(), health])
            .args(tls)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start python3 (the gRPC test server)");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the gRPC test server did not start in 30 s")
            .expect("its stdout")
            .expect("a line saying where it listens");
        let bound: u16 = line.strip_prefix("listening ").and_then(|p| p.parse().ok()).expect("listening PORT");
        assert_eq!(bound, port, "the gRPC test server could not bind its port");
        GrpcServer { child, _files: None, addr: format!("127.0.0.1:{port}"), port }
    }

    /// Kills the server and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Runs `scenario` of the test client against `target` (`host:port`); its outcome as JSON.
pub async fn call(target: &str, scenario: &str) -> serde_json::Value {
    let output = Command::new("python3")
        .arg(script())
        .args(["call", target, scenario])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .unwrap_or_else(|_| panic!("the gRPC client's {scenario} did not finish in 60 s"))
        .expect("run python3 (the gRPC test client)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the gRPC client's {scenario} failed: {stdout}{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{scenario}: {e}: {stdout}{stderr}"))
}
