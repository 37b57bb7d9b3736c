//! Config from etcd against a real etcd server and real gateway processes: changes reach every
//! node, bad values keep the last good one and are reported, references that dangle make their
//! entity inactive, etcd outages and restarts and compactions are survived without missing a
//! change, leases remove targets, bursts apply whole, and the admin API and `gateway apply` and
//! `dump` write and read the same keys.

use http::Method;
use std::time::Duration;
use tests::http::HttpClient;
use tests::{eventually, run_gateway as gateway, Etcd, Gateway, Relay, Upstream};

const WAIT: Duration = Duration::from_secs(15);

/// Waits until every node serves `revision` or later and all serve the same config; its hash.
async fn converged(nodes: &[Gateway], revision: i64) -> String {
    eventually(WAIT, &format!("every node to apply revision {revision} and agree"), || async {
        let mut hashes = Vec::new();
        for gw in nodes {
            let s = gw.status().await;
            if s["config"]["version"].as_i64().unwrap_or(0) < revision {
                return None;
            }
            hashes.push(s["config"]["hash"].as_str().unwrap_or_default().to_owned());
        }
        hashes.iter().all(|h| *h == hashes[0]).then(|| hashes[0].clone())
    })
    .await
}

async fn nodes(endpoints: &str, n: usize) -> Vec<Gateway> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(Gateway::start_etcd(&format!("node-{i}"), endpoints, &[]).await);
    }
    nodes
}

