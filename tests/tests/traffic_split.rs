//! `traffic-split` end to end, through real gateway processes and echo upstreams that answer
//! with their names: a canary by header or query argument (every marked request to the new
//! upstream, no other), a weighted split over 3,000 requests within three points of its
//! weights, a blue-green switch by a config reload, a split to an upstream without a healthy
//! target answering 503 as the service would, and bad values (an unknown upstream, weights all
//! zero) kept out with their paths while the rest serves.

use http::Method;
use std::collections::HashMap;
use std::time::Duration;
use tests::http::HttpClient;
use tests::{closed_port, eventually, run_gateway, Etcd, Gateway, TempDir, Upstream};

const WAIT: Duration = Duration::from_secs(20);

/// Service `orders` on upstream `orders-v1` (path `/api`) with `routes` (YAML flow mappings),
/// upstreams `orders-v1` and `orders-v2` on `v1` and `v2`, and `extra` upstreams (YAML list
/// items).
fn config(v1: &Upstream, v2: &Upstream, routes: &[&str], extra: &str) -> String {
    let routes = routes.iter().map(|r| format!("      - {r}\n")).collect::<String>();
    format!(
        "services:\n  - name: orders\n    url: http://orders-v1/api\n    routes:\n{routes}\
         upstreams:\n  - {{ name: orders-v1, targets: [{{ target: \"{}\" }}] }}\n  \
         - {{ name: orders-v2, targets: [{{ target: \"{}\" }}] }}\n{extra}",
        v1.addr, v2.addr
    )
}

/// Which instance answers `n` GETs of `url` with `headers`, sent by `tasks` concurrent clients:
/// the count by instance name.
async fn answers(url: &str, headers: &[(&str, &str)], n: usize, tasks: usize) -> HashMap<String, usize> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (url, client) = (url.to_owned(), HttpClient::new());
        let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        let share = n / tasks + usize::from(t < n % tasks);
        handles.push(tokio::spawn(async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut seen = Vec::with_capacity(share);
            for _ in 0..share {
                let reply = client.get_with(&url, &headers).await;
                assert_eq!(reply.status, 200, "{reply:?}");
                seen.push(reply.instance());
            }
            seen
        }));
    }
    let mut counts = HashMap::new();
    for handle in handles {
        for instance in handle.await.expect("a client task") {
            *counts.entry(instance).or_default() += 1;
        }
    }
    counts
}

fn only(name: &str, n: usize) -> HashMap<String, usize> {
    HashMap::from([(name.to_owned(), n)])
}

