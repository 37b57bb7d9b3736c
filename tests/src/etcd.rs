//! A real etcd server (Debian's `etcd-server`) on free loopback ports, in a temp dir, for one
//! test; and a TCP relay that can cut one client's connection to it.

use crate::tempdir::TempDir;
use etcd_client::Client;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{watch, Notify};

/// A running etcd; killed when dropped.
pub struct Etcd {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    data: PathBuf,
    dir: TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

impl Etcd {
    /// Starts a single-member etcd and waits until it answers.
    pub async fn start() -> Etcd {
        let dir = TempDir::new();
        let data = dir.path().join("data");
        let mut etcd = Etcd { child: None, client_port: free_port(), peer_port: free_port(), data, dir };
        etcd.launch().await;
        etcd
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// Starts etcd on this instance's ports and data and waits until it answers. On a restart a
    /// port may have been taken meanwhile by another test's outgoing connection (the kernel hands
    /// out freed ports as ephemeral ones): etcd then exits, and is started again once that
    /// connection is gone.
    async fn launch(&mut self) {
        let log = self.dir.path().join("etcd.log");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = self.spawn(&log);
            let answered = async {
                loop {
                    if let Ok(mut client) = Client::connect([self.url()], None).await {
                        if client.status().await.is_ok() {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                () = answered => {
                    self.child = Some(child);
                    return;
                }
                exit = child.wait() => {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    assert!(tokio::time::Instant::now() < deadline, "etcd keeps exiting ({exit:?}): {log}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                () = tokio::time::sleep_until(deadline) => panic!("timed out after 20s waiting for etcd to answer"),
            }
        }
    }

    fn spawn(&self, log: &std::path::Path) -> Child {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(log).expect("etcd's log file");
        Command::new(std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into()))
            .args(["--name", "default", "--data-dir"])
            .arg(&self.data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .args(["--max-txn-ops", "16384", "--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start etcd (Debian's etcd-server; scripts/test installs it)")
    }

    /// A client.
    pub async fn client(&self) -> Client {
        Client::connect([self.url()], None).await.expect("connect to etcd")
    }

    /// Puts `value` at `key`; the revision.
    pub async fn put(&self, key: &str, value: &str) -> i64 {
        let response = self.client().await.put(key, value, None).await.expect("put");
        response.header().expect("a header").revision()
    }

    /// Deletes `key`; the revision.
    pub async fn delete(&self, key: &str) -> i64 {
        let response = self.client().await.delete(key, None).await.expect("delete");
        response.header().expect("a header").revision()
    }

    /// Kills the server; its data stays.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// Starts it again on the same ports with no data: its revision starts over.
    pub async fn restart_empty(&mut self) {
        self.stop().await;
        let _ = std::fs::remove_dir_all(&self.data);
        self.launch().await;
    }
}

/// A TCP relay to one address, whose connections can be cut (closed, new ones dropped) or
/// frozen (kept open, nothing forwarded either way: a connection that died silently).
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    cut: Arc<Notify>,
    frozen: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let addr = listener.local_addr().expect("an address");
        let open = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Notify::new());
        let frozen = watch::Sender::new(false);
        let (is_open, cut_signal, freeze) = (open.clone(), cut.clone(), frozen.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped: refused in effect
                }
                let (cut, freeze) = (cut_signal.clone(), freeze.clone());
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(target).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (upstream_read, upstream_write) = upstream.into_split();
                    tokio::select! {
                        () = pump(client_read, upstream_write, freeze.subscribe()) => {}
                        () = pump(upstream_read, client_write, freeze.subscribe()) => {}
                        () = cut.notified() => {}
                    }
                });
            }
        });
        Relay { addr, open, cut, frozen, task }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every connection and drops new ones until [`Relay::restore`].
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    /// Stops forwarding anything, on open connections and new ones, without closing them.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Relays again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.frozen.send_replace(false);
    }
}

/// Copies `from` to `to`, holding the bytes while frozen.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
