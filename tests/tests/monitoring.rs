//! The monitoring of docs/monitoring.md against real processes: a real Prometheus (Debian's
//! binary) scraping a real three-node cluster, with the alerting rules of
//! deploy/prometheus/alerts.yml, and a real Alertmanager (where Debian's package is installed)
//! sending what fires to a webhook receiver run by the test. A target killed on every node fires
//! `GatewayHealthyTargetsLow`, a route answering 500s fires `GatewayHighErrorRate`, a node killed
//! fires `GatewayClusterMemberDown`; each stops once repaired. Also: a node's `/metrics` passes
//! `promtool check metrics`.
//!
//! The rules are the file's own, with only their durations shortened (see [`shortened`]):
//! Prometheus scrapes and evaluates every second.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tests::collector::Collector;
use tests::http::HttpClient;
use tests::{eventually, free_port, Gateway, TempDir, Upstream};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// Each alert's wait: detection, a few scrapes and evaluations, the shortened `for:`.
const WAIT: Duration = Duration::from_secs(30);
const FAST_GOSSIP: [&str; 4] = ["--cluster-probe-period-ms", "200", "--cluster-suspect-timeout-ms", "1000"];
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
/// What the rules' durations become in the test: every `for:` and every range selector.
const TEST_FOR: &str = "3s";
const TEST_RANGE: &str = "10s";

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// deploy/prometheus/alerts.yml with its durations shortened for a test, the one substitution
/// docs/monitoring.md describes: every `for: <n>m` becomes `for: 3s` and every range `[<n>m]`
/// becomes `[10s]`; nothing else changes. Panics if the file no longer has its seven `for:`.
fn shortened(rules: &str) -> String {
    let mut out = String::with_capacity(rules.len());
    let mut fors = 0;
    for line in rules.lines() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        if let Some(duration) = body.strip_prefix("for: ") {
            assert!(is_minutes(duration), "alerts.yml: `for: {duration}` is not in minutes");
            out.push_str(&format!("{indent}for: {TEST_FOR}\n"));
            fors += 1;
            continue;
        }
        let mut rest = line;
        while let Some(open) = rest.find('[') {
            let close = rest[open..].find(']').map(|c| open + c);
            match close.filter(|&c| is_minutes(&rest[open + 1..c])) {
                Some(close) => {
                    out.push_str(&rest[..open]);
                    out.push_str(&format!("[{TEST_RANGE}]"));
                    rest = &rest[close + 1..];
                }
                None => {
                    out.push_str(&rest[..=open]);
                    rest = &rest[open + 1..];
                }
            }
        }
        out.push_str(rest);
        out.push('\n');
    }
    assert_eq!(fors, 7, "alerts.yml: one `for:` per alert");
    out
}

fn is_minutes(duration: &str) -> bool {
    duration.strip_suffix('m').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A server process of the test (Prometheus, Alertmanager), its log in its directory; killed
/// when dropped, its log printed if the test failed.
struct Server {
    name: &'static str,
    child: Child,
    dir: TempDir,
    url: String,
}

impl Server {
    /// Starts `binary` with `args`, then waits for `GET /-/ready` to answer 200.
    async fn start(name: &'static str, binary: &str, dir: TempDir, port: u16, args: &[String]) -> Server {
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(binary)
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e}; install Debian's `prometheus` package (scripts/test does)"));
        let server = Server { name, child, dir, url: format!("http://127.0.0.1:{port}") };
        let c = HttpClient::new();
        eventually(WAIT, &format!("{name} ready"), || async {
            let reply = c.try_get(&format!("{}/-/ready", server.url)).await.ok()?;
            (reply.status == 200).then_some(())
        })
        .await;
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            eprintln!("--- {} log ---\n{log}", self.name);
        }
    }
}

async fn start_alertmanager(webhook: &str) -> Server {
    let dir = TempDir::new();
    let config = format!(
        "route:\n  receiver: test\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n  \
         repeat_interval: 1h\nreceivers:\n  - name: test\n    webhook_configs:\n      - url: {webhook}\n        \
         send_resolved: true\n"
    );
    std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
    let port = free_port();
    let args = [
        "--config.file=alertmanager.yml".to_owned(),
        "--storage.path=data".to_owned(),
        format!("--web.listen-address=127.0.0.1:{port}"),
        // One instance, no gossip port of its own.
        "--cluster.listen-address=".to_owned(),
    ];
    Server::start("alertmanager", ALERTMANAGER, dir, port, &args).await
}