async fn metrics(gw: &Gateway) -> String {
    String::from_utf8_lossy(&HttpClient::new().get(&gw.admin_url("/metrics")).await.body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_by_header_or_query_takes_every_marked_request_and_no_other() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let canary = r#"{ name: canary, paths: [/canary], plugins: { traffic-split: { rules: [
        { match: { headers: { X-Canary: "1" } }, weighted_upstreams: [{ upstream: orders-v2 }] },
        { match: { query: { canary: "yes" } }, weighted_upstreams: [{ upstream: orders-v2 }] } ] } } }"#;
    let gw = Gateway::start(&config(&v1, &v2, &[&canary.replace('\n', " ")], "")).await;
    let url = gw.url("/canary/orders/7");

    assert_eq!(answers(&url, &[("x-canary", "1")], 100, 4).await, only("v2", 100));
    assert_eq!(answers(&url, &[], 100, 4).await, only("v1", 100));
    assert_eq!(answers(&url, &[("x-canary", "0")], 20, 2).await, only("v1", 20), "values are exact");
    assert_eq!(answers(&format!("{url}?canary=yes"), &[], 20, 2).await, only("v2", 20));
    assert_eq!(answers(&format!("{url}?canary=no"), &[], 20, 2).await, only("v1", 20));

    // The canary gets the request as the service would send it: its path, the target's Host.
    let reply = HttpClient::new().get_with(&url, &[("x-canary", "1")]).await;
    assert_eq!(reply.json()["uri"], "/api/orders/7");
    assert_eq!(reply.json()["headers"]["host"], v2.addr.to_string());
    assert_eq!(v1.requests(), 140);
    assert_eq!(v2.requests(), 121);

    let text = metrics(&gw).await;
    assert!(text.contains(r#"gateway_traffic_split_total{route="canary",upstream="orders-v2"} 121"#), "{text}");
    assert!(text.contains(r#"gateway_traffic_split_total{route="canary",upstream="(service)"} 140"#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_split_over_3000_requests_is_within_three_points_of_its_weights() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let weighted = "{ name: weighted, paths: [/weighted], plugins: { traffic-split: { rules: [ \
                    { weighted_upstreams: [{ upstream: orders-v2, weight: 20 }, { weight: 80 }] } ] } } }";
    let gw = Gateway::start(&config(&v1, &v2, &[weighted], "")).await;

    let n = 3_000;
    let counts = answers(&gw.url("/weighted"), &[], n, 8).await;
    let share = |name: &str| counts.get(name).copied().unwrap_or(0) as f64 * 100.0 / n as f64;
    assert!((share("v2") - 20.0).abs() <= 3.0, "{counts:?}");
    assert!((share("v1") - 80.0).abs() <= 3.0, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_switch_moves_every_request_on_a_reload() {
    let (blue, green) = (Upstream::start("blue").await, Upstream::start("green").await);
    let route = |blue: u32, green: u32| {
        format!(
            "{{ name: bg, paths: [/bg], plugins: {{ traffic-split: {{ rules: [ {{ weighted_upstreams: [ \
             {{ upstream: orders-v1, weight: {blue} }}, {{ upstream: orders-v2, weight: {green} }} ] }} ] }} }} }}"
        )
    };
    let gw = Gateway::start(&config(&blue, &green, &[&route(100, 0)], "")).await;
    assert_eq!(answers(&gw.url("/bg"), &[], 50, 2).await, only("blue", 50));

    gw.write_config(&config(&blue, &green, &[&route(0, 100)], ""));
    gw.signal("HUP");
    eventually(WAIT, "the reload to be applied", || async {
        (gw.status().await["config"]["version"] == 2).then_some(())
    })
    .await;
    assert_eq!(answers(&gw.url("/bg"), &[], 50, 2).await, only("green", 50));
    assert_eq!(blue.requests(), 50, "no request reached blue after the switch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_to_an_upstream_without_a_healthy_target_answers_503_as_the_service_would() {
    let v1 = Upstream::start("v1").await;
    let dead = closed_port();
    let split = |name: &str, upstream: &str| {
        format!(
            "{{ name: {name}, paths: [/{name}], plugins: {{ traffic-split: {{ rules: [ \
             {{ weighted_upstreams: [{{ upstream: {upstream} }}] }} ] }} }} }}"
        )
    };
    let (split_empty, split_dark) = (split("split-empty", "empty"), split("split-dark", "dark"));
    let yaml = format!(
        r#"
services:
  - name: orders
    url: http://orders-v1
    routes: [{split_empty}, {split_dark}]
  - {{ name: direct-empty, url: "http://empty", routes: [{{ name: direct-empty, paths: [/direct-empty] }}] }}
  - {{ name: direct-dark, url: "http://dark", routes: [{{ name: direct-dark, paths: [/direct-dark] }}] }}
upstreams:
  - {{ name: orders-v1, targets: [{{ target: "{v1}" }}] }}
  - {{ name: empty }}
  - name: dark
    targets: [{{ target: "{dead}" }}]
    healthchecks: {{ passive: {{ unhealthy: {{ tcp_failures: 1 }} }} }}
"#,
        v1 = v1.addr
    );
    let gw = Gateway::start(&yaml).await;
    let c = HttpClient::new();

    // No target at all.
    let split_reply = c.get(&gw.url("/split-empty")).await;
    let direct_reply = c.get(&gw.url("/direct-empty")).await;
    assert_eq!(split_reply.status, 503, "{split_reply:?}");
    assert_eq!(split_reply.json(), serde_json::json!({"message": "no healthy target in upstream \"empty\""}));
    assert_eq!((split_reply.status, split_reply.json()), (direct_reply.status, direct_reply.json()));

    // A target passive checks found dead: once it is out, 503 whichever way the request came.
    eventually(WAIT, "the dead target to be taken out", || async {
        (c.get(&gw.url("/split-dark")).await.status == 503).then_some(())
    })
    .await;
    let split_reply = c.get(&gw.url("/split-dark")).await;
    let direct_reply = c.get(&gw.url("/direct-dark")).await;
    assert_eq!(split_reply.json(), serde_json::json!({"message": "no healthy target in upstream \"dark\""}));
    assert_eq!((split_reply.status, split_reply.json()), (direct_reply.status, direct_reply.json()));
    assert_eq!(c.get(&gw.url("/split-empty")).await.status, 503);
    assert_eq!(v1.requests(), 0, "never the service's own destination instead");
}

/// Waits until `gw` serves etcd revision `revision` or later.
async fn applied(gw: &Gateway, revision: i64) {
    eventually(WAIT, &format!("revision {revision} to be applied"), || async {
        (gw.status().await["config"]["version"].as_i64().unwrap_or(0) >= revision).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_kept_out_with_their_paths_while_the_rest_serves() {
    let etcd = Etcd::start().await;
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gw = Gateway::start_etcd("node-1", &etcd.url(), &[]).await;
    for (name, echo) in [("v1", &v1), ("v2", &v2)] {
        etcd.put(&format!("/gateway/upstreams/{name}"), "{}").await;
        etcd.put(&format!("/gateway/upstreams/{name}/targets/{}", echo.addr), "{}").await;
    }
    etcd.put("/gateway/services/s", r#"{"url": "http://v1"}"#).await;
    let split =
        |to: &str| format!(r#"{{"traffic-split": {{"rules": [{{"weighted_upstreams": [{{"upstream": "{to}"}}]}}]}}}}"#);
    let route = |path: &str, to: &str| format!(r#"{{"service": "s", "paths": ["{path}"], "plugins": {}}}"#, split(to));
    etcd.put("/gateway/routes/ok", &route("/ok", "v2")).await;
    let revision = etcd.put("/gateway/routes/lost", &route("/lost", "v3")).await;
    applied(&gw, revision).await;
    let c = HttpClient::new();

    // An unknown upstream: the route is left out and listed, the rest serves.
    assert_eq!(c.get(&gw.url("/ok")).await.instance(), "v2");
    assert_eq!(c.get(&gw.url("/lost")).await.status, 404);
    let errors = gw.status().await["config"]["errors"].clone();
    assert_eq!(errors.as_array().map(Vec::len), Some(1), "{errors}");
    assert_eq!(errors[0]["key"], "/gateway/routes/lost");
    assert_eq!(errors[0]["revision"], revision);
    assert_eq!(
        errors[0]["message"],
        "plugins.traffic-split.rules[0].weighted_upstreams[0].upstream: unknown upstream \"v3\""
    );

    // Through the admin API such a route is refused, and an upstream a split names stays.
    let body: serde_json::Value = serde_json::from_str(&route("/other", "v9")).unwrap();
    let reply = gw.admin_put("/routes/other", &body).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.json()["message"], "routes/other: one of services/s, upstreams/v9 does not exist");
    let reply = c.call(Method::DELETE, &gw.admin_url("/upstreams/v2"), "").await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.json()["message"], "upstreams/v2 is used by routes/ok; change or delete those first");

    // Weights all zero: refused with the path, whichever way it comes.
    let zero = r#"{"service": "s", "paths": ["/zero"], "plugins": {"traffic-split": {"rules": [
        {"weighted_upstreams": [{"upstream": "v2", "weight": 0}, {"weight": 0}]}]}}}"#;
    let reply = gw.admin_put("/routes/zero", &serde_json::from_str(zero).unwrap()).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(
        reply.json()["message"],
        "routes/zero.plugins.traffic-split.rules[0].weighted_upstreams: the weights are all zero: the rule's \
         requests could go nowhere"
    );
    let revision = etcd.put("/gateway/routes/zero", zero).await;
    applied(&gw, revision).await;
    let errors = gw.status().await["config"]["errors"].clone();
    let zero_error = errors.as_array().unwrap().iter().find(|e| e["key"] == "/gateway/routes/zero").expect("listed");
    let message = zero_error["message"].as_str().unwrap();
    assert!(message.contains("weighted_upstreams: the weights are all zero"), "{message}");
    assert!(message.ends_with("(not served)"), "{message}");
    assert_eq!(c.get(&gw.url("/zero")).await.status, 404);
    let dir = TempDir::new();
    let file = dir.path().join("zero.yaml");
    let yaml = "services: [{ name: s, url: \"http://127.0.0.1:1\", routes: [{ name: zero, paths: [/], plugins: \
                { traffic-split: { rules: [{ weighted_upstreams: [{ weight: 0 }] }] } } }] }]";
    std::fs::write(&file, yaml).unwrap();
    let out = run_gateway(&["validate", &file.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes/zero.plugins.traffic-split.rules[0].weighted_upstreams: the weights are all zero"),
        "{stderr}"
    );

    // Once the upstream exists, the route it left out serves, to it.
    etcd.put("/gateway/upstreams/v3", "{}").await;
    let revision = etcd.put(&format!("/gateway/upstreams/v3/targets/{}", v1.addr), "{}").await;
    applied(&gw, revision).await;
    assert_eq!(c.get(&gw.url("/lost")).await.instance(), "v1");
    assert_eq!(c.get(&gw.url("/ok")).await.instance(), "v2");
}
