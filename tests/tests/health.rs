//! Per-node health checks with Kong's semantics, against real upstreams: passive ejection,
//! active recovery, manual resets, 503 when nothing is left, the upstream threshold, health kept
//! across config changes, consistent hashing that keeps healthy keys in place, and a flapping
//! target that clients never notice.

use http::Method;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use tests::http::{HttpClient, Reply};
use tests::{eventually, Gateway, Upstream};

/// One upstream `up` over `targets`, behind a service on `/`, with `healthchecks` (YAML flow).
fn config(targets: &[&Upstream], algorithm: &str, healthchecks: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("{{ target: \"{}\" }}", t.addr)).collect();
    format!(
        r#"
services:
  - {{ name: s, url: "http://up", routes: [{{ name: r, paths: [/] }}] }}
upstreams:
  - name: up
    algorithm: {algorithm}
    hash_on: {hash_on}
    hash_on_header: x-user
    healthchecks: {healthchecks}
    targets: [{targets}]
"#,
        hash_on = if algorithm == "consistent-hashing" { "header" } else { "none" },
        targets = targets.join(", "),
    )
}

async fn health(c: &HttpClient, gw: &Gateway) -> Value {
    c.get(&gw.admin_url("/upstreams/up/health")).await.json()
}

/// The state the admin API reports for `target`.
async fn state_of(c: &HttpClient, gw: &Gateway, target: &Upstream) -> String {
    let h = health(c, gw).await;
    let entry = h["data"].as_array().unwrap().iter().find(|t| t["target"] == target.addr.to_string()).cloned();
    entry.map(|t| t["health"].as_str().unwrap().to_owned()).unwrap_or_default()
}

async fn wait_state(c: &HttpClient, gw: &Gateway, target: &Upstream, want: &str) {
    eventually(Duration::from_secs(10), &format!("{} to be {want}", target.name), || async {
        (state_of(c, gw, target).await == want).then_some(())
    })
    .await;
}

