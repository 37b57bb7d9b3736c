//! The quickstart of docs/quickstart.md, as a new user follows it, against `docker-compose up`
//! on this machine: the unchanged docker-compose.yml, with its image variables pointed at images
//! built here (no registry can be reached): the gateway from the binaries of this build, etcd,
//! Redis, Prometheus and Alertmanager from Debian's packages, the OTLP receiver standing in for
//! Jaeger, and an echo server standing in for Grafana (Debian has no Grafana package: the
//! dashboard and its provisioning are checked by tests/tests/monitoring_rules.rs instead). Each
//! image is the binaries and the shared libraries they load, on an empty base.
//!
//! Prometheus must scrape the three nodes, hold the seven alerting rules and know Alertmanager.
//!
//! Then, beyond the quickstart, a rolling restart of the three nodes under load behind HAProxy
//! (tests/compose/load-balancer.yml, its image from Debian's HAProxy): no request fails.
//!
//! Runs wherever a Docker engine answers; elsewhere it says so and passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::http::{HttpClient, Reply};
use tests::{eventually, free_port, gateway_binary, TempDir};

const WAIT: Duration = Duration::from_secs(90);
/// The compose file that adds HAProxy in front of the nodes, relative to the repository.
const LOAD_BALANCER: &str = "tests/compose/load-balancer.yml";
const HAPROXY: &str = "/usr/sbin/haproxy";
const PROMETHEUS: &str = "/usr/bin/prometheus";
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
/// Each node's service and its admin port on the host.
const NODES: [(&str, u16); 3] = [("gateway-1", 8001), ("gateway-2", 8011), ("gateway-3", 8021)];

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn docker_answers() -> bool {
    let engine = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    let compose = Command::new("docker-compose").arg("version").output();
    matches!((engine, compose), (Ok(e), Ok(c)) if e.status.success() && c.status.success())
}

/// Copies `file` into `root` at `at`, with every shared library it loads (a file that is not an
/// ELF binary, such as a template, alone).
fn install(root: &Path, file: &Path, at: &str) {
    let target = root.join(at.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(file, &target).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
    let elf = std::fs::read(file).is_ok_and(|bytes| bytes.starts_with(b"\x7fELF"));
    if !elf {
        return;
    }
    // Debug binaries are large; the symbols are not needed to run.
    let _ = Command::new("strip").arg("--strip-debug").arg(&target).output();
    let ldd = run(Command::new("ldd").arg(file));
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let lib = line.split("=>").nth(1).unwrap_or(line).split_whitespace().next().unwrap_or("");
        if lib.starts_with('/') {
            let dest = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(lib, &dest).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
        }
    }
}

/// Builds image `tag` from `files` (source, path in the image), running `cmd`.
fn image(dir: &Path, tag: &str, files: &[(PathBuf, &str)], cmd: &[&str]) {
    let context = dir.join(tag.replace([':', '/'], "-"));
    let root = context.join("root");
    for (file, at) in files {
        install(&root, file, at);
    }
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let dest = root.join("examples");
    std::fs::create_dir_all(&dest).unwrap();
    for entry in std::fs::read_dir(&examples).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dest.join(entry.file_name())).unwrap();
    }
    let cmd = serde_json::to_string(cmd).unwrap();
    std::fs::write(context.join("Dockerfile"), format!("FROM scratch\nCOPY root/ /\nCMD {cmd}\n")).unwrap();
    run(Command::new("docker").args(["build", "-q", "-t", tag]).arg(&context));
}

/// Local images, removed when dropped.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
        }
    }
}

/// The compose project; taken down (with its volumes) when dropped.
struct Compose {
    project: String,
    env: Vec<(String, String)>,
}

