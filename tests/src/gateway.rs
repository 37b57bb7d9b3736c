//! A `gateway run` process for a test.

use crate::http::{HttpClient, Reply};
use crate::netns::Network;
use crate::tempdir::TempDir;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running gateway node; killed when dropped.
pub struct Gateway {
    child: Child,
    /// The proxy listener.
    pub proxy: SocketAddr,
    /// The TLS proxy listener, when `--proxy-listen-tls` was given.
    pub proxy_tls: Option<SocketAddr>,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The gossip (UDP) address.
    pub gossip: SocketAddr,
    /// The declarative file it reads.
    pub config_path: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    /// What it wrote on standard output (the access log with `--access-log stdout`).
    stdout: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

/// Runs `gateway <args>` (a command that ends: `apply`, `dump`, `validate`) to its end.
pub fn run(args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary()).args(args).output().expect("run gateway")
}

/// `gateway validate` on a declarative file holding `yaml`: its exit code and what it wrote to
/// standard error.
pub fn validate(yaml: &str) -> (Option<i32>, String) {
    let dir = TempDir::new();
    let file = dir.path().join("gateway.yaml");
    std::fs::write(&file, yaml).expect("write the config");
    let out = run(&["validate", &file.to_string_lossy()]);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The `gateway` binary built beside the test binary (`target/<profile>/gateway`), or
/// `GATEWAY_BIN`.
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("GATEWAY_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = dir.join("gateway");
    assert!(bin.exists(), "{} is missing: run `cargo build --workspace --bins` first", bin.display());
    bin
}

impl Gateway {
    /// Starts a node serving `yaml`, on free loopback ports.
    pub async fn start(yaml: &str) -> Gateway {
        Gateway::start_with(yaml, &[]).await
    }

    /// Starts a node serving `yaml` with extra `gateway run` flags.
    pub async fn start_with(yaml: &str, flags: &[&str]) -> Gateway {
        Gateway::start_node("test-node", yaml, flags, &[]).await
    }

    /// Starts a node serving `yaml` with extra flags and environment variables.
    pub async fn start_with_env(yaml: &str, flags: &[&str], env: &[(&str, impl AsRef<str>)]) -> Gateway {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        Gateway::start_node("test-node", yaml, flags, &env).await
    }

    /// Starts a node named `node_id` serving `yaml`, with extra flags and environment variables.
    pub async fn start_node(node_id: &str, yaml: &str, flags: &[&str], env: &[(&str, &str)]) -> Gateway {
        Gateway::serving(yaml, node_id, flags, Place::loopback([0, 0, 0]), env).await
    }

    /// Starts a node named `node_id` on the config in etcd at `endpoints` under `/gateway`.
    pub async fn start_etcd(node_id: &str, endpoints: &str, flags: &[&str]) -> Gateway {
        let dir = TempDir::new();
        let mut args = vec!["--node-id", node_id, "--config-source", "etcd", "--etcd-endpoints", endpoints];
        args.extend_from_slice(flags);
        let unused = dir.path().join("unused.yaml");
        Gateway::spawn(dir, unused, &args, &[]).await
    }

    /// Starts a node named `node_id` serving `yaml` in node `i`'s namespace of `network`, at its
    /// address: gossip on port 7946, proxy and admin on free ports.
    pub async fn start_in(network: &Network, i: usize, node_id: &str, yaml: &str, flags: &[&str]) -> Gateway {
        let place = Place { netns: Some(network.namespace(i)), ip: network.node_ip(i), ports: [0, 0, 7946] };
        Gateway::serving(yaml, node_id, flags, place, &[]).await
    }

    /// Starts a node named `node_id` serving `yaml` on loopback with its proxy and admin
    /// listeners on the given ports (to start it again where a load balancer expects it).
    pub async fn start_at(node_id: &str, yaml: &str, flags: &[&str], proxy_port: u16, admin_port: u16) -> Gateway {
        Gateway::serving(yaml, node_id, flags, Place::loopback([proxy_port, admin_port, 0]), &[]).await
    }

    /// A node named `node_id` at `place`, serving `yaml` from a file of its own.
    async fn serving(yaml: &str, node_id: &str, flags: &[&str], place: Place, env: &[(&str, &str)]) -> Gateway {
        let dir = TempDir::new();
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, yaml).expect("write the config");
        let file = config_path.to_string_lossy().into_owned();
        let mut args = vec!["--node-id", node_id, "--config-file", &file];
        args.extend_from_slice(flags);
        Gateway::launch(place, dir, config_path.clone(), &args, env).await
    }

    async fn spawn(dir: TempDir, config_path: PathBuf, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        Gateway::launch(Place::loopback([0, 0, 0]), dir, config_path, args, env).await
    }

    async fn launch(place: Place, dir: TempDir, config_path: PathBuf, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        // A test's own `--log-level` replaces the default (the flag may be given once).
        let level = log_level();
        let default_level = if args.contains(&"--log-level") { vec![] } else { vec!["--log-level", level.as_str()] };
        let [proxy, admin, gossip] = place.ports.map(|port| SocketAddr::new(place.ip, port).to_string());
        let mut command = match &place.netns {
            None => Command::new(binary()),
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(binary());
                command
            }
        };
        let mut child = command
            .args(["run", "--proxy-listen", &proxy, "--admin-listen", &admin, "--log-format", "json"])
            .args(default_level)
            .args(["--cluster-bind", &gossip])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
            .env_remove("OTEL_TRACES_SAMPLER")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the gateway");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let mut out_lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let out_sink = stdout.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out_lines.next_line().await {
                out_sink.lock().expect("stdout lock").push(line);
            }
        });
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addrs) = listening(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addrs);
                    }
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let Listening { proxy, proxy_tls, admin, gossip } =
            match tokio::time::timeout(Duration::from_secs(20), rx).await {
                Ok(Ok(addrs)) => addrs,
                _ => {
                    let status = child.try_wait().ok().flatten();
                    let logs = logs.lock().expect("log lock").join("\n");
                    panic!("the gateway did not start (exit: {status:?}); its log:\n{logs}");
                }
            };
        Gateway { child, proxy, proxy_tls, admin, gossip, config_path, logs, stdout, _dir: dir }
    }

    /// `http://<proxy><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// `http://<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `GET /status` of the admin API.
    pub async fn status(&self) -> serde_json::Value {
        HttpClient::new().get(&self.admin_url("/status")).await.json()
    }

    /// Every sample of `/metrics`: `name{labels}` → value.
    pub async fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let body = HttpClient::new().get(&self.admin_url("/metrics")).await.body;
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_owned(), v.parse().ok()?))))
            .collect()
    }

    /// The value of the sample `series` (its name and labels, as `/metrics` writes them), 0
    /// when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics().await.get(series).copied().unwrap_or(0.0)
    }

    /// `PUT <path>?wait=1` of the admin API with `body`: the reply once this node applied the
    /// write (or refused it).
    pub async fn admin_put(&self, path: &str, body: &serde_json::Value) -> Reply {
        let url = self.admin_url(&format!("{path}?wait=1"));
        HttpClient::new().call(http::Method::PUT, &url, body.to_string()).await
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the gateway is running")
    }

    /// Sends `signal` (`HUP`, `TERM`, `INT`, `USR1`) to the process.
    pub fn signal(&self, signal: &str) {
        // The shell's own `kill`: a minimal Debian has no procps.
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("kill -{signal} {}", self.pid())])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Replaces the declarative file (a reload needs [`Gateway::signal`]`("HUP")`).
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(&self.config_path, yaml).expect("write the config");
    }

    /// Waits for the process to exit, at most `deadline`.
    pub async fn wait(&mut self, deadline: Duration) -> ExitStatus {
        tokio::time::timeout(deadline, self.child.wait())
            .await
            .expect("the gateway did not exit in time")
            .expect("wait for the gateway")
    }

    /// The process's peak resident memory so far, KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        crate::peak_rss_kib(self.pid()).expect("VmHWM in /proc status")
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Every line written on standard output so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout lock").clone()
    }

    /// Whether some log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.lock().expect("log lock").iter().any(|l| l.contains(needle))
    }
}

