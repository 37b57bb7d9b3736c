//! The rate-limiting plugin against a real redis-server and real gateway processes: one limit
//! shared by three nodes, the headers, Redis lost mid-traffic (no 5xx; each node limits alone at
//! its share) and back (shared again), 503 when not fault tolerant, and the local policy.

use std::time::Duration;
use tests::http::{HttpClient, Reply};
use tests::{eventually, Gateway, Redis, Upstream};

const WAIT: Duration = Duration::from_secs(20);

fn config(echo: &Upstream, plugin: &str) -> String {
    format!(
        "services: [{{ name: s, url: \"http://{}\", routes: [{{ name: r, paths: [/], plugins: {{ rate-limiting: {plugin} }} }}] }}]",
        echo.addr
    )
}

/// Three nodes on `redis`, joined by gossip (so each knows there are three).
async fn three(echo: &Upstream, redis: &Redis, plugin: &str) -> Vec<Gateway> {
    let url = redis.url();
    let yaml = config(echo, plugin);
    let fast = ["--cluster-probe-period-ms", "200", "--redis-url", &url];
    let first = Gateway::start_node("node-1", &yaml, &fast, &[]).await;
    let seed = first.gossip.to_string();
    let mut flags = fast.to_vec();
    flags.extend(["--cluster-seeds", &seed]);
    let second = Gateway::start_node("node-2", &yaml, &flags, &[]).await;
    let third = Gateway::start_node("node-3", &yaml, &flags, &[]).await;
    let nodes = vec![first, second, third];
    for gw in &nodes {
        eventually(WAIT, "three members", || async {
            let s = HttpClient::new().get(&gw.admin_url("/status")).await.json();
            (s["cluster"]["members"] == 3 && s["redis"] == "connected").then_some(())
        })
        .await;
    }
    nodes
}

/// Fixed windows start on the minute: a test that crossed one would see a fresh budget. Waits
/// (polling the clock) until at least `needed` seconds are left in the current minute.
async fn clear_of_the_minute_edge(needed: u64) {
    let left = || 60 - std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() % 60;
    eventually(Duration::from_secs(70), "room before the minute ends", || async { (left() >= needed).then_some(()) })
        .await;
}

