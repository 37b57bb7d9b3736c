//! The rate-limiting plugin against a real redis-server and real gateway processes: one limit
//! shared by three nodes, the headers, Redis lost mid-traffic (no 5xx; each node limits alone at
//! its share) and back (shared again), 503 when not fault tolerant, and the local policy. Redis
//! over TLS with a password, and a real Redis Cluster, each serving limits and cached responses.

use http::Method;
use std::time::Duration;
use tests::http::{HttpClient, Reply};
use tests::{eventually, Gateway, Redis, RedisCluster, Upstream};

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
    let flags = ["--redis-url", url.as_str()];
    three_nodes(&config(echo, plugin), [&flags, &flags, &flags]).await
}

/// Three nodes serving `yaml`, node i with the `redis` flags `redis[i]`, joined by gossip; once
/// each counts three members and reaches Redis.
async fn three_nodes(yaml: &str, redis: [&[&str]; 3]) -> Vec<Gateway> {
    let mut nodes: Vec<Gateway> = Vec::new();
    for (i, redis) in redis.into_iter().enumerate() {
        let mut flags = vec!["--cluster-probe-period-ms", "200"];
        flags.extend(redis);
        let seed = nodes.first().map(|first| first.gossip.to_string());
        if let Some(seed) = &seed {
            flags.extend(["--cluster-seeds", seed]);
        }
        nodes.push(Gateway::start_node(&format!("node-{}", i + 1), yaml, &flags, &[]).await);
    }
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
async fn the_sliding_window_allows_no_double_burst_at_the_edge() {
    let echo = Upstream::start("a").await;
    let redis = Redis::start().await;
    let yaml = format!(
        "services: [{{ name: s, url: \"http://{}\", routes: [\
         {{ name: sliding, paths: [/sliding], plugins: {{ rate-limiting: \
            {{ second: 5, limit_by: header, header_name: x-user }} }} }},\
         {{ name: fixed, paths: [/fixed], plugins: {{ rate-limiting: \
            {{ second: 5, window: fixed, limit_by: header, header_name: x-user }} }} }}] }}]",
        echo.addr
    );
    let gw = Gateway::start_with(&yaml, &["--redis-url", &redis.url()]).await;
    let c = HttpClient::new();
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let allowed = |replies: &[Reply]| count(replies, 200);
    // Five just before a second ends and five just after, per window kind. A fixed window lets
    // all ten through; the sliding one still counts most of the five before the edge. The bound
    // holds only if the second burst ends early in its second: a stalled run tries again, with a
    // fresh user so that the earlier counts do not matter.
    for attempt in 0..5 {
        let user = format!("user-{attempt}");
        let send = |path: &'static str| {
            let (c, user, url) = (&c, user.clone(), gw.url(path));
            async move {
                let mut replies = Vec::new();
                for _ in 0..5 {
                    replies.push(c.get_with(&url, &[("x-user", &user)]).await);
                }
                replies
            }
        };
        eventually(WAIT, "the last quarter of a second", || async { (now().subsec_millis() >= 750).then_some(()) })
            .await;
        let before_edge = now().as_secs();
        let (sliding, fixed) = (send("/sliding").await, send("/fixed").await);
        if now().as_secs() != before_edge {
            continue;
        }
        assert_eq!((allowed(&sliding), allowed(&fixed)), (5, 5), "an empty window lets five through");
        eventually(WAIT, "the next second", || async { (now().as_secs() > before_edge).then_some(()) }).await;
        let (sliding, fixed) = (send("/sliding").await, send("/fixed").await);
        let into_the_second = now();
        if into_the_second.as_secs() != before_edge + 1 || into_the_second.subsec_millis() > 300 {
            continue;
        }
        assert_eq!(allowed(&fixed), 5, "the fixed window starts afresh on the edge");
        // At f <= 0.3 into the second, the previous five weigh 5 * (1 - f) >= 3.5: one more at most.
        assert!(allowed(&sliding) <= 1, "sliding: {:?}", sliding.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>());
        return;
    }
    panic!("every attempt stalled across a second's edge");
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
    // What is tested is TLS and the password, not speed: a debug build's TLS on two loaded cores
    // can take longer than the default 50 ms, which would rightly count Redis as down.
    let flags = ["--redis-url", &redis.url(), "--redis-timeout-ms", "1000"];
    let gw = Gateway::start_with_env(&yaml, &flags, &[("SSL_CERT_FILE", &ca)]).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_shares_limits_and_cached_responses() {
    let echo = Upstream::start("a").await;
    let redis = RedisCluster::start().await;
    let yaml = format!(
        "services: [{{ name: s, url: \"http://{}\", routes: [\
         {{ name: r, paths: [/limited], plugins: {{ rate-limiting: \
            {{ minute: 10, window: fixed, limit_by: header, header_name: x-user }} }} }},\
         {{ name: c, paths: [/cached], plugins: {{ proxy-cache: {{ strategy: redis, cache_ttl: 60 }} }} }}] }}]",
        echo.addr
    );
    // Each node knows the cluster through a different seed.
    let urls = redis.urls();
    // A generous bound per call: below, no decision may fall back, and the machine is loaded.
    let flags: Vec<[&str; 5]> =
        urls.iter().map(|url| ["--redis-url", url.as_str(), "--redis-cluster", "--redis-timeout-ms", "1000"]).collect();
    let nodes = three_nodes(&yaml, [&flags[0], &flags[1], &flags[2]]).await;
    let c = HttpClient::new();

    // Limits: ten a minute per user, however the requests are spread, for users whose counters
    // land on different primaries.
    clear_of_the_minute_edge(20).await;
    for user in 0..6 {
        let user = format!("user-{user}");
        let mut replies = Vec::new();
        for i in 0..14 {
            replies.push(c.get_with(&nodes[i % 3].url("/limited"), &[("x-user", &user)]).await);
        }
        let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
        assert_eq!((count(&replies, 200), count(&replies, 429)), (10, 4), "{user}: {statuses:?}");
    }
    let counters = redis.keys_per_node("rl:*").await;
    assert!(counters.iter().filter(|&&n| n > 0).count() >= 2, "counters on several primaries: {counters:?}");
    let metrics = String::from_utf8_lossy(&c.get(&nodes[0].admin_url("/metrics")).await.body).into_owned();
    assert!(!metrics.contains(r#"store="fallback""#), "no decision fell back: {metrics}");

    // Cache: each entry, cached through one node, is a hit through the others.
    let mut keys = Vec::new();
    for item in 0..6 {
        let path = format!("/cached/{item}");
        let first = &nodes[item % 3];
        let miss = c.get(&first.url(&path)).await;
        assert_eq!((miss.status.as_u16(), miss.header("x-cache-status")), (200, "Miss"), "{path}");
        let key = miss.header("x-cache-key").to_owned();
        eventually(WAIT, "the entry to be stored", || async {
            (c.get(&first.admin_url(&format!("/proxy-cache/{key}"))).await.status == 200).then_some(())
        })
        .await;
        for other in nodes.iter().filter(|gw| gw.gossip != first.gossip) {
            let hit = c.get(&other.url(&path)).await;
            assert_eq!(hit.header("x-cache-status"), "Hit", "{path}");
            assert_eq!(hit.body, miss.body, "{path}");
        }
        keys.push(key);
    }
    assert_eq!(echo.requests(), 60 + 6, "the upstream saw each cached path once");
    let entries = redis.keys_per_node("pc:*").await;
    assert_eq!(entries.iter().sum::<usize>(), 6);
    assert!(entries.iter().filter(|&&n| n > 0).count() >= 2, "entries on several primaries: {entries:?}");

    // A purge of one entry through node 3 is seen by every node; a purge of all through node 2
    // empties every primary.
    assert_eq!(c.call(Method::DELETE, &nodes[2].admin_url(&format!("/proxy-cache/{}", keys[0])), "").await.status, 204);
    assert_eq!(c.get(&nodes[0].admin_url(&format!("/proxy-cache/{}", keys[0]))).await.status, 404);
    assert_eq!(c.get(&nodes[0].url("/cached/1")).await.header("x-cache-status"), "Hit");
    assert_eq!(c.call(Method::DELETE, &nodes[1].admin_url("/proxy-cache"), "").await.status, 204);
    assert_eq!(redis.keys_per_node("pc:*").await, [0, 0, 0]);
    assert_eq!(c.get(&nodes[2].url("/cached/1")).await.header("x-cache-status"), "Miss");
}
