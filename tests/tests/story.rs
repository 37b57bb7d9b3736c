//! The whole story a user lives, on one cluster of real processes on loopback: etcd, Redis, an
//! OTLP receiver standing in for Jaeger, three gateway nodes that find each other by gossip, two
//! upstreams. Config goes in with `gateway apply`; traffic goes through every node; a target that
//! dies is taken out by each node on its own; an operator's reset on one node is seen on all
//! three; a rate limit is shared; a response cached through one node is a hit through another;
//! the trace of a request carries the node that served it.

use http::Method;
use std::time::Duration;
use tests::http::HttpClient;
use tests::otlp::OtlpSink;
use tests::{eventually, gateway_binary, Etcd, Gateway, Redis, TempDir, Upstream};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_story() {
    let etcd = Etcd::start().await;
    let redis = Redis::start().await;
    let sink = OtlpSink::start().await;
    let (a, mut b) = (Upstream::start("a").await, Upstream::start("b").await);

    // 1. Config into etcd with `gateway apply`.
    let dir = TempDir::new();
    let file = dir.path().join("story.yaml");
    let yaml = format!(
        r#"
services:
  - name: orders
    url: http://orders-up
    routes:
      - {{ name: orders, paths: [/orders] }}
      - {{ name: limited, paths: [/limited], plugins: {{ rate-limiting: {{ minute: 5, window: fixed }} }} }}
      - {{ name: cached, paths: [/cached], plugins: {{ proxy-cache: {{ cache_ttl: 60 }} }} }}
upstreams:
  - name: orders-up
    healthchecks: {{ passive: {{ unhealthy: {{ tcp_failures: 1 }} }} }}
    targets: [{{ target: "{a}" }}, {{ target: "{b}" }}]
"#,
        a = a.addr,
        b = b.addr
    );
    std::fs::write(&file, yaml).unwrap();
    let applied = std::process::Command::new(gateway_binary())
        .args(["apply", file.to_str().unwrap(), "--etcd", &etcd.url()])
        .output()
        .unwrap();
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let out = String::from_utf8_lossy(&applied.stdout).into_owned();
    let revision: i64 = out.rsplit("applied at revision ").next().unwrap().split(':').next().unwrap().parse().unwrap();

    // 2. Three nodes on etcd, Redis and the collector, finding each other by gossip.
    let (etcd_url, redis_url, otlp) = (etcd.url(), redis.url(), sink.endpoint());
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let base = ["--config-source", "etcd", "--etcd-endpoints", &etcd_url, "--redis-url", &redis_url];
    let gossip = ["--cluster-probe-period-ms", "200", "--cluster-key", "story-key"];
    let mut flags: Vec<&str> = base.iter().chain(gossip.iter()).copied().collect();
    let n1 = Gateway::start_node("node-1", "", &flags, &env).await;
    let seed = n1.gossip.to_string();
    flags.extend(["--cluster-seeds", &seed]);
    let n2 = Gateway::start_node("node-2", "", &flags, &env).await;
    let n3 = Gateway::start_node("node-3", "", &flags, &env).await;
    let nodes = [&n1, &n2, &n3];
    let c = HttpClient::new();
    for gw in nodes {
        eventually(WAIT, "the node to join and serve the config", || async {
            let s = c.get(&gw.admin_url("/status")).await.json();
            let ready = s["config"]["version"].as_i64().unwrap_or(0) >= revision
                && s["cluster"]["members"] == 3
                && s["etcd"] == "connected"
                && s["redis"] == "connected";
            ready.then_some(())
        })
        .await;
    }

    // 3. Traffic through each node.
    for gw in nodes {
        for _ in 0..4 {
            assert_eq!(c.get(&gw.url("/orders")).await.status, 200);
        }
    }
    assert!(a.requests() > 0 && b.requests() > 0, "both targets took traffic");

    // 4. b dies; each node takes it out on its own, and clients see no error.
    b.drop_requests(true);
    b.stop().await;
    let health = |gw: &Gateway| {
        let url = gw.admin_url("/upstreams/orders-up/health");
        let target = b.addr.to_string();
        async move {
            let h = HttpClient::new().get(&url).await.json();
            h["data"].as_array().unwrap().iter().find(|t| t["target"] == target.as_str()).unwrap()["health"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    for gw in nodes {
        eventually(WAIT, "the node to eject b", || async {
            assert_eq!(c.get(&gw.url("/orders")).await.status, 200, "no client-visible error");
            (health(gw).await == "UNHEALTHY").then_some(())
        })
        .await;
    }

    // 5. An operator's reset on node 1 is seen on all three.
    let reset =
        c.call(Method::PUT, &n1.admin_url(&format!("/upstreams/orders-up/targets/{}/healthy", b.addr)), "").await;
    assert_eq!(reset.status, 204);
    for gw in nodes {
        eventually(WAIT, "the reset to reach the node", || async { (health(gw).await == "HEALTHY").then_some(()) })
            .await;
    }

    // 6. A rate limit shared by the cluster: 5 a minute, however requests are spread.
    let left = || 60 - std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() % 60;
    eventually(Duration::from_secs(70), "room before the minute ends", || async { (left() >= 10).then_some(()) }).await;
    let mut allowed = 0;
    for i in 0..12 {
        if c.get(&nodes[i % 3].url("/limited")).await.status == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);

    // 7. A response cached through node 1 is a hit through node 2.
    let miss = c.get(&n1.url("/cached?item=7")).await;
    assert_eq!(miss.header("x-cache-status"), "Miss");
    let key = miss.header("x-cache-key").to_owned();
    eventually(WAIT, "the entry to be stored", || async {
        (c.get(&n1.admin_url(&format!("/proxy-cache/{key}"))).await.status == 200).then_some(())
    })
    .await;
    let hit = c.get(&n2.url("/cached?item=7")).await;
    assert_eq!(hit.header("x-cache-status"), "Hit");
    assert_eq!(hit.body, miss.body);

    // 8. The trace of a request served by node 3 names node 3.
    let traced = c.get(&n3.url("/orders")).await;
    let traceparent = traced.json()["headers"]["traceparent"].as_str().unwrap().to_owned();
    let trace_id = traceparent.split('-').nth(1).unwrap().to_owned();
    eventually(WAIT, "node 3's spans to arrive", || async {
        let spans: Vec<_> = sink.spans().into_iter().filter(|s| s.trace_id == trace_id).collect();
        let server = spans.iter().find(|s| s.name == "GET orders")?;
        // The attempt that reached a (one to b may come first: the reset made b healthy again, and
        // its failure is a `health change` span under this request too).
        let port = a.addr.port().to_string();
        let reached_a = spans.iter().any(|s| {
            s.kind == 3 && s.parent_span_id == server.span_id && s.attributes.get("server.port") == Some(&port)
        });
        (server.resource.get("service.instance.id").map(String::as_str) == Some("node-3") && reached_a).then_some(())
    })
    .await;
}
