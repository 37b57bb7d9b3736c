//! The cluster on a real network: each node in its own network namespace with its own address,
//! gossip crossing a bridge, cut by the test with iptables in a node's namespace. Skipped, with
//! the reason printed, where namespaces cannot be made (not root, no `ip` or `iptables`).

use http::Method;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::http::HttpClient;
use tests::netns::Network;
use tests::{eventually, Gateway, Upstream};

const WAIT: Duration = Duration::from_secs(30);
const PUSH_PULL_MS: u64 = 1000;
const FAST: [&str; 6] = [
    "--cluster-probe-period-ms",
    "200",
    "--cluster-suspect-timeout-ms",
    "1000",
    "--cluster-push-pull-interval-ms",
    "1000",
];

fn network(nodes: usize) -> Option<Network> {
    match Network::new(nodes) {
        Ok(network) => Some(network),
        Err(reason) => {
            eprintln!("skipped: this machine cannot make network namespaces ({reason})");
            None
        }
    }
}

fn config(echo: &Upstream) -> String {
    format!(
        "services: [{{ name: s, url: \"http://up\", routes: [{{ name: r, paths: [/] }}] }}]\n\
         upstreams: [{{ name: up, targets: [{{ target: \"{}\" }}] }}]",
        echo.addr
    )
}

/// Three nodes, one per namespace, seeded from the first.
async fn cluster(network: &Network, echo: &Upstream) -> Vec<Gateway> {
    let seed = format!("{}:7946", network.node_ip(0));
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut flags = FAST.to_vec();
        if i > 0 {
            flags.extend(["--cluster-seeds", &seed]);
        }
        nodes.push(Gateway::start_in(network, i, &format!("node-{}", i + 1), &config(echo), &flags).await);
    }
    for gw in &nodes {
        eventually(WAIT, "three alive members", || async { (states(gw).await.len() == 3).then_some(()) }).await;
        eventually(WAIT, "three alive members", || async { all_alive(gw, 3).await.then_some(()) }).await;
    }
    nodes
}

async fn states(gw: &Gateway) -> Vec<(String, String)> {
    let members = HttpClient::new().get(&gw.admin_url("/cluster/members")).await.json();
    let list = members["data"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|m| (m["id"].as_str().unwrap_or("").to_owned(), m["state"].as_str().unwrap_or("").to_owned()))
        .collect()
}

async fn all_alive(gw: &Gateway, n: usize) -> bool {
    let states = states(gw).await;
    states.len() == n && states.iter().all(|(_, state)| state == "alive")
}

/// Healthy reads `HEALTHCHECKS_OFF` here (no checks configured, as Kong says it).
const HEALTHY: &str = "HEALTHCHECKS_OFF";

async fn health_of(gw: &Gateway, echo: &Upstream) -> String {
    let h: Value = HttpClient::new().get(&gw.admin_url("/upstreams/up/health")).await.json();
    let target = h["data"].as_array().and_then(|t| t.iter().find(|t| t["target"] == echo.addr.to_string()).cloned());
    target.map(|t| t["health"].as_str().unwrap_or("").to_owned()).unwrap_or_default()
}

async fn set_health(gw: &Gateway, echo: &Upstream, state: &str) {
    let url = gw.admin_url(&format!("/upstreams/up/targets/{}/{state}", echo.addr));
    assert_eq!(HttpClient::new().call(Method::PUT, &url, "").await.status, 204);
}

async fn wait_health(gw: &Gateway, echo: &Upstream, wanted: &str) {
    eventually(WAIT, &format!("{wanted} on {}", gw.admin), || async {
        (health_of(gw, echo).await == wanted).then_some(())
    })
    .await;
}