async fn start_prometheus(nodes: &[String], alertmanager: Option<&Server>) -> Server {
    let dir = TempDir::new();
    let rules = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap();
    std::fs::write(dir.path().join("alerts.yml"), shortened(&rules)).unwrap();
    let targets = nodes.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
    let alerting = match alertmanager {
        Some(am) => format!(
            "alerting:\n  alertmanagers:\n    - static_configs: [{{ targets: [\"{}\"] }}]\n",
            am.url.trim_start_matches("http://")
        ),
        None => String::new(),
    };
    let config = format!(
        "global: {{ scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }}\n\
         rule_files: [alerts.yml]\n{alerting}\
         scrape_configs:\n  - job_name: gateway\n    static_configs: [{{ targets: [{targets}] }}]\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let args = [
        "--config.file=prometheus.yml".to_owned(),
        "--storage.tsdb.path=data".to_owned(),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn".to_owned(),
    ];
    Server::start("prometheus", "prometheus", dir, port, &args).await
}

/// The alerts named `name` in `state` (`firing`, `pending`) in Prometheus's `/api/v1/alerts`,
/// by their labels.
async fn alerts(prometheus: &Server, name: &str, state: &str) -> Vec<Value> {
    let reply = HttpClient::new().get(&format!("{}/api/v1/alerts", prometheus.url)).await.json();
    let all = reply["data"]["alerts"].as_array().cloned().unwrap_or_default();
    all.into_iter()
        .filter(|a| a["labels"]["alertname"] == name && a["state"] == state)
        .map(|a| a["labels"].clone())
        .collect()
}

/// The `instance` labels of the firing alerts named `name`.
async fn firing_on(prometheus: &Server, name: &str) -> BTreeSet<String> {
    alerts(prometheus, name, "firing").await.iter().filter_map(|l| l["instance"].as_str().map(str::to_owned)).collect()
}

async fn wait_firing_on(prometheus: &Server, name: &str, instances: &BTreeSet<String>) {
    eventually(WAIT, &format!("{name} firing on {instances:?}"), || async {
        let firing = firing_on(prometheus, name).await;
        instances.is_subset(&firing).then_some(())
    })
    .await;
}

/// Waits until no alert named `name` is firing or pending.
async fn wait_quiet(prometheus: &Server, name: &str) {
    eventually(WAIT, &format!("{name} to stop"), || async {
        let quiet =
            alerts(prometheus, name, "firing").await.is_empty() && alerts(prometheus, name, "pending").await.is_empty();
        quiet.then_some(())
    })
    .await;
}

/// Waits until the webhook got `name` with `status` (`firing`, `resolved`) from Alertmanager.
async fn wait_webhook(webhook: &Collector, name: &str, status: &str) {
    eventually(WAIT, &format!("{name} {status} at the webhook"), || async {
        let reached = webhook.batches().iter().any(|b| {
            let alerts = b.body["alerts"].as_array().cloned().unwrap_or_default();
            alerts.iter().any(|a| a["labels"]["alertname"] == name && a["status"] == status)
        });
        reached.then_some(())
    })
    .await;
}

fn config(a: &Upstream, b: &Upstream, failing: &Upstream) -> String {
    format!(
        r#"
services:
  - {{ name: ok, url: "http://up", routes: [{{ name: ok, paths: [/ok] }}] }}
  - {{ name: bad, url: "http://{failing}", routes: [{{ name: bad, paths: [/bad] }}] }}
upstreams:
  - name: up
    healthchecks:
      active:
        timeout: 0.5
        healthy: {{ interval: 0.1, successes: 1 }}
        unhealthy: {{ interval: 0.1, tcp_failures: 1, http_failures: 1, timeouts: 1 }}
    targets: [{{ target: "{a}" }}, {{ target: "{b}" }}]
"#,
        a = a.addr,
        b = b.addr,
        failing = failing.addr,
    )
}

async fn node(id: &str, yaml: &str, seed: Option<&str>, (proxy, admin): (u16, u16)) -> Gateway {
    let mut flags = FAST_GOSSIP.to_vec();
    if let Some(seed) = seed {
        flags.extend(["--cluster-seeds", seed]);
    }
    Gateway::start_at(id, yaml, &flags, proxy, admin).await
}

