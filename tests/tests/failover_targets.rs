//! Failover across targets, against real upstreams: backup targets, a service's fallback
//! upstream, and the bad values of both.

use http::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tests::http::HttpClient;
use tests::{eventually, validate_config, Etcd, Gateway, Upstream};

const WAIT: Duration = Duration::from_secs(10);

/// Active probes every 50 ms: one failure ejects a target, one success brings it back.
const PROBES: &str = "{ active: { timeout: 1, healthy: { interval: 0.05, successes: 1 }, \
                      unhealthy: { interval: 0.05, http_failures: 1, tcp_failures: 1 } } }";

fn target(t: &Upstream, extra: &str) -> String {
    format!("{{ target: \"{}\"{extra} }}", t.addr)
}

/// The state `/upstreams/{upstream}/health` reports for `target`, and the target's entry.
async fn entry(gw: &Gateway, upstream: &str, target: &Upstream) -> Value {
    let h = HttpClient::new().get(&gw.admin_url(&format!("/upstreams/{upstream}/health"))).await.json();
    let data = h["data"].as_array().cloned().unwrap_or_default();
    data.into_iter().find(|t| t["target"] == target.addr.to_string()).unwrap_or_default()
}

async fn wait_state(gw: &Gateway, upstream: &str, target: &Upstream, want: &str) {
    eventually(WAIT, &format!("{} to be {want}", target.name), || async {
        (entry(gw, upstream, target).await["health"] == want).then_some(())
    })
    .await;
}