/// The first two cases on one cut: a 2 + 1 partition that lasts longer than cluster
/// messages are kept (60 s), during which an operator sets the target unhealthy on one node and
/// healthy on another. Once healed: one membership view with nobody down, and the cut-off node
/// holds the final set within a push-pull interval of being back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_past_the_message_retention_comes_back_with_every_health_set() {
    let Some(network) = network(3) else { return };
    let echo = Upstream::start_on(network.host_ip(), "a").await;
    let nodes = cluster(&network, &echo).await;
    // Before the cut: unhealthy everywhere.
    set_health(&nodes[0], &echo, "unhealthy").await;
    for gw in &nodes {
        wait_health(gw, &echo, "UNHEALTHY").await;
    }

    network.cut_gossip(2);
    let cut_at = Instant::now();
    for (gw, down) in [(&nodes[0], &["node-3"][..]), (&nodes[1], &["node-3"]), (&nodes[2], &["node-1", "node-2"])] {
        eventually(WAIT, "the other side down", || async {
            let states = states(gw).await;
            down.iter().all(|d| states.iter().any(|(id, s)| id == d && s == "down")).then_some(())
        })
        .await;
    }
    set_health(&nodes[0], &echo, "unhealthy").await;
    set_health(&nodes[1], &echo, "healthy").await;
    for gw in &nodes[..2] {
        wait_health(gw, &echo, HEALTHY).await;
    }
    // The cut lasts past the 60 s a message is kept; the node on the other side hears nothing.
    let retention = Duration::from_secs(60);
    while cut_at.elapsed() < retention + Duration::from_secs(2) {
        assert_eq!(health_of(&nodes[2], &echo).await, "UNHEALTHY", "the cut-off node heard of the set");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    network.heal_gossip(2);
    let healed_at = Instant::now();
    for gw in &nodes {
        eventually(WAIT, "one membership view, nobody down", || async { all_alive(gw, 3).await.then_some(()) }).await;
    }
    let rejoined = healed_at.elapsed();
    wait_health(&nodes[2], &echo, HEALTHY).await;
    let took = healed_at.elapsed();
    eprintln!("healed: one view in {rejoined:?}, the final set on the cut-off node in {took:?}");
    assert!(
        took <= rejoined + Duration::from_millis(PUSH_PULL_MS) + Duration::from_millis(500),
        "the set took {took:?}, membership {rejoined:?}"
    );
    for (i, gw) in nodes.iter().enumerate() {
        let health = health_of(gw, &echo).await;
        if health != HEALTHY {
            let sets = gw.logs().into_iter().filter(|l| l.contains("health")).collect::<Vec<_>>().join("\n");
            panic!("node-{} reads {health}; its health log:\n{sets}", i + 1);
        }
        let states = states(gw).await;
        for id in ["node-1", "node-2", "node-3"] {
            assert_eq!(states.iter().filter(|(i, _)| i == id).count(), 1, "{id} listed once: {states:?}");
        }
    }
}

/// A node killed with SIGKILL under load: the others mark it down, their clients see no error,
/// and the restarted node rejoins as one entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_costs_the_other_nodes_clients_nothing() {
    let Some(network) = network(3) else { return };
    let echo = Upstream::start_on(network.host_ip(), "a").await;
    let mut nodes = cluster(&network, &echo).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for gw in &nodes[..2] {
        let (url, stop, sent, failed) = (gw.url("/"), stop.clone(), sent.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let client = HttpClient::new();
            while !stop.load(Ordering::Relaxed) {
                let status = client.try_get(&url).await.map(|reply| reply.status.as_u16());
                sent.fetch_add(1, Ordering::Relaxed);
                if status.ok() != Some(200) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    eventually(WAIT, "load flowing", || async { (sent.load(Ordering::Relaxed) > 100).then_some(()) }).await;

    nodes[2].signal("KILL");
    nodes[2].wait(Duration::from_secs(5)).await;
    for gw in &nodes[..2] {
        eventually(WAIT, "node-3 down", || async {
            states(gw).await.iter().any(|(id, s)| id == "node-3" && s == "down").then_some(())
        })
        .await;
    }
    let seed = format!("{}:7946", network.node_ip(0));
    let mut flags = FAST.to_vec();
    flags.extend(["--cluster-seeds", &seed]);
    nodes[2] = Gateway::start_in(&network, 2, "node-3", &config(&echo), &flags).await;
    for gw in &nodes {
        eventually(WAIT, "node-3 back as one alive entry", || async {
            let states = states(gw).await;
            let entries: Vec<_> = states.iter().filter(|(id, _)| id == "node-3").collect();
            (all_alive(gw, 3).await && entries.len() == 1).then_some(())
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{sent} requests to the two other nodes while node-3 was killed and came back, {failed} failed");
    assert_eq!(failed, 0, "of {sent}");
}