/// The nodes' log filter: `GATEWAY_TEST_LOG_LEVEL`, else debug for the gateway's own crates. It
/// must keep `gateway::node` at info: the harness reads the ports from the `listening` line.
fn log_level() -> String {
    std::env::var("GATEWAY_TEST_LOG_LEVEL").unwrap_or_else(|_| "info,gateway=debug,config_sync=debug".into())
}

/// Where a node runs: on loopback, or in a network namespace with its own address; its proxy,
/// admin and gossip ports (0: any free one).
struct Place {
    netns: Option<String>,
    ip: IpAddr,
    ports: [u16; 3],
}

impl Place {
    fn loopback(ports: [u16; 3]) -> Place {
        Place { netns: None, ip: IpAddr::from([127, 0, 0, 1]), ports }
    }
}

/// The addresses a node listens on, as its `listening` log line names them.
struct Listening {
    proxy: SocketAddr,
    proxy_tls: Option<SocketAddr>,
    admin: SocketAddr,
    gossip: SocketAddr,
}

fn listening(line: &str) -> Option<Listening> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["message"] != "listening" {
        return None;
    }
    let addr = |field: &str| v[field].as_str()?.parse().ok();
    Some(Listening {
        proxy: addr("proxy")?,
        proxy_tls: addr("proxy_tls"),
        admin: addr("admin")?,
        gossip: addr("gossip")?,
    })
}

/// Two nodes of one cluster (the second seeded from the first) serving `yaml`, sharing the Redis
/// at `redis` when given; returned once each sees both members and has reached Redis (until
/// then a cache answers Bypass).
pub async fn pair(yaml: &str, redis: Option<&crate::Redis>) -> (Gateway, Gateway) {
    let url = redis.map(crate::Redis::url);
    let mut flags = vec!["--cluster-probe-period-ms", "200"];
    if let Some(url) = &url {
        flags.extend(["--redis-url", url]);
    }
    let first = Gateway::start_node("node-1", yaml, &flags, &[]).await;
    let seed = first.gossip.to_string();
    flags.extend(["--cluster-seeds", &seed]);
    let second = Gateway::start_node("node-2", yaml, &flags, &[]).await;
    for gw in [&first, &second] {
        crate::eventually(Duration::from_secs(20), "two members, and Redis when given", || async {
            let status = HttpClient::new().get(&gw.admin_url("/status")).await.json();
            let redis = url.is_none() || status["redis"] == "connected";
            (status["cluster"]["members"] == 2 && redis).then_some(())
        })
        .await;
    }
    (first, second)
}