async fn reset(c: &HttpClient, gw: &Gateway, target: &Upstream, to: &str) -> Reply {
    c.call(Method::PUT, &gw.admin_url(&format!("/upstreams/up/targets/{}/{to}", target.addr)), "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_after_tcp_failures_is_invisible_to_get_clients() {
    let (a, b, c) = (Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await);
    let gw =
        Gateway::start(&config(&[&a, &b, &c], "round-robin", "{ passive: { unhealthy: { tcp_failures: 2 } } }")).await;
    let client = HttpClient::new();
    assert_eq!(state_of(&client, &gw, &c).await, "HEALTHY");
    c.drop_requests(true);
    for _ in 0..60 {
        let reply = client.get(&gw.url("/")).await;
        assert_eq!(reply.status, 200, "a GET retried past a broken target must succeed: {:?}", reply.body);
    }
    assert_eq!(state_of(&client, &gw, &c).await, "UNHEALTHY");
    assert!(gw.logged("target health changed"), "a state change is logged");
    assert!(gw.logs().iter().any(|l| l.contains("target health changed") && l.contains("tcp_failures")));

    // Passive checks never bring a target back: recovered, it stays out until an operator says so.
    c.drop_requests(false);
    for _ in 0..30 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
    assert_eq!(c.requests(), 0, "an unhealthy target takes no traffic");
    assert_eq!(state_of(&client, &gw, &c).await, "UNHEALTHY");
    assert_eq!(reset(&client, &gw, &c, "healthy").await.status, 204);
    assert_eq!(state_of(&client, &gw, &c).await, "HEALTHY");
    for _ in 0..30 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
    assert_eq!(c.requests(), 10, "after the reset it takes its share again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_http_failures_eject_after_exactly_the_threshold() {
    let (a, b, c) = (Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await);
    let gw =
        Gateway::start(&config(&[&a, &b, &c], "round-robin", "{ passive: { unhealthy: { http_failures: 3 } } }")).await;
    let client = HttpClient::new();
    c.force_status(500);
    let mut errors = 0;
    for _ in 0..60 {
        if client.get(&gw.url("/")).await.status == 500 {
            errors += 1;
        }
    }
    assert_eq!(errors, 3, "the 500s clients see are the ones that counted");
    assert_eq!(c.requests(), 3);
    let h = health(&client, &gw).await;
    let entry = h["data"].as_array().unwrap().iter().find(|t| t["target"] == c.addr.to_string()).unwrap().clone();
    assert_eq!(entry["health"], "UNHEALTHY");
    assert_eq!(entry["counters"]["http_failures"], 0, "a transition clears the counters");
    assert_eq!(h["health"], "HEALTHY", "two of three targets are left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_probes_eject_and_bring_back_a_target() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let checks = "{ active: { timeout: 1, healthy: { interval: 0.05, successes: 2 }, \
                  unhealthy: { interval: 0.05, http_failures: 2 } } }";
    let gw = Gateway::start(&config(&[&a, &b], "round-robin", checks)).await;
    let client = HttpClient::new();
    b.force_status(503);
    wait_state(&client, &gw, &b, "UNHEALTHY").await;
    let before = b.requests();
    for _ in 0..20 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
    assert!(a.requests() >= 20, "a took the traffic");
    // Only probes reach b while it is out (the unhealthy interval keeps probing it).
    b.force_status(0);
    wait_state(&client, &gw, &b, "HEALTHY").await;
    assert!(b.requests() > before, "probes kept reaching b");
    let served = eventually(Duration::from_secs(5), "b to take traffic again", || async {
        let r = client.get(&gw.url("/")).await;
        (r.instance() == "b").then_some(r)
    })
    .await;
    assert_eq!(served.status, 200);
    assert!(gw.logs().iter().any(|l| l.contains("target health changed") && l.contains("\"source\":\"active\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_probes_find_a_dead_target() {
    let a = Upstream::start("a").await;
    let mut dead = Upstream::start("dead").await;
    dead.stop().await;
    let checks = "{ active: { type: tcp, timeout: 0.5, healthy: { interval: 0.05 }, \
                  unhealthy: { interval: 0.05, tcp_failures: 1 } } }";
    let gw = Gateway::start(&config(&[&a, &dead], "round-robin", checks)).await;
    let client = HttpClient::new();
    wait_state(&client, &gw, &dead, "UNHEALTHY").await;
    assert_eq!(state_of(&client, &gw, &a).await, "HEALTHY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_target_gives_503_and_the_threshold_applies() {
    let (a, b, c) = (Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await);
    let gw = Gateway::start(&config(&[&a, &b, &c], "least-connections", "{ threshold: 50 }")).await;
    let client = HttpClient::new();
    assert_eq!(state_of(&client, &gw, &a).await, "HEALTHCHECKS_OFF");
    assert_eq!(reset(&client, &gw, &a, "unhealthy").await.status, 204);
    assert_eq!(state_of(&client, &gw, &a).await, "UNHEALTHY", "a manual set shows even with checks off");
    assert_eq!(client.get(&gw.url("/")).await.status, 200, "two thirds of the weight is healthy");
    reset(&client, &gw, &b, "unhealthy").await;
    let reply = client.get(&gw.url("/")).await;
    assert_eq!(reply.status, 503, "one third is under the 50% threshold");
    assert_eq!(reply.json()["message"], "no healthy target in upstream \"up\"");
    assert_eq!(health(&client, &gw).await["health"], "UNHEALTHY");
    reset(&client, &gw, &b, "healthy").await;
    assert_eq!(client.get(&gw.url("/")).await.status, 200);
    for t in [&a, &b, &c] {
        reset(&client, &gw, t, "unhealthy").await;
    }
    let reply = client.get(&gw.url("/")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("content-type"), "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_keep_the_health_of_unchanged_targets() {
    let (a, b, d) = (Upstream::start("a").await, Upstream::start("b").await, Upstream::start("d").await);
    let passive = "{ passive: { unhealthy: { tcp_failures: 5 } } }";
    let gw = Gateway::start(&config(&[&a, &b], "round-robin", passive)).await;
    let client = HttpClient::new();
    reset(&client, &gw, &b, "unhealthy").await;
    // Add a target and edit a threshold: b's state must survive both (Kong #7835).
    gw.write_config(&config(&[&a, &b, &d], "round-robin", "{ passive: { unhealthy: { tcp_failures: 7 } } }"));
    gw.signal("HUP");
    eventually(Duration::from_secs(10), "d to appear", || async {
        (!state_of(&client, &gw, &d).await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(state_of(&client, &gw, &b).await, "UNHEALTHY");
    assert_eq!(state_of(&client, &gw, &a).await, "HEALTHY");
    assert_eq!(state_of(&client, &gw, &d).await, "HEALTHY");
    for _ in 0..20 {
        assert_ne!(client.get(&gw.url("/")).await.instance(), "b");
    }
    // A target removed and added again starts afresh.
    gw.write_config(&config(&[&a, &d], "round-robin", passive));
    gw.signal("HUP");
    eventually(Duration::from_secs(10), "b to go", || async {
        state_of(&client, &gw, &b).await.is_empty().then_some(())
    })
    .await;
    gw.write_config(&config(&[&a, &b, &d], "round-robin", passive));
    gw.signal("HUP");
    wait_state(&client, &gw, &b, "HEALTHY").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_keeps_healthy_keys_in_place() {
    let (a, b, c) = (Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await);
    let gw = Gateway::start(&config(&[&a, &b, &c], "consistent-hashing", "{}")).await;
    let client = HttpClient::new();
    let mut placed = HashMap::new();
    for user in 0..60 {
        let user = format!("user-{user}");
        placed.insert(user.clone(), client.get_with(&gw.url("/"), &[("x-user", &user)]).await.instance());
    }
    assert!(placed.values().any(|i| i == "c"), "c owns some keys");
    reset(&client, &gw, &c, "unhealthy").await;
    for (user, before) in &placed {
        let now = client.get_with(&gw.url("/"), &[("x-user", user)]).await.instance();
        if before == "c" {
            assert_ne!(now, "c", "{user} must leave the unhealthy target");
        } else {
            assert_eq!(&now, before, "{user} was on a healthy target and must stay");
        }
    }
    reset(&client, &gw, &c, "healthy").await;
    for (user, before) in &placed {
        assert_eq!(&client.get_with(&gw.url("/"), &[("x-user", user)]).await.instance(), before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_target_causes_no_get_errors() {
    let (a, b, c) = (Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await);
    let checks =
        "{ active: { healthy: { interval: 0.02, successes: 1 }, unhealthy: { interval: 0.02, http_failures: 1 } }, \
                  passive: { unhealthy: { tcp_failures: 1 } } }";
    let gw = Gateway::start(&config(&[&a, &b, &c], "round-robin", checks)).await;
    let client = HttpClient::new();
    let flapping = std::sync::Arc::new(c);
    let flapper = {
        let c = flapping.clone();
        tokio::spawn(async move {
            for i in 0..200u32 {
                c.drop_requests(i % 2 == 0);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            c.drop_requests(false);
        })
    };
    for _ in 0..300 {
        let reply = client.get(&gw.url("/")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    flapper.abort();
    assert!(gw.logs().iter().filter(|l| l.contains("target health changed")).count() >= 2, "the target did flap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_answer_404_and_405_clearly() {
    let a = Upstream::start("a").await;
    let gw = Gateway::start(&config(&[&a], "round-robin", "{}")).await;
    let c = HttpClient::new();
    assert_eq!(c.get(&gw.admin_url("/upstreams/nope/health")).await.status, 404);
    let r = c.call(Method::PUT, &gw.admin_url("/upstreams/nope/targets/1.2.3.4:80/healthy"), "").await;
    assert_eq!(r.status, 404);
    assert!(r.json()["message"].as_str().unwrap().contains("nope"));
    let r = c.call(Method::POST, &gw.admin_url("/upstreams/up/targets/1.2.3.4:80/unhealthy"), "").await;
    assert_eq!(r.status, 404);
    let r = c.get(&gw.admin_url(&format!("/upstreams/up/targets/{}/healthy", a.addr))).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "PUT, POST");
    let r = c.call(Method::POST, &gw.admin_url(&format!("/upstreams/up/targets/{}/unhealthy", a.addr)), "").await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_follow_targets_in_and_out_of_the_config() {
    let (a, b, c) = (Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await);
    let checks = "{ active: { healthy: { interval: 0.05 }, unhealthy: { interval: 0.05, http_failures: 1 } } }";
    let gw = Gateway::start(&config(&[&a, &b], "round-robin", checks)).await;
    let client = HttpClient::new();
    // No traffic is sent: every request an echo sees is a probe.
    eventually(Duration::from_secs(5), "a and b to be probed", || async {
        (a.requests() > 0 && b.requests() > 0).then_some(())
    })
    .await;
    assert_eq!(c.requests(), 0);

    gw.write_config(&config(&[&a, &c], "round-robin", checks));
    gw.signal("HUP");
    eventually(Duration::from_secs(5), "c to be probed", || async { (c.requests() > 0).then_some(()) }).await;
    eventually(Duration::from_secs(5), "b to leave", || async {
        state_of(&client, &gw, &b).await.is_empty().then_some(())
    })
    .await;
    let b_seen = b.requests();
    let a_seen = a.requests();
    eventually(Duration::from_secs(5), "a to be probed five more times", || async {
        (a.requests() >= a_seen + 5).then_some(())
    })
    .await;
    assert!(b.requests() <= b_seen + 1, "b is no longer probed ({} after {b_seen})", b.requests());
}