/// Steady traffic to `/ok` and `/bad` on every node until stopped, so that rates move.
fn load(urls: Vec<String>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = HttpClient::new();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            for url in &urls {
                // A killed node refuses; that is the point of one case.
                let _ = tokio::time::timeout(Duration::from_secs(1), c.try_get(url)).await;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_and_resolves_the_gateway_alerts() {
    let (a, mut b, failing) = (Upstream::start("a").await, Upstream::start("b").await, Upstream::start("f").await);
    let yaml = config(&a, &b, &failing);
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let n1 = node("node-1", &yaml, None, ports[0]).await;
    let seed = n1.gossip.to_string();
    let n2 = node("node-2", &yaml, Some(&seed), ports[1]).await;
    let mut n3 = node("node-3", &yaml, Some(&seed), ports[2]).await;
    let admins: Vec<String> = ports.iter().map(|(_, admin)| format!("127.0.0.1:{admin}")).collect();
    let every_node: BTreeSet<String> = admins.iter().cloned().collect();

    let webhook = Collector::start().await;
    let alertmanager = if Path::new(ALERTMANAGER).exists() {
        Some(start_alertmanager(&webhook.url("/alerts")).await)
    } else {
        eprintln!("{ALERTMANAGER} is not installed: alerts are checked in Prometheus only, not at a webhook");
        None
    };
    let prometheus = start_prometheus(&admins, alertmanager.as_ref()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let urls = ports.iter().flat_map(|(p, _)| ["ok", "bad"].map(|r| format!("http://127.0.0.1:{p}/{r}"))).collect();
    let traffic = load(urls, stop.clone());

    // Every node scraped, all on one config: nothing fires.
    let c = HttpClient::new();
    eventually(WAIT, "three nodes scraped, one config hash", || async {
        let query = format!(
            "{}/api/v1/query?query=count(gateway_config_info)%20and%20count(count%20by(hash)(gateway_config_info))==1",
            prometheus.url
        );
        let reply = c.get(&query).await.json();
        (reply["data"]["result"][0]["value"][1] == "3").then_some(())
    })
    .await;
    assert!(alerts(&prometheus, "GatewayConfigDiverged", "pending").await.is_empty());

    // A target killed: under 70% of `up` healthy on every node.
    b.stop().await;
    wait_firing_on(&prometheus, "GatewayHealthyTargetsLow", &every_node).await;
    if alertmanager.is_some() {
        wait_webhook(&webhook, "GatewayHealthyTargetsLow", "firing").await;
    }
    b.restart().await;
    wait_quiet(&prometheus, "GatewayHealthyTargetsLow").await;
    if alertmanager.is_some() {
        wait_webhook(&webhook, "GatewayHealthyTargetsLow", "resolved").await;
    }

    // A route answering 500s: half of every node's requests are 5xx.
    failing.force_status(500);
    wait_firing_on(&prometheus, "GatewayHighErrorRate", &every_node).await;
    failing.force_status(0);
    wait_quiet(&prometheus, "GatewayHighErrorRate").await;

    // A node killed: Prometheus cannot scrape it; it comes back where it was.
    n3.signal("KILL");
    n3.wait(Duration::from_secs(5)).await;
    wait_firing_on(&prometheus, "GatewayClusterMemberDown", &BTreeSet::from([admins[2].clone()])).await;
    let _n3 = node("node-3", &yaml, Some(&seed), ports[2]).await;
    wait_quiet(&prometheus, "GatewayClusterMemberDown").await;

    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    drop((n1, n2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_exposition_passes_promtool_check_metrics() {
    let (a, b, failing) = (Upstream::start("a").await, Upstream::start("b").await, Upstream::start("f").await);
    let gw = Gateway::start(&config(&a, &b, &failing)).await;
    let c = HttpClient::new();
    failing.flaky_status(500);
    for _ in 0..10 {
        c.get(&gw.url("/ok")).await;
        c.get(&gw.url("/bad")).await;
    }
    c.get(&gw.url("/nowhere")).await;
    let reply = c.get_with(&gw.admin_url("/metrics"), &[("accept", "text/plain")]).await;
    assert!(reply.header("content-type").starts_with("text/plain; version=0.0.4"), "{}", reply.header("content-type"));
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    for metric in [
        "gateway_http_requests_total{",
        "gateway_request_latency_ms_bucket{",
        "gateway_upstream_latency_ms_bucket{",
        "gateway_upstream_target_health{",
        "gateway_config_info{",
        "gateway_client_connections ",
        "gateway_client_bytes_total{",
        "gateway_ratelimit_fallback_active ",
        "gateway_cluster_members{",
    ] {
        assert!(text.contains(metric), "{metric} missing:\n{text}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool; install Debian's `prometheus` package (scripts/test does)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).await.unwrap();
    let out = promtool.wait_with_output().await.unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The contract's latency names end in `_ms` (SPEC.md, "Metrics"), where Prometheus's naming
    // guide wants `_seconds`: the one lint allowed, and only for those two (exit status 3 is
    // "lint problems"; a parse error is 1).
    let allowed = [
        "gateway_request_latency_ms metric names should not contain abbreviated units",
        "gateway_upstream_latency_ms metric names should not contain abbreviated units",
    ];
    let problems: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty() && !allowed.contains(l)).collect();
    assert!(
        problems.is_empty() && matches!(out.status.code(), Some(0 | 3)),
        "promtool check metrics ({}):\n{said}\n---\n{text}",
        out.status
    );
}