/// Sends `n` GETs to `path`; the instance that answered each (all must be 200).
async fn instances(gw: &Gateway, path: &str, n: usize) -> Vec<String> {
    let c = HttpClient::new();
    let mut answered = Vec::with_capacity(n);
    for _ in 0..n {
        let reply = c.get(&gw.url(path)).await;
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
        answered.push(reply.instance());
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_serves_only_while_no_primary_is_healthy() {
    let (a, b, k) = (Upstream::start("a").await, Upstream::start("b").await, Upstream::start("k").await);
    let yaml = format!(
        r#"
services:
  - {{ name: s, url: "http://up", retry_on_statuses: [500], routes: [{{ name: r, paths: [/] }}] }}
upstreams:
  - {{ name: up, healthchecks: {PROBES}, targets: [{}, {}, {}] }}
"#,
        target(&a, ""),
        target(&b, ""),
        target(&k, ", backup: true"),
    );
    let gw = Gateway::start(&yaml).await;
    assert_eq!(entry(&gw, "up", &k).await["backup"], true, "the health view marks the backup");
    let served = instances(&gw, "/", 40).await;
    // (Counted by the instance that answered: the echo servers also count the probes.)
    assert!(served.iter().all(|i| i != "k"), "healthy primaries take everything: {served:?}");

    // One primary down: the other takes its share, not the backup.
    a.force_status(500);
    wait_state(&gw, "up", &a, "UNHEALTHY").await;
    assert!(instances(&gw, "/", 20).await.iter().all(|i| i == "b"));

    // Every primary down: the backup serves.
    b.force_status(500);
    wait_state(&gw, "up", &b, "UNHEALTHY").await;
    assert!(instances(&gw, "/", 20).await.iter().all(|i| i == "k"));

    // The primaries back: traffic returns to them.
    a.force_status(0);
    b.force_status(0);
    wait_state(&gw, "up", &a, "HEALTHY").await;
    wait_state(&gw, "up", &b, "HEALTHY").await;
    let served = instances(&gw, "/", 40).await;
    assert!(served.iter().all(|i| i != "k"), "the backup gets nothing once a primary is back: {served:?}");
}

/// Service `s` on `up` (target `a`) falling back to `spare` (target `f`); service `back` on
/// `spare` falling back to `up`, so that each is the other's fallback.
fn fallback_config(a: &Upstream, f: &Upstream) -> String {
    format!(
        r#"
services:
  - {{ name: s, url: "http://up", fallback_upstream: spare, routes: [{{ name: r, paths: [/] }}] }}
  - {{ name: back, url: "http://spare", fallback_upstream: up, routes: [{{ name: back, paths: [/back] }}] }}
upstreams:
  - {{ name: up, healthchecks: {PROBES}, targets: [{}] }}
  - {{ name: spare, healthchecks: {PROBES}, targets: [{}] }}
"#,
        target(a, ""),
        target(f, ""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_upstream_serves_while_the_service_upstream_has_no_healthy_target() {
    let (a, f) = (Upstream::start("a").await, Upstream::start("f").await);
    let gw = Gateway::start(&fallback_config(&a, &f)).await;
    assert!(instances(&gw, "/", 20).await.iter().all(|i| i == "a"));

    a.force_status(500);
    wait_state(&gw, "up", &a, "UNHEALTHY").await;
    assert!(instances(&gw, "/", 20).await.iter().all(|i| i == "f"), "the fallback serves");

    a.force_status(0);
    wait_state(&gw, "up", &a, "HEALTHY").await;
    assert!(instances(&gw, "/", 20).await.iter().all(|i| i == "a"), "traffic returns to up");

    // Each upstream the other's fallback, both without a healthy target: one level is
    // followed, so each service answers 503 at once rather than going round.
    a.force_status(500);
    f.force_status(500);
    wait_state(&gw, "up", &a, "UNHEALTHY").await;
    wait_state(&gw, "spare", &f, "UNHEALTHY").await;
    let c = HttpClient::new();
    assert_eq!(c.get(&gw.url("/")).await.status, 503);
    assert_eq!(c.get(&gw.url("/back")).await.status, 503);
}

#[test]
fn a_fallback_that_is_the_own_upstream_or_missing_is_refused_with_its_path() {
    let up = "upstreams: [{ name: up, targets: [{ target: \"127.0.0.1:1\" }] }]";
    for (service, error) in [
        (
            "fallback_upstream: up",
            "services/s.fallback_upstream: \"up\" is the service's own upstream: a fallback must be another upstream",
        ),
        ("fallback_upstream: nowhere", "services/s.fallback_upstream: unknown upstream \"nowhere\""),
    ] {
        let yaml = format!("services: [{{ name: s, url: \"http://up\", {service} }}]\n{up}\n");
        let (code, stderr) = validate_config(&yaml);
        assert_eq!(code, Some(1), "{service}: {stderr}");
        assert!(stderr.contains(error), "{service}: wanted {error:?} in {stderr}");
    }
}

async fn applied(gw: &Gateway, revision: i64) {
    eventually(WAIT, &format!("revision {revision} to be applied"), || async {
        (gw.status().await["config"]["version"].as_i64().unwrap_or(0) >= revision).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dangling_fallback_is_listed_and_a_fallback_to_itself_refused() {
    let etcd = Etcd::start().await;
    let (a, f) = (Upstream::start("a").await, Upstream::start("f").await);
    let gw = Gateway::start_etcd("node-1", &etcd.url(), &[]).await;
    for (name, echo) in [("up", &a), ("spare", &f)] {
        etcd.put(&format!("/gateway/upstreams/{name}"), "{}").await;
        etcd.put(&format!("/gateway/upstreams/{name}/targets/{}", echo.addr), "{}").await;
    }
    etcd.put("/gateway/services/ok", r#"{"url": "http://up", "fallback_upstream": "spare"}"#).await;
    etcd.put("/gateway/routes/ok", r#"{"service": "ok", "paths": ["/ok"]}"#).await;
    etcd.put("/gateway/services/lost", r#"{"url": "http://up", "fallback_upstream": "gone"}"#).await;
    let revision = etcd.put("/gateway/routes/lost", r#"{"service": "lost", "paths": ["/lost"]}"#).await;
    applied(&gw, revision).await;

    // A fallback that does not exist: the service is left out and listed, the rest serves.
    let c = HttpClient::new();
    assert_eq!(c.get(&gw.url("/ok")).await.instance(), "a");
    assert_eq!(c.get(&gw.url("/lost")).await.status, 404);
    let errors = gw.status().await["config"]["errors"].clone();
    let lost = errors.as_array().unwrap().iter().find(|e| e["key"] == "/gateway/services/lost").cloned();
    let lost = lost.unwrap_or_else(|| panic!("services/lost listed: {errors}"));
    assert_eq!(lost["message"], "fallback_upstream: unknown upstream \"gone\"", "{lost}");

    // A fallback equal to the service's own upstream: a bad value in etcd, listed...
    let revision = etcd.put("/gateway/services/own", r#"{"url": "http://up", "fallback_upstream": "up"}"#).await;
    applied(&gw, revision).await;
    let errors = gw.status().await["config"]["errors"].clone();
    let own = errors.as_array().unwrap().iter().find(|e| e["key"] == "/gateway/services/own").cloned();
    let own = own.unwrap_or_else(|| panic!("services/own listed: {errors}"));
    let message = own["message"].as_str().unwrap_or_default();
    assert!(message.contains("fallback_upstream: \"up\" is the service's own upstream"), "{own}");

    // ...and refused by the admin API, as is a fallback that does not exist.
    let reply = gw.admin_put("/services/own2", &json!({"url": "http://up", "fallback_upstream": "up"})).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let message = reply.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("services/own2.fallback_upstream: \"up\" is the service's own upstream"), "{message}");
    let reply = gw.admin_put("/services/lost2", &json!({"url": "http://up", "fallback_upstream": "gone"})).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.json()["message"], "services/lost2: upstreams/gone does not exist");

    // An upstream used as a fallback is not deleted from under its service.
    let reply = c.call(Method::DELETE, &gw.admin_url("/upstreams/spare"), "").await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.json()["message"], "upstreams/spare is used by services/ok; change or delete those first");
}

/// Sends GETs to `/` until `target` is `UNHEALTHY`; every answer must be 200 (the failing
/// target's answers are retried away).
async fn eject(gw: &Gateway, target: &Upstream) {
    let c = HttpClient::new();
    for _ in 0..100 {
        assert_eq!(c.get(&gw.url("/")).await.status, 200);
        if entry(gw, "up", target).await["health"] == "UNHEALTHY" {
            return;
        }
    }
    panic!("{} was never ejected", target.name);
}

/// How long `target` takes to be `HEALTHY` again, polled every 20 ms.
async fn time_out(gw: &Gateway, target: &Upstream) -> Duration {
    let start = Instant::now();
    wait_state(gw, "up", target, "HEALTHY").await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passively_ejected_target_returns_after_ejection_time_then_twice_that() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let yaml = format!(
        r#"
services:
  - {{ name: s, url: "http://up", retry_on_statuses: [500], routes: [{{ name: r, paths: [/] }}] }}
upstreams:
  - {{ name: up, healthchecks: {{ passive: {{ unhealthy: {{ http_failures: 1, ejection_time: 0.8 }} }} }},
       targets: [{}, {}] }}
"#,
        target(&a, ""),
        target(&b, ""),
    );
    let gw = Gateway::start(&yaml).await;
    a.force_status(500);
    eject(&gw, &a).await;
    let first = time_out(&gw, &a).await;
    assert!(first >= Duration::from_millis(700) && first < Duration::from_millis(1600), "first ejection: {first:?}");

    // Back, still failing: ejected again, for twice as long.
    eject(&gw, &a).await;
    let second = time_out(&gw, &a).await;
    assert!(second >= Duration::from_millis(1500) && second < Duration::from_millis(2600), "second: {second:?}");
    let series = format!(r#"gateway_upstream_ejections_total{{upstream="up",target="{}"}}"#, a.addr);
    assert_eq!(gw.metric(&series).await, 2.0);
    assert!(gw.logs().iter().any(|l| l.contains("target health changed") && l.contains("ejection_time")));

    // Recovered, it takes its share again.
    a.force_status(0);
    let served = instances(&gw, "/", 20).await;
    assert_eq!(served.iter().filter(|i| *i == "a").count(), 10, "{served:?}");
}

#[test]
fn an_ejection_time_over_300_s_or_a_slow_start_over_an_hour_is_refused() {
    for (upstream, error) in [
        (
            "healthchecks: { passive: { unhealthy: { ejection_time: 301 } } }",
            "upstreams/up.healthchecks.passive.unhealthy.ejection_time: must be 0 to 300 s",
        ),
        ("slow_start: 3601", "upstreams/up.slow_start: must be 0 to 3600 s"),
        ("slow_start: -1", "upstreams/up.slow_start"),
    ] {
        let yaml = format!("services: [{{ name: s, url: \"http://up\" }}]\nupstreams: [{{ name: up, {upstream} }}]\n");
        let (code, stderr) = validate_config(&yaml);
        assert_eq!(code, Some(1), "{upstream}: {stderr}");
        assert!(stderr.contains(error), "{upstream}: wanted {error:?} in {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_starting_target_share_grows_over_the_window() {
    const WINDOW: Duration = Duration::from_secs(3);
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let yaml = format!(
        r#"
services:
  - {{ name: s, url: "http://up", routes: [{{ name: r, paths: [/] }}] }}
upstreams:
  - {{ name: up, slow_start: {}, targets: [{}, {}] }}
"#,
        WINDOW.as_secs(),
        target(&a, ""),
        target(&b, ""),
    );
    let gw = Gateway::start(&yaml).await;
    let c = HttpClient::new();
    for to in ["unhealthy", "healthy"] {
        let url = gw.admin_url(&format!("/upstreams/up/targets/{}/{to}", b.addr));
        assert_eq!(c.call(Method::PUT, &url, "").await.status, 204);
    }
    let start = Instant::now();
    // A bounded load: 4 clients over the window and one more second, each answer timed.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = gw.url("/");
            tokio::spawn(async move {
                let c = HttpClient::new();
                let mut answers = Vec::new();
                while start.elapsed() < WINDOW + Duration::from_secs(1) {
                    let reply = c.get(&url).await;
                    assert_eq!(reply.status, 200);
                    answers.push((start.elapsed(), reply.instance() == "b"));
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.expect("a client"));
    }
    // b's share in each quarter of the window, and after it.
    let quarter = WINDOW / 4;
    let share = |from: Duration, to: Duration| {
        let part: Vec<bool> = answers.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, b)| *b).collect();
        assert!(part.len() >= 100, "{} answers from {from:?} to {to:?}: too few to measure", part.len());
        part.iter().filter(|b| **b).count() as f64 / part.len() as f64
    };
    let shares: Vec<f64> = (0..4).map(|q| share(quarter * q, quarter * (q + 1))).collect();
    let after = share(WINDOW + Duration::from_millis(100), WINDOW + Duration::from_secs(1));
    eprintln!("{} requests; b's share by quarter of the window: {shares:.3?}, after it: {after:.3}", answers.len());
    // Its steady share is 1/2; the expected share in quarter q is about 1/2 × (q + 1/2) / 4.
    assert!(shares[0] < 0.15, "first quarter: {shares:?}");
    assert!(shares[0] < shares[1] && shares[1] < shares[2] && shares[2] < shares[3], "grows: {shares:?}");
    assert!(shares[3] > 0.35, "last quarter near its steady share: {shares:?}");
    assert!((0.45..=0.55).contains(&after), "after the window, its full share: {after}");
}
