//! The cluster with real gateway processes on loopback: nodes join by gossip, a killed node is
//! marked down by the others and rejoins as one entry, an operator's health reset on one node
//! reaches every other (and a node that starts later), and a node with the wrong key never
//! becomes a member.

use http::Method;
use serde_json::Value;
use std::time::Duration;
use tests::http::HttpClient;
use tests::{eventually, Gateway, Upstream};

const WAIT: Duration = Duration::from_secs(20);
const FAST: [&str; 4] = ["--cluster-probe-period-ms", "200", "--cluster-suspect-timeout-ms", "1000"];

fn config(echo: &Upstream) -> String {
    format!(
        "services: [{{ name: s, url: \"http://up\", routes: [{{ name: r, paths: [/] }}] }}]\n\
         upstreams: [{{ name: up, targets: [{{ target: \"{}\" }}] }}]",
        echo.addr
    )
}

async fn node(name: &str, echo: &Upstream, seed: Option<&Gateway>, key: &str) -> Gateway {
    let seeds = seed.map(|s| s.gossip.to_string()).unwrap_or_default();
    let mut flags: Vec<&str> = FAST.to_vec();
    if !seeds.is_empty() {
        flags.extend(["--cluster-seeds", &seeds]);
    }
    flags.extend(["--cluster-key", key]);
    Gateway::start_node(name, &config(echo), &flags, &[]).await
}

