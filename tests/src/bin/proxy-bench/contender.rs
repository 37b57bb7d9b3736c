//! The proxies measured side by side, each started with one worker, logging off, pinned to one CPU:
//! this gateway, nginx and HAProxy (Debian's packages), set up as their users would for a
//! keep-alive upstream.

use crate::procs;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tests::{free_port, Gateway, TempDir};

/// A proxy process in front of the upstream.
pub struct Contender {
    /// Where clients send traffic.
    pub addr: SocketAddr,
    root: u32,
    _process: Process,
}

/// What keeps a contender running; dropping it stops the process.
enum Process {
    Gateway { _gateway: Box<Gateway> },
    Child { child: Child, _dir: TempDir },
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Process::Child { child, .. } = self {
            // The whole tree, workers first: nginx's workers outlive a master killed alone, and
            // were left running (and holding their port) after each bench.
            let mut pids = procs::tree(child.id());
            pids.reverse();
            let list: Vec<String> = pids.iter().map(u32::to_string).collect();
            // The shell's own `kill`: a minimal Debian has no procps.
            let _ = Command::new("sh").args(["-c", &format!("kill -KILL {} 2>/dev/null", list.join(" "))]).status();
            let _ = child.wait();
        }
    }
}

impl Contender {
    /// A gateway node serving `yaml`, with one runtime worker.
    pub async fn gateway(yaml: &str, redis_url: Option<&str>, cpu: usize) -> Contender {
        match redis_url {
            Some(url) => Contender::gateway_with(yaml, &["--redis-url", url], cpu).await,
            None => Contender::gateway_with(yaml, &[], cpu).await,
        }
    }

    /// A gateway node serving `yaml` with one runtime worker and `extra` flags.
    pub async fn gateway_with(yaml: &str, extra: &[&str], cpu: usize) -> Contender {
        let mut flags = vec!["--worker-threads", "1"];
        flags.extend(extra);
        let gateway = Gateway::start_with(yaml, &flags).await;
        let (addr, root) = (gateway.proxy, gateway.pid());
        Contender::ready(addr, root, Process::Gateway { _gateway: Box::new(gateway) }, cpu).await
    }

    /// A gateway node serving `yaml` (which holds a default certificate) on its TLS listener,
    /// with one runtime worker.
    pub async fn gateway_tls(yaml: &str, cpu: usize) -> Contender {
        let flags = ["--worker-threads", "1", "--proxy-listen-tls", "127.0.0.1:0"];
        let gateway = Gateway::start_with(yaml, &flags).await;
        let (addr, root) = (gateway.proxy_tls.expect("a TLS listener"), gateway.pid());
        Contender::ready(addr, root, Process::Gateway { _gateway: Box::new(gateway) }, cpu).await
    }