/// A service `s` on route `/s` to upstream `up` with `echo` as its target; the revision.
async fn base(etcd: &Etcd, echo: &Upstream) -> i64 {
    etcd.put("/gateway/upstreams/up", "{}").await;
    etcd.put(&format!("/gateway/upstreams/up/targets/{}", echo.addr), "{}").await;
    etcd.put("/gateway/services/s", r#"{"url": "http://up"}"#).await;
    etcd.put("/gateway/routes/s", r#"{"service": "s", "paths": ["/s"]}"#).await
}

async fn get_status(gw: &Gateway, path: &str) -> u16 {
    HttpClient::new().get(&gw.url(path)).await.status.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_is_served_by_three_nodes_and_a_delete_removes_it() {
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let nodes = nodes(&etcd.url(), 3).await;
    let revision = base(&etcd, &echo).await;
    converged(&nodes, revision).await;
    for gw in &nodes {
        assert_eq!(get_status(gw, "/s/x").await, 200);
        let s = gw.status().await;
        assert_eq!(s["etcd"], "connected");
        assert_eq!(s["config"]["source"], "etcd");
    }
    let revision = etcd.delete("/gateway/routes/s").await;
    converged(&nodes, revision).await;
    for gw in &nodes {
        assert_eq!(get_status(gw, "/s/x").await, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_value_keeps_the_old_one_is_reported_and_a_good_put_fixes_it() {
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let nodes = nodes(&etcd.url(), 2).await;
    // Both nodes watch the bad write happen (a node that starts after it is the next test's).
    let good = base(&etcd, &echo).await;
    converged(&nodes, good).await;
    let bad = etcd.put("/gateway/routes/s", r#"{"service": "s", "paths": ["/s"], "#).await;
    let other = etcd.put("/gateway/routes/t", r#"{"service": "s", "paths": ["/t"]}"#).await;
    converged(&nodes, other).await;
    for gw in &nodes {
        assert_eq!(get_status(gw, "/s/x").await, 200, "the last good value of routes/s stays");
        assert_eq!(get_status(gw, "/t/x").await, 200, "every other key still applies");
        let errors = gw.status().await["config"]["errors"].clone();
        assert_eq!(errors.as_array().unwrap().len(), 1, "{errors}");
        assert_eq!(errors[0]["key"], "/gateway/routes/s");
        assert_eq!(errors[0]["revision"], bad);
        assert!(errors[0]["message"].as_str().unwrap().contains("not JSON"), "{errors}");
    }
    let invalid = etcd.put("/gateway/routes/s", r#"{"service": "s", "paths": ["nope"]}"#).await;
    converged(&nodes, invalid).await;
    let errors = nodes[0].status().await["config"]["errors"].clone();
    assert!(errors[0]["message"].as_str().unwrap().contains("routes/s.paths[0]"), "{errors}");
    let fixed = etcd.put("/gateway/routes/s", r#"{"service": "s", "paths": ["/fixed"]}"#).await;
    converged(&nodes, fixed).await;
    for gw in &nodes {
        assert_eq!(gw.status().await["config"]["errors"], serde_json::json!([]));
        assert_eq!(get_status(gw, "/fixed").await, 200);
        assert_eq!(get_status(gw, "/s/x").await, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_after_bad_writes_serves_the_last_good_value_like_the_others() {
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let mut all = nodes(&etcd.url(), 1).await;
    let good = base(&etcd, &echo).await;
    converged(&all, good).await;
    // Two bad values in a row after the good one, and a key that was never good.
    etcd.put("/gateway/routes/s", r#"{"service": "s", "paths": ["/s"], "#).await;
    let bad = etcd.put("/gateway/routes/s", r#"{"service": "s", "paths": ["nope"]}"#).await;
    let never_good = etcd.put("/gateway/routes/u", r#"{"service": "s", "paths": ["/u"], "#).await;
    // The late node's first read finds routes/s bad and looks back through etcd's history.
    all.push(Gateway::start_etcd("late", &etcd.url(), &[]).await);
    converged(&all, never_good).await;
    for gw in &all {
        assert_eq!(get_status(gw, "/s/x").await, 200, "the last good value of routes/s");
        assert_eq!(get_status(gw, "/u").await, 404);
        let errors = gw.status().await["config"]["errors"].clone();
        assert_eq!(errors.as_array().unwrap().len(), 2, "{errors}");
        assert_eq!((&errors[0]["key"], &errors[0]["revision"]), (&"/gateway/routes/s".into(), &bad.into()));
        assert!(errors[0]["message"].as_str().unwrap().ends_with("(serving its last good value)"), "{errors}");
        assert!(errors[1]["message"].as_str().unwrap().ends_with("(not served)"), "{errors}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dangling_route_is_inactive_and_listed_until_its_service_exists() {
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let nodes = nodes(&etcd.url(), 1).await;
    base(&etcd, &echo).await;
    let revision = etcd.put("/gateway/routes/lost", r#"{"service": "later", "paths": ["/lost"]}"#).await;
    converged(&nodes, revision).await;
    assert_eq!(get_status(&nodes[0], "/lost").await, 404);
    let errors = nodes[0].status().await["config"]["errors"].clone();
    assert_eq!(errors[0]["key"], "/gateway/routes/lost", "{errors}");
    assert_eq!(errors[0]["revision"], revision, "listed like a bad value: the key and its revision");
    assert_eq!(errors[0]["message"], "service: unknown service \"later\"");
    let revision = etcd.put("/gateway/services/later", &format!(r#"{{"url": "http://{}"}}"#, echo.addr)).await;
    converged(&nodes, revision).await;
    assert_eq!(get_status(&nodes[0], "/lost").await, 200);
    assert_eq!(nodes[0].status().await["config"]["errors"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_through_an_etcd_outage_and_catch_up_after() {
    let mut etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let nodes = nodes(&etcd.url(), 3).await;
    let revision = base(&etcd, &echo).await;
    converged(&nodes, revision).await;
    etcd.stop().await;
    for gw in &nodes {
        eventually(WAIT, "the node to see etcd gone", || async {
            (gw.status().await["etcd"] == "disconnected").then_some(())
        })
        .await;
        assert_eq!(get_status(gw, "/s/x").await, 200, "the last config is still served");
    }
    etcd.restart().await;
    let revision = etcd.put("/gateway/routes/after", r#"{"service": "s", "paths": ["/after"]}"#).await;
    converged(&nodes, revision).await;
    for gw in &nodes {
        assert_eq!(gw.status().await["etcd"], "connected");
        assert_eq!(get_status(gw, "/after").await, 200);
        assert_eq!(get_status(gw, "/s/x").await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_past_a_cut_nodes_revision_ends_in_the_same_hash() {
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let relay = Relay::start(etcd.addr()).await;
    let mut nodes = nodes(&etcd.url(), 2).await;
    nodes.push(Gateway::start_etcd("behind-relay", &relay.url(), &[]).await);
    let revision = base(&etcd, &echo).await;
    converged(&nodes, revision).await;

    relay.cut();
    eventually(WAIT, "the cut node to notice", || async {
        (nodes[2].status().await["etcd"] == "disconnected").then_some(())
    })
    .await;
    etcd.put("/gateway/routes/new", r#"{"service": "s", "paths": ["/new"]}"#).await;
    etcd.delete("/gateway/routes/s").await;
    let last = etcd.put("/gateway/services/s", r#"{"url": "http://up", "retries": 1}"#).await;
    etcd.client().await.compact(last, None).await.expect("compact");
    assert_eq!(get_status(&nodes[2], "/s/x").await, 200, "the cut node serves what it had");

    relay.restore();
    let hash = converged(&nodes, last).await;
    for gw in &nodes {
        assert_eq!(gw.status().await["config"]["hash"], hash.as_str());
        assert_eq!(get_status(gw, "/new").await, 200);
        assert_eq!(get_status(gw, "/s/x").await, 404);
    }
    assert!(nodes[2].logged("compacted"), "the cut node re-read after the compaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_that_restarts_empty_is_read_afresh() {
    let mut etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let nodes = nodes(&etcd.url(), 2).await;
    let revision = base(&etcd, &echo).await;
    etcd.put("/gateway/routes/r1", r#"{"service": "s", "paths": ["/r1"]}"#).await;
    etcd.put("/gateway/routes/r2", r#"{"service": "s", "paths": ["/r2"]}"#).await;
    converged(&nodes, revision + 2).await;
    etcd.restart_empty().await;
    // Fewer writes than before: etcd's revision is now behind the nodes'.
    let revision = base(&etcd, &echo).await;
    // Versions went down with etcd's revisions, so "at least this version" proves nothing here:
    // wait for the hash a fresh node builds from the same etcd.
    let fresh = Gateway::start_etcd("fresh", &etcd.url(), &[]).await;
    let fresh_hash = converged(std::slice::from_ref(&fresh), revision).await;
    for gw in &nodes {
        eventually(WAIT, "the node to re-read", || async {
            (gw.status().await["config"]["hash"] == fresh_hash.as_str()).then_some(())
        })
        .await;
        assert_eq!(get_status(gw, "/r1").await, 404, "a key of the old history is not kept");
        assert_eq!(get_status(gw, "/s/x").await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_expiry_removes_a_target() {
    let etcd = Etcd::start().await;
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let nodes = nodes(&etcd.url(), 2).await;
    base(&etcd, &a).await;
    let mut client = etcd.client().await;
    let lease = client.lease_grant(2, None).await.expect("a lease").id();
    let options = etcd_client::PutOptions::new().with_lease(lease);
    let key = format!("/gateway/upstreams/up/targets/{}", b.addr);
    let revision = client.put(key, "{}", Some(options)).await.unwrap().header().unwrap().revision();
    converged(&nodes, revision).await;
    for gw in &nodes {
        let targets = HttpClient::new().get(&gw.admin_url("/upstreams/up/targets")).await.json();
        assert_eq!(targets["data"].as_array().unwrap().len(), 2);
    }
    // Nobody keeps the lease alive: etcd deletes the key when it ends, and every node follows.
    for gw in &nodes {
        eventually(WAIT, "the leased target to go", || async {
            let targets = HttpClient::new().get(&gw.admin_url("/upstreams/up/targets")).await.json();
            (targets["data"].as_array().unwrap().len() == 1).then_some(())
        })
        .await;
        for _ in 0..10 {
            assert_eq!(HttpClient::new().get(&gw.url("/s")).await.instance(), "a");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_keys_applies_whole_on_every_node() {
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let nodes = nodes(&etcd.url(), 3).await;
    base(&etcd, &echo).await;
    let client = etcd.client().await;
    let mut last = 0;
    for chunk in (0..1000).collect::<Vec<_>>().chunks(100) {
        let puts = chunk.iter().map(|i| {
            let mut client = client.clone();
            async move {
                let value = format!(r#"{{"service": "s", "paths": ["/burst/{i}"]}}"#);
                client
                    .put(format!("/gateway/routes/burst-{i}"), value, None)
                    .await
                    .unwrap()
                    .header()
                    .unwrap()
                    .revision()
            }
        });
        last = last.max(futures_util::future::join_all(puts).await.into_iter().max().unwrap());
    }
    converged(&nodes, last).await;
    for gw in &nodes {
        let routes = HttpClient::new().get(&gw.admin_url("/routes")).await.json();
        assert_eq!(routes["data"].as_array().unwrap().len(), 1001);
        assert_eq!(get_status(gw, "/burst/999").await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_validate_first_then_reach_every_node() {
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let nodes = nodes(&etcd.url(), 2).await;
    let revision = base(&etcd, &echo).await;
    converged(&nodes, revision).await;
    let c = HttpClient::new();
    let admin = |path: &str| nodes[0].admin_url(path);

    // Bad bodies: 400 naming the field, nothing written.
    for (path, body, field) in [
        ("/routes/r", r#"{"service": "s", "paths": ["~(bad"]}"#, "routes/r.paths[0]"),
        ("/routes/r", r#"{"service": "nobody", "paths": ["/r"]}"#, "routes/r.service: services/nobody does not exist"),
        ("/services/x", r#"{"url": "ftp://x"}"#, "services/x.url"),
        ("/services/x", r#"{"name": "y", "url": "http://x"}"#, "services/x.name"),
        ("/upstreams/up/targets/nohost", "{}", "upstreams/up/targets/nohost.target"),
        ("/upstreams/ghost/targets/1.2.3.4:80", "{}", "upstreams/ghost does not exist"),
        ("/services/x", "not json", "not JSON"),
    ] {
        let reply = c.call(Method::PUT, &admin(path), body).await;
        assert_eq!(reply.status, 400, "{path} {body}");
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(field), "{message} should name {field}");
    }
    let (keys, _) = etcd
        .client()
        .await
        .get("/gateway/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .map(|r| (r.kvs().len(), ()))
        .unwrap();
    assert_eq!(keys, 4, "nothing was written");

    // A good write answers with its revision; with ?wait=1, once this node applied it.
    let reply = c.call(Method::PUT, &admin("/routes/r?wait=1"), r#"{"service": "s", "paths": ["/r"]}"#).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let revision = reply.json()["revision"].as_i64().unwrap();
    assert_eq!(reply.json()["data"]["strip_path"], true, "the entity as stored, defaults filled in");
    assert_eq!(get_status(&nodes[0], "/r/x").await, 200, "applied here before the answer");
    converged(&nodes, revision).await;
    assert_eq!(get_status(&nodes[1], "/r/x").await, 200);

    // Deleting what is in use is refused; deleting the user first works.
    let reply = c.call(Method::DELETE, &admin("/services/s"), "").await;
    assert_eq!(reply.status, 400);
    assert!(reply.json()["message"].as_str().unwrap().contains("routes/r"), "{:?}", reply.body);
    let reply = c.call(Method::DELETE, &admin("/routes/r?wait=1"), "").await;
    assert_eq!(reply.status, 200);
    assert!(reply.json()["revision"].as_i64().unwrap() > revision);
    assert_eq!(get_status(&nodes[0], "/r/x").await, 404);
    assert_eq!(c.call(Method::DELETE, &admin("/routes/r"), "").await.status, 404);
    // An upstream goes with its targets, once its users are gone (straight in etcd: the check
    // reads etcd, not the config the node serves).
    etcd.delete("/gateway/routes/s").await;
    etcd.delete("/gateway/services/s").await;
    let reply = c.call(Method::DELETE, &admin("/upstreams/up?wait=1"), "").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let left = etcd.client().await.get("/gateway/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(left.kvs().len(), 0, "the targets went with their upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_checked_at_a_revision_is_not_made_if_a_user_was_written_since() {
    use config_sync::etcd::{Deleted, EntityKey, EtcdConfig, EtcdWriter};
    let etcd = Etcd::start().await;
    let writer = EtcdWriter::connect(&EtcdConfig::new(vec![etcd.url()], "/gateway")).await.expect("connect");
    let service = EntityKey::Service("s".into());
    etcd.put("/gateway/services/s", r#"{"url": "http://127.0.0.1:9"}"#).await;
    // What the admin API does: read what uses the service at a revision, then delete on that
    // condition. A route written in between (through another node, say) voids the check.
    let (_, checked) = writer.read_config().await.expect("read");
    etcd.put("/gateway/routes/r", r#"{"service": "s", "paths": ["/r"]}"#).await;
    assert_eq!(writer.delete(&service, Some(("routes/", checked))).await.unwrap(), Deleted::Changed);
    let (snapshot, _) = writer.read_config().await.expect("read");
    assert!(snapshot.config.services.contains_key("s") && snapshot.config.routes.contains_key("r"));
    // Writes elsewhere do not void it.
    etcd.delete("/gateway/routes/r").await;
    let (_, checked) = writer.read_config().await.expect("read");
    etcd.put("/gateway/upstreams/u", "{}").await;
    assert!(matches!(writer.delete(&service, Some(("routes/", checked))).await.unwrap(), Deleted::Done(_)));
    assert_eq!(writer.delete(&service, None).await.unwrap(), Deleted::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_then_dump_round_trips() {
    let etcd = Etcd::start().await;
    let dir = tests::TempDir::new();
    let file = dir.path().join("config.yaml");
    let yaml = r#"
services:
  - name: orders
    url: http://orders-up/v1
    retries: 3
    routes:
      - { name: orders, paths: [/orders], plugins: { rate-limiting: { minute: 100 } } }
upstreams:
  - name: orders-up
    healthchecks: { passive: { unhealthy: { tcp_failures: 2, http_failures: 3 } } }
    targets: [{ target: "10.0.0.5:8080", weight: 100 }, { target: "10.0.0.6:8080" }]
plugins:
  proxy-cache: { cache_ttl: 30 }
"#;
    std::fs::write(&file, yaml).unwrap();
    let url = etcd.url();
    let file_arg = file.to_str().unwrap();
    etcd.put("/gateway/routes/stale", r#"{"service": "gone", "paths": ["/x"]}"#).await;

    let dry = gateway(&["apply", file_arg, "--etcd", &url, "--dry-run"]);
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{out}{}", String::from_utf8_lossy(&dry.stderr));
    assert!(out.contains("create /gateway/services/orders") && out.contains("delete /gateway/routes/stale"), "{out}");
    assert!(out.contains("dry run: 6 created, 0 changed, 1 deleted"), "{out}");
    let keys = etcd.client().await.get("/gateway/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(keys.kvs().len(), 1, "a dry run writes nothing");

    let applied = gateway(&["apply", file_arg, "--etcd", &url]);
    let out = String::from_utf8_lossy(&applied.stdout);
    assert!(applied.status.success() && out.contains("6 created, 0 changed, 1 deleted"), "{out}");
    let again = gateway(&["apply", file_arg, "--etcd", &url]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("no changes"));

    let dump = gateway(&["dump", "--etcd", &url]);
    assert!(dump.status.success());
    let dumped = String::from_utf8_lossy(&dump.stdout).into_owned();
    let reread = dir.path().join("dumped.yaml");
    std::fs::write(&reread, &dumped).unwrap();
    let check = gateway(&["validate", reread.to_str().unwrap()]);
    assert!(check.status.success(), "the dump is a valid file:\n{dumped}");
    let reapplied = gateway(&["apply", reread.to_str().unwrap(), "--etcd", &url]);
    assert!(
        String::from_utf8_lossy(&reapplied.stdout).contains("no changes"),
        "dump then apply changes nothing:\n{dumped}"
    );

    // A change shows as a change.
    std::fs::write(&file, yaml.replace("retries: 3", "retries: 4")).unwrap();
    let changed = gateway(&["apply", file_arg, "--etcd", &url]);
    assert!(String::from_utf8_lossy(&changed.stdout).contains("change /gateway/services/orders"));

    // An invalid file writes nothing and lists every error.
    std::fs::write(&file, "services: [{ name: a, url: 'ftp://x' }]").unwrap();
    let invalid = gateway(&["apply", file_arg, "--etcd", &url]);
    assert_eq!(invalid.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("services/a.url"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_catches_up_from_its_revision_without_a_re_read() {
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let relay = Relay::start(etcd.addr()).await;
    let cut = Gateway::start_etcd("cut", &relay.url(), &[]).await;
    let revision = base(&etcd, &echo).await;
    etcd.put("/gateway/routes/old", r#"{"service": "s", "paths": ["/old"]}"#).await;
    converged(std::slice::from_ref(&cut), revision + 1).await;
    relay.cut();
    eventually(WAIT, "the node to notice", || async { (cut.status().await["etcd"] == "disconnected").then_some(()) })
        .await;
    etcd.put("/gateway/routes/new", r#"{"service": "s", "paths": ["/new"]}"#).await;
    etcd.delete("/gateway/routes/old").await;
    let last = etcd.put("/gateway/services/s", r#"{"url": "http://up", "retries": 2}"#).await;
    relay.restore();
    let hash = converged(std::slice::from_ref(&cut), last).await;
    assert_eq!(get_status(&cut, "/new").await, 200);
    assert_eq!(get_status(&cut, "/old").await, 404, "the delete made while away is applied");
    assert!(!cut.logged("re-reading"), "it watched from its revision, no full read");
    let fresh = Gateway::start_etcd("fresh", &etcd.url(), &[]).await;
    assert_eq!(converged(std::slice::from_ref(&fresh), last).await, hash, "the same config as a fresh node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_goes_silent_is_noticed_and_replaced() {
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let relay = Relay::start(etcd.addr()).await;
    let node = Gateway::start_etcd("quiet", &relay.url(), &["--etcd-liveness-interval-ms", "300"]).await;
    let revision = base(&etcd, &echo).await;
    converged(std::slice::from_ref(&node), revision).await;
    // Watching, not still creating the watch (whose own timeout would notice first).
    eventually(WAIT, "the watch to answer", || async { (node.status().await["etcd"] == "connected").then_some(()) })
        .await;
    // The connection stays open but nothing moves: no error, no end of stream.
    relay.freeze();
    let missed = etcd.put("/gateway/routes/missed", r#"{"service": "s", "paths": ["/missed"]}"#).await;
    eventually(WAIT, "the node to find the stream dead", || async {
        (node.status().await["etcd"] == "disconnected").then_some(())
    })
    .await;
    assert!(node.logged("went quiet"), "{:?}", node.logs());
    relay.restore();
    converged(std::slice::from_ref(&node), missed).await;
    assert_eq!(get_status(&node, "/missed").await, 200, "the change made while silent is not lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_wiped_and_written_past_the_nodes_revision_is_read_afresh() {
    let mut etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let relay = Relay::start(etcd.addr()).await;
    let node = Gateway::start_etcd("node", &relay.url(), &[]).await;
    let revision = base(&etcd, &echo).await;
    etcd.put("/gateway/routes/gone", r#"{"service": "s", "paths": ["/gone"]}"#).await;
    converged(std::slice::from_ref(&node), revision + 1).await;
    relay.cut();
    etcd.restart_empty().await;
    // The new history reaches and passes the node's revision, with other keys.
    base(&etcd, &echo).await;
    let mut last = 0;
    for i in 0..4 {
        last = etcd.put(&format!("/gateway/routes/n{i}"), &format!(r#"{{"service": "s", "paths": ["/n{i}"]}}"#)).await;
    }
    assert!(last as u64 > revision as u64 + 1);
    relay.restore();
    let hash = converged(std::slice::from_ref(&node), last).await;
    assert_eq!(get_status(&node, "/gone").await, 404, "a key of the old history is not kept");
    assert_eq!(get_status(&node, "/n3").await, 200);
    let fresh = Gateway::start_etcd("fresh", &etcd.url(), &[]).await;
    assert_eq!(converged(std::slice::from_ref(&fresh), last).await, hash);
}