async fn members(gw: &Gateway) -> Vec<Value> {
    HttpClient::new().get(&gw.admin_url("/cluster/members")).await.json()["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The states of the members named `id` as `gw` sees them.
async fn states_of(gw: &Gateway, id: &str) -> Vec<String> {
    members(gw).await.iter().filter(|m| m["id"] == id).map(|m| m["state"].as_str().unwrap_or("").to_owned()).collect()
}

async fn alive(gw: &Gateway) -> usize {
    members(gw).await.iter().filter(|m| m["state"] == "alive").count()
}

async fn health_of(gw: &Gateway, echo: &Upstream) -> String {
    let h = HttpClient::new().get(&gw.admin_url("/upstreams/up/health")).await.json();
    let target = h["data"].as_array().unwrap().iter().find(|t| t["target"] == echo.addr.to_string()).cloned();
    target.map(|t| t["health"].as_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_lose_one_and_take_it_back_as_one_entry() {
    let echo = Upstream::start("a").await;
    let n1 = node("node-1", &echo, None, "s3cret").await;
    let n2 = node("node-2", &echo, Some(&n1), "s3cret").await;
    let mut n3 = node("node-3", &echo, Some(&n1), "s3cret").await;
    for gw in [&n1, &n2, &n3] {
        eventually(WAIT, "three alive members", || async { (alive(gw).await == 3).then_some(()) }).await;
    }
    let status = HttpClient::new().get(&n2.admin_url("/status")).await.json();
    assert_eq!(status["cluster"]["members"], 3, "{status}");
    let listed = members(&n1).await;
    let ids: Vec<&str> = listed.iter().map(|m| m["id"].as_str().unwrap()).collect();
    for id in ["node-1", "node-2", "node-3"] {
        assert!(ids.contains(&id), "{listed:?}");
    }
    assert!(listed.iter().all(|m| m["addr"].as_str().unwrap().starts_with("127.0.0.1:") && m["incarnation"].is_u64()));

    n3.signal("KILL");
    n3.wait(Duration::from_secs(5)).await;
    for gw in [&n1, &n2] {
        eventually(WAIT, "node-3 marked down", || async {
            let states = states_of(gw, "node-3").await;
            (states.iter().all(|s| s == "down") || states.is_empty()).then_some(())
        })
        .await;
        eventually(WAIT, "two alive members", || async { (alive(gw).await == 2).then_some(()) }).await;
    }

    let _n3 = node("node-3", &echo, Some(&n1), "s3cret").await;
    for gw in [&n1, &n2] {
        eventually(WAIT, "node-3 back as one alive entry", || async {
            (states_of(gw, "node-3").await == ["alive"]).then_some(())
        })
        .await;
    }
    let metrics = String::from_utf8_lossy(&HttpClient::new().get(&n1.admin_url("/metrics")).await.body).into_owned();
    assert!(metrics.contains("gateway_cluster_members{state=\"alive\"} 3"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_on_one_node_reaches_every_node() {
    let echo = Upstream::start("a").await;
    let n1 = node("node-1", &echo, None, "k").await;
    let n2 = node("node-2", &echo, Some(&n1), "k").await;
    let n3 = node("node-3", &echo, Some(&n1), "k").await;
    for gw in [&n1, &n2, &n3] {
        eventually(WAIT, "three alive members", || async { (alive(gw).await == 3).then_some(()) }).await;
    }
    let c = HttpClient::new();
    let reset = c.call(Method::PUT, &n1.admin_url(&format!("/upstreams/up/targets/{}/unhealthy", echo.addr)), "").await;
    assert_eq!(reset.status, 204);
    for gw in [&n1, &n2, &n3] {
        eventually(WAIT, "the target unhealthy", || async {
            (health_of(gw, &echo).await == "UNHEALTHY").then_some(())
        })
        .await;
        assert_eq!(c.get(&gw.url("/")).await.status, 503, "no healthy target left on any node");
    }
    assert!(n2.logged("health set received"));
    // A node that starts after the reset holds it too (durable state, by push-pull on joining).
    let n4 = node("node-4", &echo, Some(&n2), "k").await;
    eventually(WAIT, "the late node's target unhealthy", || async {
        (health_of(&n4, &echo).await == "UNHEALTHY").then_some(())
    })
    .await;
    // One view of every node's health, from any node.
    eventually(WAIT, "four members in the cluster's view", || async { (alive(&n3).await == 4).then_some(()) }).await;
    let view = c.get(&n3.admin_url("/cluster/health/up")).await.json();
    let mut nodes: Vec<&str> =
        view["data"].as_array().unwrap().iter().map(|v| v["node_id"].as_str().unwrap()).collect();
    assert_eq!(nodes[0], "node-3", "the asked node first: {view}");
    nodes.sort();
    assert_eq!(nodes, ["node-1", "node-2", "node-3", "node-4"], "{view}");
    assert!(view["data"].as_array().unwrap().iter().all(|v| v["data"][0]["health"] == "UNHEALTHY"), "{view}");
    assert_eq!(view["unanswered"], serde_json::json!([]), "{view}");
    assert_eq!(c.get(&n3.admin_url("/cluster/health/nope")).await.status, 404);
    let reset = c.call(Method::POST, &n3.admin_url(&format!("/upstreams/up/targets/{}/healthy", echo.addr)), "").await;
    assert_eq!(reset.status, 204);
    for gw in [&n1, &n2, &n3, &n4] {
        eventually(WAIT, "the target healthy again", || async {
            (health_of(gw, &echo).await != "UNHEALTHY").then_some(())
        })
        .await;
        assert_eq!(c.get(&gw.url("/")).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_key_never_becomes_a_member() {
    let echo = Upstream::start("a").await;
    let n1 = node("node-1", &echo, None, "right").await;
    let n2 = node("node-2", &echo, Some(&n1), "right").await;
    let stranger = node("stranger", &echo, Some(&n1), "wrong").await;
    for gw in [&n1, &n2] {
        eventually(WAIT, "two alive members", || async { (alive(gw).await == 2).then_some(()) }).await;
    }
    eventually(WAIT, "the stranger's packets to be rejected", || async {
        let metrics =
            String::from_utf8_lossy(&HttpClient::new().get(&n1.admin_url("/metrics")).await.body).into_owned();
        metrics.lines().any(|l| l.starts_with("gateway_gossip_rejected_total") && !l.ends_with(" 0")).then_some(())
    })
    .await;
    for gw in [&n1, &n2] {
        assert!(states_of(gw, "stranger").await.is_empty(), "{:?}", members(gw).await);
    }
    assert_eq!(alive(&stranger).await, 1, "the stranger is alone");
}

/// A key rotated across three running nodes through the admin API, in the three rounds the
/// cluster needs (new accepted, new sealing, old dropped): no member is lost on the way, and a
/// node with only the old key is kept out afterwards. Bad key lists are refused, keys unshown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_across_running_nodes_loses_no_member() {
    let echo = Upstream::start("a").await;
    let n1 = node("node-1", &echo, None, "old-key").await;
    let n2 = node("node-2", &echo, Some(&n1), "old-key").await;
    let n3 = node("node-3", &echo, Some(&n1), "old-key").await;
    let nodes = [&n1, &n2, &n3];
    for gw in nodes {
        eventually(WAIT, "three alive members", || async { (alive(gw).await == 3).then_some(()) }).await;
    }
    let c = HttpClient::new();
    for (round, keys) in [["old-key", "new-key"], ["new-key", "old-key"], ["new-key", ""]].iter().enumerate() {
        let keys: Vec<&str> = keys.iter().copied().filter(|k| !k.is_empty()).collect();
        for gw in nodes {
            let body = serde_json::json!({ "keys": keys }).to_string();
            let reply = c.call(Method::PUT, &gw.admin_url("/cluster/keys"), body).await;
            assert_eq!(reply.status, 204, "round {round}: {reply:?}");
        }
        // Every node's packets are opened by every other under the new rings: a cluster query
        // from each node gets the other two's answers.
        for gw in nodes {
            let view = c.get(&gw.admin_url("/cluster/health/up")).await.json();
            assert_eq!(view["data"].as_array().map(Vec::len), Some(3), "round {round}: {view}");
            assert_eq!(view["unanswered"], serde_json::json!([]), "round {round}: {view}");
            assert_eq!(alive(gw).await, 3, "round {round}");
        }
    }
    for gw in nodes {
        assert!(!gw.logged("cluster member down"), "a member was lost during the rotation");
        assert_eq!(alive(gw).await, 3);
        let metrics = String::from_utf8_lossy(&c.get(&gw.admin_url("/metrics")).await.body).into_owned();
        let auth = metrics.lines().find(|l| l.starts_with("gateway_gossip_rejected") && l.contains("reason=\"auth\""));
        assert!(auth.is_some_and(|l| l.ends_with(" 0")), "no packet failed its keys: {auth:?}");
    }
    // Only the new key opens the cluster now.
    let late = node("late", &echo, Some(&n1), "old-key").await;
    let rejected = |gw: &Gateway| {
        let url = gw.admin_url("/metrics");
        async move {
            let metrics = String::from_utf8_lossy(&HttpClient::new().get(&url).await.body).into_owned();
            metrics.lines().any(|l| l.contains("reason=\"auth\"") && !l.ends_with(" 0")).then_some(())
        }
    };
    eventually(WAIT, "the old key refused", || rejected(&n1)).await;
    assert!(states_of(&n1, "late").await.is_empty());
    drop(late);
    // Bad lists are refused and change nothing; nothing secret is echoed.
    for (body, expected) in [
        (r#"{"keys": []}"#, "at least one"),
        (r#"{"keys": ["new-key", ""]}"#, "keys[1]: must not be empty"),
        (r#"{"keys": "new-key"}"#, "the body must be"),
    ] {
        let reply = c.call(Method::PUT, &n2.admin_url("/cluster/keys"), body).await;
        assert_eq!(reply.status, 400, "{body}");
        let message = reply.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(expected) && !message.contains("new-key"), "{body}: {message}");
    }
    assert_eq!(c.call(Method::GET, &n2.admin_url("/cluster/keys"), "").await.status, 405);
    assert_eq!(alive(&n2).await, 3);
}