    /// nginx with one worker process and a keep-alive pool to the upstream, as ANCHORS.md says:
    /// HTTP/1.1 upstream, `Connection ""`, `keepalive 64`; with `tls`, terminating TLS with its
    /// default session cache (tickets) and a shared one. nginx 1.22 (Debian 12) leaves TLS 1.3
    /// out by default; it is named here so that all three contenders offer TLS 1.2 and 1.3 and a
    /// client meets the same protocol everywhere (TLS 1.2 resumption skips the key exchange that
    /// TLS 1.3 resumption makes, so a mixed comparison is not one).
    pub async fn nginx(upstream: SocketAddr, cpu: usize, tls: Option<&BenchCertificate>) -> Contender {
        let dir = TempDir::new();
        let port = free_port();
        let path = dir.path().display();
        let listen = match tls {
            None => format!("listen 127.0.0.1:{port};"),
            Some(c) => format!(
                "listen 127.0.0.1:{port} ssl;\n        ssl_protocols TLSv1.2 TLSv1.3;\n        \
                 ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_session_cache shared:SSL:10m;",
                c.cert.display(),
                c.key.display()
            ),
        };
        let conf = format!(
            r#"worker_processes 1;
daemon off;
pid {path}/nginx.pid;
error_log {path}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {path}/body;
    proxy_temp_path {path}/proxy;
    fastcgi_temp_path {path}/fastcgi;
    uwsgi_temp_path {path}/uwsgi;
    scgi_temp_path {path}/scgi;
    upstream backend {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        {listen}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, conf).expect("write nginx.conf");
        let (prefix, log) = (dir.path().to_owned(), dir.path().join("error.log"));
        let args = [
            OsStr::new("-p"),
            prefix.as_os_str(),
            OsStr::new("-c"),
            file.as_os_str(),
            OsStr::new("-e"),
            log.as_os_str(),
        ];
        Contender::child("nginx", &args, dir, port, cpu).await
    }

    /// HAProxy with one thread; it keeps upstream connections alive by default (`http-reuse
    /// safe`).
    pub async fn haproxy(upstream: SocketAddr, cpu: usize, tls: Option<&BenchCertificate>) -> Contender {
        let dir = TempDir::new();
        let port = free_port();
        let ssl = tls.map(|c| format!(" ssl crt {}", c.combined.display())).unwrap_or_default();
        let conf = format!(
            r#"global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend bench
    bind 127.0.0.1:{port}{ssl}
    default_backend upstream
backend upstream
    http-reuse safe
    server up {upstream}
"#
        );
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, conf).expect("write haproxy.cfg");
        Contender::child("haproxy", &[OsStr::new("-db"), OsStr::new("-f"), file.as_os_str()], dir, port, cpu).await
    }

    /// Starts `name` with `args` (its config in `dir`), listening on `port` once ready.
    async fn child(name: &str, args: &[&OsStr], dir: TempDir, port: u16, cpu: usize) -> Contender {
        let child = Command::new(binary(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let root = child.id();
        Contender::ready(([127, 0, 0, 1], port).into(), root, Process::Child { child, _dir: dir }, cpu).await
    }

    /// Waits until `addr` accepts, then pins the whole process tree to `cpu`.
    async fn ready(addr: SocketAddr, root: u32, process: Process, cpu: usize) -> Contender {
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "nothing answers on {addr} (pid {root})");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        procs::pin(&procs::tree(root), cpu);
        Contender { addr, root, _process: process }
    }

    /// Its processes (nginx: master and worker).
    pub fn pids(&self) -> Vec<u32> {
        procs::tree(self.root)
    }
}

/// One ECDSA P-256 certificate for 127.0.0.1, made for the run, as each contender reads it: PEM
/// files (nginx; HAProxy's chain and key in one) and a certificate entity (the gateway's).
pub struct BenchCertificate {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub combined: std::path::PathBuf,
    chain: String,
    key_pem: String,
    _dir: TempDir,
}

impl BenchCertificate {
    pub fn new() -> BenchCertificate {
        let key = rcgen::KeyPair::generate().expect("a P-256 key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("an IP name");
        let cert = params.self_signed(&key).expect("a self-signed certificate");
        let (chain, key_pem) = (cert.pem(), key.serialize_pem());
        let dir = TempDir::new();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write a certificate file");
            path
        };
        let (cert, key, combined) =
            (write("cert.pem", &chain), write("key.pem", &key_pem), write("both.pem", &(chain.clone() + &key_pem)));
        BenchCertificate { cert, key, combined, chain, key_pem, _dir: dir }
    }

    /// The declarative file's `certificates:` section: this one, the default.
    pub fn entity(&self) -> String {
        format!(
            "certificates: [{{ name: bench, cert: {}, key: {}, default: true }}]\n",
            serde_json::json!(self.chain),
            serde_json::json!(self.key_pem)
        )
    }
}

/// A port free at the time of asking, for servers that cannot bind port 0 and report it.
/// `name` on the PATH or in /usr/sbin (not on a normal user's PATH).
fn binary(name: &str) -> std::path::PathBuf {
    let sbin = std::path::Path::new("/usr/sbin").join(name);
    if sbin.exists() {
        sbin
    } else {
        name.into()
    }
}