impl Compose {
    /// `docker-compose` on docker-compose.yml alone.
    fn command(&self) -> Command {
        let mut command = Command::new("docker-compose");
        command.current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")).args(["-p", &self.project]);
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    /// `docker-compose` on docker-compose.yml with the load balancer added.
    fn with_load_balancer(&self) -> Command {
        let mut command = self.command();
        command.args(["-f", "docker-compose.yml", "-f", LOAD_BALANCER]);
        command
    }

    /// Runs `docker-compose <args>` (with the load balancer) to its end, on a thread of its own
    /// so the test's other tasks go on meanwhile.
    async fn run(&self, args: &[&str]) -> Output {
        let mut command = self.with_load_balancer();
        command.args(args);
        tokio::task::spawn_blocking(move || run(&mut command)).await.unwrap()
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self.with_load_balancer().args(["down", "-v", "--remove-orphans", "-t", "2"]).output();
    }
}

/// GET `url`; none when the exchange fails or takes over 3 s (until a node listens, Docker's
/// port forwarder takes connections and closes them).
async fn try_get(client: &HttpClient, url: &str) -> Option<Reply> {
    tokio::time::timeout(Duration::from_secs(3), client.try_get(url)).await.ok()?.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_on_docker_compose() {
    if !docker_answers() {
        eprintln!("no Docker engine or docker-compose answers here: the compose quickstart is not run");
        return;
    }
    let dir = TempDir::new();
    let bins = gateway_binary().parent().unwrap().to_path_buf();
    let tag = std::process::id();
    let (gateway, etcd, redis, jaeger, haproxy) = (
        format!("gwtest/gateway:{tag}"),
        format!("gwtest/etcd:{tag}"),
        format!("gwtest/redis:{tag}"),
        format!("gwtest/jaeger:{tag}"),
        format!("gwtest/haproxy:{tag}"),
    );
    let (prometheus, alertmanager, grafana) =
        (format!("gwtest/prometheus:{tag}"), format!("gwtest/alertmanager:{tag}"), format!("gwtest/grafana:{tag}"));
    let _images = Images(vec![
        gateway.clone(),
        etcd.clone(),
        redis.clone(),
        jaeger.clone(),
        haproxy.clone(),
        prometheus.clone(),
        alertmanager.clone(),
        grafana.clone(),
    ]);
    image(
        dir.path(),
        &gateway,
        &[(bins.join("gateway"), "/usr/bin/gateway"), (bins.join("echo-upstream"), "/usr/bin/echo-upstream")],
        &["gateway", "run"],
    );
    image(
        dir.path(),
        &etcd,
        &[(PathBuf::from("/usr/bin/etcd"), "/usr/bin/etcd"), (PathBuf::from("/usr/bin/etcdctl"), "/usr/bin/etcdctl")],
        &["etcd"],
    );
    image(dir.path(), &redis, &[(PathBuf::from("/usr/bin/redis-server"), "/usr/bin/redis-server")], &["redis-server"]);
    image(
        dir.path(),
        &jaeger,
        &[(bins.join("otlp-sink"), "/usr/bin/otlp-sink")],
        &["otlp-sink", "--listen", "0.0.0.0:4317"],
    );
    // At the paths of the public images, which docker-compose.yml names as entrypoints.
    image(dir.path(), &prometheus, &[(PathBuf::from(PROMETHEUS), "/bin/prometheus")], &["/bin/prometheus"]);
    // Debian's Alertmanager reads its notification templates at start.
    let (default, email) =
        ("/usr/share/prometheus/alertmanager/default.tmpl", "/usr/share/prometheus/alertmanager/email.tmpl");
    let files = [
        (PathBuf::from(ALERTMANAGER), "/bin/alertmanager"),
        (PathBuf::from(default), default),
        (PathBuf::from(email), email),
    ];
    image(dir.path(), &alertmanager, &files, &["/bin/alertmanager"]);
    let grafana_cmd = ["echo-upstream", "--listen", "0.0.0.0:3000", "--name", "grafana"];
    image(dir.path(), &grafana, &[(bins.join("echo-upstream"), "/usr/bin/echo-upstream")], &grafana_cmd);
    let with_haproxy = Path::new(HAPROXY).exists();
    if with_haproxy {
        let cmd = ["haproxy", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"];
        image(dir.path(), &haproxy, &[(PathBuf::from(HAPROXY), HAPROXY)], &cmd);
    }
    let (balancer_port, prometheus_port, alertmanager_port) = (free_port(), free_port(), free_port());
    let compose = Compose {
        project: format!("gwtest{tag}"),
        env: vec![
            ("GATEWAY_IMAGE".into(), gateway),
            ("ETCD_IMAGE".into(), etcd),
            ("REDIS_IMAGE".into(), redis),
            ("JAEGER_IMAGE".into(), jaeger),
            ("HAPROXY_IMAGE".into(), haproxy),
            ("LOAD_BALANCER_PORT".into(), balancer_port.to_string()),
            ("PROMETHEUS_IMAGE".into(), prometheus),
            ("ALERTMANAGER_IMAGE".into(), alertmanager),
            ("GRAFANA_IMAGE".into(), grafana),
            ("PROMETHEUS_PORT".into(), prometheus_port.to_string()),
            ("ALERTMANAGER_PORT".into(), alertmanager_port.to_string()),
            ("GRAFANA_PORT".into(), free_port().to_string()),
        ],
    };

    // Step 1 of the quickstart: docker compose up.
    run(compose.command().args(["up", "-d", "--no-build"]));
    let c = HttpClient::new();
    let get = |url: String| {
        let c = c.clone();
        async move { try_get(&c, &url).await }
    };
    // The loader applied examples/cluster.yaml: the demo answers at once, on every node.
    for port in [8000, 8010, 8020] {
        eventually(WAIT, "the demo route to answer", || async {
            get(format!("http://127.0.0.1:{port}/demo")).await.filter(|r| r.status == 200).map(|_| ())
        })
        .await;
    }
    for admin in [8001, 8011, 8021] {
        eventually(WAIT, "three members, etcd and Redis connected", || async {
            let status = get(format!("http://127.0.0.1:{admin}/status")).await?.json();
            let ready =
                status["cluster"]["members"] == 3 && status["etcd"] == "connected" && status["redis"] == "connected";
            ready.then_some(())
        })
        .await;
    }

    // Where to look (docs/monitoring.md): Prometheus scrapes the three nodes, with the alerting
    // rules, and sends to Alertmanager.
    let prometheus = format!("http://127.0.0.1:{prometheus_port}");
    eventually(WAIT, "Prometheus scraping three nodes", || async {
        let query = get(format!("{prometheus}/api/v1/query?query=sum(up%7Bjob%3D%22gateway%22%7D)")).await?.json();
        (query["data"]["result"][0]["value"][1] == "3").then_some(())
    })
    .await;
    let rules = get(format!("{prometheus}/api/v1/rules?type=alert")).await.expect("the rules").json();
    assert_eq!(rules["data"]["groups"][0]["rules"].as_array().map(Vec::len), Some(7), "{rules}");
    eventually(WAIT, "Prometheus to know Alertmanager", || async {
        let known = get(format!("{prometheus}/api/v1/alertmanagers")).await?.json();
        let active = known["data"]["activeAlertmanagers"].as_array()?;
        (!active.is_empty()).then_some(())
    })
    .await;
    eventually(WAIT, "Alertmanager ready", || async {
        let ready = get(format!("http://127.0.0.1:{alertmanager_port}/-/ready")).await?;
        (ready.status == 200).then_some(())
    })
    .await;

    // Step 2: write a service, an upstream, its targets and a route with etcdctl.
    for (key, value) in [
        ("/gateway/upstreams/orders-up", "{}"),
        ("/gateway/upstreams/orders-up/targets/echo-1:8080", "{}"),
        ("/gateway/upstreams/orders-up/targets/echo-2:8080", "{}"),
        ("/gateway/services/orders", r#"{"url": "http://orders-up"}"#),
        ("/gateway/routes/orders", r#"{"service": "orders", "paths": ["/orders"]}"#),
    ] {
        run(compose.command().args(["exec", "-T", "etcd", "etcdctl", "put", key, value]));
    }

    // Step 3: curl through each node.
    for port in [8000, 8010, 8020] {
        let reply = eventually(WAIT, "the new route on every node", || async {
            get(format!("http://127.0.0.1:{port}/orders")).await.filter(|r| r.status == 200)
        })
        .await;
        let instance = reply.instance();
        assert!(instance == "echo-1" || instance == "echo-2", "{instance}");
    }

    // Step 4: the trace, with the node that served it.
    get("http://127.0.0.1:8010/orders".into()).await.expect("a reply");
    eventually(WAIT, "gateway-2's spans at the collector", || async {
        let logs = compose.command().args(["logs", "--no-color", "jaeger"]).output().ok()?;
        String::from_utf8_lossy(&logs.stdout).contains("gateway-2 trace=").then_some(())
    })
    .await;

    // Step 5: a health reset on one node, seen on another.
    let reset =
        c.call(http::Method::PUT, "http://127.0.0.1:8001/upstreams/orders-up/targets/echo-2:8080/unhealthy", "").await;
    assert_eq!(reset.status, 204);
    eventually(WAIT, "the reset on gateway-3", || async {
        let health = get("http://127.0.0.1:8021/upstreams/orders-up/health".into()).await?.json();
        let echo2 = health["data"].as_array()?.iter().find(|t| t["target"] == "echo-2:8080")?.clone();
        (echo2["health"] == "UNHEALTHY").then_some(())
    })
    .await;

    // Step 6: the rate-limit headers of the demo route.
    let demo = get("http://127.0.0.1:8000/demo".into()).await.expect("a reply");
    assert_eq!(demo.header("x-ratelimit-limit-minute"), "600");
    assert!(!demo.header("ratelimit-remaining").is_empty());

    // Step 7: HTTPS on 8443, with the certificate gateway-1 made for localhost at start.
    let https = run(Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg("https://localhost:8443/demo"));
    assert_eq!(String::from_utf8_lossy(&https.stdout), "200");

    // Beyond the quickstart: the nodes restarted one at a time behind a load balancer.
    if !with_haproxy {
        eprintln!("no {HAPROXY} here: the rolling restart behind a load balancer is not run");
        return;
    }
    rolling_restart_behind_a_load_balancer(&compose, balancer_port).await;
    // The health set of step 5 outlived every node's restart.
    for (_, admin) in NODES {
        eventually(WAIT, "echo-2 still set unhealthy", || async {
            let health = get(format!("http://127.0.0.1:{admin}/upstreams/orders-up/health")).await?.json();
            let echo2 = health["data"].as_array()?.iter().find(|t| t["target"] == "echo-2:8080")?.clone();
            (echo2["health"] == "UNHEALTHY").then_some(())
        })
        .await;
    }
}

/// HAProxy in front of the three nodes, checking their readiness; steady load through it while
/// each node in turn is stopped (SIGTERM: it drains) and started again, the next one once it is
/// ready, a member of the cluster and sent requests again. No request fails.
async fn rolling_restart_behind_a_load_balancer(compose: &Compose, port: u16) {
    let begun = Instant::now();
    compose.run(&["up", "-d", "--no-build", "--no-deps", "load-balancer"]).await;
    let url = format!("http://127.0.0.1:{port}/orders");
    let client = HttpClient::new();
    eventually(WAIT, "the load balancer serving", || async {
        try_get(&client, &url).await.filter(|r| r.status == 200).map(|_| ())
    })
    .await;
    let load = Load::start(&url, 4);
    for (node, _) in NODES {
        eventually(WAIT, "every node sent requests", || async { (load.served_by(node) > 0).then_some(()) }).await;
    }
    for (node, admin) in NODES {
        let stop_took = stop_draining(compose, node).await;
        let stopped = Instant::now();
        let served = load.served_by(node);
        compose.run(&["start", node]).await;
        let ready = format!("http://127.0.0.1:{admin}/status/ready");
        eventually(WAIT, "the restarted node ready", || async {
            try_get(&client, &ready).await.filter(|r| r.status == 200).map(|_| ())
        })
        .await;
        eventually(WAIT, "three members on every node", || async {
            for (_, admin) in NODES {
                let status = try_get(&client, &format!("http://127.0.0.1:{admin}/status")).await?.json();
                (status["cluster"]["members"] == 3).then_some(())?;
            }
            Some(())
        })
        .await;
        eventually(WAIT, "the restarted node sent requests again", || async {
            (load.served_by(node) > served).then_some(())
        })
        .await;
        eprintln!("{node}: stopped in {stop_took:.1?}, back in the rotation {:.1?} later", stopped.elapsed());
    }
    let tally = load.stop().await;
    eprintln!(
        "rolling restart behind HAProxy: {} requests sent, {} failed, served by {:?}; {:.1?} in all",
        tally.sent,
        tally.failures.len(),
        tally.served_by,
        begun.elapsed()
    );
    assert!(tally.failures.is_empty(), "{} of {} failed: {:?}", tally.failures.len(), tally.sent, tally.failures);
}

/// Stops `node` as `docker compose stop` and `restart` do, with SIGTERM: the gateway, PID 1 of
/// its container, must have handled it, drained and exited 0 (Docker's SIGKILL after the
/// stop timeout would make it 137). Returns how long the stop took.
async fn stop_draining(compose: &Compose, node: &str) -> Duration {
    let id = String::from_utf8(compose.run(&["ps", "-q", node]).await.stdout).unwrap();
    let stopping = Instant::now();
    compose.run(&["stop", node]).await;
    let took = stopping.elapsed();
    let inspect = run(Command::new("docker").args(["inspect", "-f", "{{.State.ExitCode}}", id.trim()]));
    assert_eq!(String::from_utf8_lossy(&inspect.stdout).trim(), "0", "{node}'s exit code");
    let logs = compose.run(&["logs", "--no-color", node]).await;
    let drained = String::from_utf8_lossy(&logs.stdout).contains("serving on while load balancers notice");
    assert!(drained, "{node} did not log its drain");
    took
}

/// Steady GETs of one URL from a few clients at once, each one counted by the node that served
/// it (its `Via`), or as a failure.
struct Load {
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct Tally {
    sent: u64,
    served_by: BTreeMap<String, u64>,
    failures: Vec<String>,
}

impl Load {
    fn start(url: &str, clients: usize) -> Load {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let clients =
            (0..clients).map(|_| tokio::spawn(send_until(url.to_owned(), tally.clone(), stop.clone()))).collect();
        Load { tally, stop, clients }
    }

    fn served_by(&self, node: &str) -> u64 {
        self.tally.lock().unwrap().served_by.get(node).copied().unwrap_or(0)
    }

    async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.unwrap();
        }
        Arc::into_inner(self.tally).unwrap().into_inner().unwrap()
    }
}

/// One client of [`Load`], on a keep-alive connection of its own, until `stop`.
async fn send_until(url: String, tally: Arc<Mutex<Tally>>, stop: Arc<AtomicBool>) {
    let client = HttpClient::new();
    while !stop.load(Ordering::Relaxed) {
        let reply = tokio::time::timeout(Duration::from_secs(10), client.try_get(&url)).await;
        let mut tally = tally.lock().unwrap();
        tally.sent += 1;
        match reply {
            Ok(Ok(reply)) if reply.status == 200 => {
                let node = reply.header("via").trim_start_matches("1.1 ").to_owned();
                *tally.served_by.entry(node).or_default() += 1;
            }
            Ok(Ok(reply)) => tally.failures.push(format!("{}: {}", reply.status, String::from_utf8_lossy(&reply.body))),
            Ok(Err(e)) => tally.failures.push(e),
            Err(_) => tally.failures.push("no reply in 10 s".into()),
        }
    }
}