fn count(replies: &[Reply], status: u16) -> usize {
    replies.iter().filter(|r| r.status.as_u16() == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_a_minute_over_three_nodes_lets_exactly_ten_through() {
    let echo = Upstream::start("a").await;
    let redis = Redis::start().await;
    let nodes = three(&echo, &redis, "{ minute: 10, window: fixed }").await;
    clear_of_the_minute_edge(15).await;
    let c = HttpClient::new();
    let mut replies = Vec::new();
    // However the requests are spread: round-robin, then all on one node.
    for i in 0..18 {
        replies.push(c.get(&nodes[i % 3].url("/")).await);
    }
    for _ in 0..6 {
        replies.push(c.get(&nodes[1].url("/")).await);
    }
    assert_eq!(
        count(&replies, 200),
        10,
        "statuses: {:?}",
        replies.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>()
    );
    assert_eq!(count(&replies, 429), 14);
    let limited = replies.iter().find(|r| r.status == 429).unwrap();
    assert_eq!(limited.json()["message"], "API rate limit exceeded");
    assert!(limited.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(limited.header("x-ratelimit-remaining-minute"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_count_down() {
    let echo = Upstream::start("a").await;
    let redis = Redis::start().await;
    let gw = Gateway::start_with(&config(&echo, "{ minute: 5, hour: 50 }"), &["--redis-url", &redis.url()]).await;
    clear_of_the_minute_edge(10).await;
    let c = HttpClient::new();
    for left in (0..5).rev() {
        let r = c.get(&gw.url("/")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit-minute"), "5");
        assert_eq!(r.header("x-ratelimit-remaining-minute"), left.to_string());
        assert_eq!(r.header("x-ratelimit-limit-hour"), "50");
        assert_eq!(r.header("ratelimit-limit"), "5", "the most restrictive window");
        assert_eq!(r.header("ratelimit-remaining"), left.to_string());
        let reset: u64 = r.header("ratelimit-reset").parse().unwrap();
        assert!((1..=60).contains(&reset), "{reset}");
    }
    let r = c.get(&gw.url("/")).await;
    assert_eq!(r.status, 429);
    // Sliding window: one more is allowed once the previous minute's weight has decayed enough,
    // 60 / 5 = 12 s into the next minute at the latest, so at most 72 s from now.
    let retry: u64 = r.header("retry-after").parse().unwrap();
    assert!((1..=72).contains(&retry), "{retry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_mid_traffic_splits_the_limit_and_comes_back_shared() {
    let echo = Upstream::start("a").await;
    let mut redis = Redis::start().await;
    let nodes = three(&echo, &redis, "{ minute: 9, window: fixed }").await;
    clear_of_the_minute_edge(40).await;
    let c = HttpClient::new();
    assert_eq!(c.get(&nodes[0].url("/")).await.status, 200);
    redis.stop().await;
    // No request fails: each node now allows its share, 9 / 3 = 3 a minute.
    let mut replies = Vec::new();
    for _ in 0..6 {
        replies.push(c.get(&nodes[0].url("/")).await);
    }
    assert_eq!(count(&replies, 500) + count(&replies, 502) + count(&replies, 503), 0);
    assert_eq!(count(&replies, 200), 3, "{:?}", replies.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>());
    assert_eq!(count(&replies, 429), 3);
    for gw in &nodes {
        eventually(WAIT, "redis reported down", || async {
            (c.get(&gw.admin_url("/status")).await.json()["redis"] == "disconnected").then_some(())
        })
        .await;
    }
    assert_eq!(c.get(&nodes[1].url("/")).await.status, 200, "node 2 has its own share");

    redis.restart().await;
    for gw in &nodes {
        eventually(WAIT, "redis reported back", || async {
            (c.get(&gw.admin_url("/status")).await.json()["redis"] == "connected").then_some(())
        })
        .await;
    }
    // Shared again (the restarted Redis counts from zero): 9 for the whole cluster.
    let mut replies = Vec::new();
    for i in 0..15 {
        replies.push(c.get(&nodes[i % 3].url("/")).await);
    }
    assert_eq!(count(&replies, 200), 9, "{:?}", replies.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>());
    let metrics = String::from_utf8_lossy(&c.get(&nodes[0].admin_url("/metrics")).await.body).into_owned();
    assert!(metrics.contains(r#"gateway_ratelimit_total{route="r",outcome="allowed",store="fallback"}"#), "{metrics}");
    assert!(metrics.contains(r#"gateway_ratelimit_total{route="r",outcome="allowed",store="shared"}"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fault_tolerance_a_lost_redis_is_a_503() {
    let echo = Upstream::start("a").await;
    let mut redis = Redis::start().await;
    let gw =
        Gateway::start_with(&config(&echo, "{ minute: 100, fault_tolerant: false }"), &["--redis-url", &redis.url()])
            .await;
    let c = HttpClient::new();
    assert_eq!(c.get(&gw.url("/")).await.status, 200);
    redis.stop().await;
    let started = std::time::Instant::now();
    let r = c.get(&gw.url("/")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["message"], "rate limiting is unavailable");
    assert!(started.elapsed() < Duration::from_secs(1), "no request waits on a dead Redis: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_policy_and_hidden_headers() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(
        &echo,
        "{ minute: 2, policy: local, hide_client_headers: true, limit_by: header, header_name: x-user }",
    ))
    .await;
    clear_of_the_minute_edge(10).await;
    let c = HttpClient::new();
    for user in ["ann", "bob"] {
        for expected in [200, 200, 429] {
            let r = c.get_with(&gw.url("/"), &[("x-user", user)]).await;
            assert_eq!(r.status, expected, "{user}");
            assert_eq!(r.header("x-ratelimit-remaining-minute"), "", "headers hidden");
            assert_eq!(r.header("ratelimit-limit"), "");
        }
    }
    let status = c.get(&gw.admin_url("/status")).await.json();
    assert_eq!(status["redis"], "disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_password_serves_limits_and_cache() {
    let echo = Upstream::start("a").await;
    let redis = Redis::start_tls("s3cret").await;
    let yaml = format!(
        "services: [{{ name: s, url: \"http://{}\", routes: [\
         {{ name: r, paths: [/limited], plugins: {{ rate-limiting: {{ minute: 3, window: fixed }} }} }},\
         {{ name: c, paths: [/cached], plugins: {{ proxy-cache: {{ strategy: redis }} }} }}] }}]",
        echo.addr
    );
    let ca = redis.ca_file().unwrap().to_str().unwrap().to_owned();
    let gw = Gateway::start_with_env(&yaml, &["--redis-url", &redis.url()], &[("SSL_CERT_FILE", &ca)]).await;
    let c = HttpClient::new();
    eventually(WAIT, "redis over TLS to answer", || async {
        (c.get(&gw.admin_url("/status")).await.json()["redis"] == "connected").then_some(())
    })
    .await;
    clear_of_the_minute_edge(10).await;
    let statuses: Vec<u16> = {
        let mut all = Vec::new();
        for _ in 0..5 {
            all.push(c.get(&gw.url("/limited")).await.status.as_u16());
        }
        all
    };
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let metrics = String::from_utf8_lossy(&c.get(&gw.admin_url("/metrics")).await.body).into_owned();
    assert!(metrics.contains(r#"gateway_ratelimit_total{route="r",outcome="allowed",store="shared"} 3"#), "{metrics}");
    let key = c.get(&gw.url("/cached")).await.header("x-cache-key").to_owned();
    eventually(WAIT, "the entry stored in Redis", || async {
        (c.get(&gw.admin_url(&format!("/proxy-cache/{key}"))).await.status == 200).then_some(())
    })
    .await;
    assert_eq!(c.get(&gw.url("/cached")).await.header("x-cache-status"), "Hit");
}
