//! A real etcd server (Debian's `etcd-server`) on free loopback ports, in a temp dir, for one
//! test; and a TCP relay that can cut one client's connection to it.

use crate::free_port;
use crate::tempdir::TempDir;
use crate::tls::Ca;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
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
    secure: Option<Secure>,
}

/// An etcd that speaks only TLS, demands a client certificate and has auth enabled.
struct Secure {
    files: SecureFiles,
    /// What the harness's own clients connect with (as root).
    options: ConnectOptions,
}

/// The files a client of a secured etcd needs, and its user.
#[derive(Debug, Clone)]
pub struct SecureFiles {
    /// The CA that issued etcd's certificate and the clients'.
    pub ca: PathBuf,
    /// A client certificate the CA issued, and its key.
    pub cert: PathBuf,
    /// The client certificate's key.
    pub key: PathBuf,
    /// The user with etcd's root role.
    pub user: &'static str,
    /// Its password.
    pub password: &'static str,
}

impl Etcd {
    /// Starts a single-member etcd and waits until it answers.
    pub async fn start() -> Etcd {
        let dir = TempDir::new();
        let data = dir.path().join("data");
        let mut etcd = Etcd { child: None, client_port: free_port(), peer_port: free_port(), data, dir, secure: None };
        etcd.launch().await;
        etcd
    }

    /// Starts a single-member etcd that speaks only TLS (its certificate, for 127.0.0.1, issued
    /// by `ca`), demands a client certificate of `ca` (`--client-cert-auth`), and has auth
    /// enabled with one user, root; waits until it answers.
    pub async fn start_secure(ca: &Ca) -> Etcd {
        let dir = TempDir::new();
        let data = dir.path().join("data");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write a TLS file for etcd");
            path
        };
        let server = ca.leaf(&["127.0.0.1", "localhost"]);
        let client = ca.leaf(&["root"]);
        write("server.pem", &server.chain);
        write("server-key.pem", &server.key);
        let files = SecureFiles {
            ca: write("ca.pem", &ca.pem),
            cert: write("client.pem", &client.chain),
            key: write("client-key.pem", &client.key),
            user: "root",
            password: "etcd-s3cret-Kq72",
        };
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&ca.pem))
            .identity(Identity::from_pem(&client.chain, &client.key));
        let secure = Secure { files, options: ConnectOptions::new().with_tls(tls) };
        let mut etcd =
            Etcd { child: None, client_port: free_port(), peer_port: free_port(), data, dir, secure: Some(secure) };
        etcd.launch().await;
        let mut client = etcd.client().await;
        let user = etcd.secure.as_ref().map(|s| s.files.clone()).expect("secure");
        client.user_add(user.user, user.password, None).await.expect("add the root user");
        client.user_grant_role(user.user, "root").await.expect("grant it the root role");
        client.auth_enable().await.expect("enable auth");
        if let Some(secure) = &mut etcd.secure {
            secure.options = secure.options.clone().with_user(user.user, user.password);
        }
        etcd
    }

    /// What a client of a secured etcd needs ([`Etcd::start_secure`]).
    pub fn secure_files(&self) -> Option<&SecureFiles> {
        self.secure.as_ref().map(|s| &s.files)
    }

    /// `http://127.0.0.1:<port>`, or `https://` for a secured etcd.
    pub fn url(&self) -> String {
        let scheme = if self.secure.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn options(&self) -> Option<ConnectOptions> {
        self.secure.as_ref().map(|s| s.options.clone())
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
                    if let Ok(mut client) = Client::connect([self.url()], self.options()).await {
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
            .args(self.tls_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start etcd (Debian's etcd-server; scripts/test installs it)")
    }

    /// The flags of a secured etcd's TLS.
    fn tls_args(&self) -> Vec<String> {
        let Some(secure) = &self.secure else { return Vec::new() };
        let dir = self.dir.path();
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        vec![
            "--cert-file".into(),
            path("server.pem"),
            "--key-file".into(),
            path("server-key.pem"),
            "--trusted-ca-file".into(),
            secure.files.ca.to_string_lossy().into_owned(),
            "--client-cert-auth".into(),
        ]
    }

    /// A client (of a secured etcd: with the client certificate, as root).
    pub async fn client(&self) -> Client {
        Client::connect([self.url()], self.options()).await.expect("connect to etcd")
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
