//! The proxy-cache plugin with real nodes, a real redis-server and real upstreams: a response
//! cached through one node is a hit through another, what may not be cached is bypassed,
//! concurrent misses fetch the upstream once, a purge through one node makes every node miss
//! (Redis strategy, its memory levels reached by gossip, and memory strategy by gossip), and a lost Redis means Bypass, never an error.

use http::Method;
use std::time::Duration;
use tests::cache::{config, gone, redis_gets, status, statuses_of_concurrent_gets, stored, WAIT};
use tests::http::HttpClient;
use tests::{eventually, pair, Gateway, Redis, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_through_one_node_is_a_hit_through_the_other() {
    let echo = Upstream::start("a").await;
    let redis = Redis::start().await;
    let (n1, n2) = pair(&config(echo.addr, "{ cache_ttl: 60 }"), Some(&redis)).await;
    let c = HttpClient::new();
    let miss = c.get(&n1.url("/items?page=2")).await;
    assert_eq!((miss.status.as_u16(), status(&miss)), (200, "Miss"));
    let key = miss.header("x-cache-key").to_owned();
    assert_eq!(key.len(), 64);
    stored(&n1, &key).await;
    let hit = c.get(&n2.url("/items?page=2")).await;
    assert_eq!((hit.status.as_u16(), status(&hit)), (200, "Hit"), "{:?}", hit.headers);
    assert_eq!(hit.body, miss.body, "the same body");
    assert_eq!(hit.header("content-type"), miss.header("content-type"));
    assert_eq!(hit.header("x-echo-instance"), "a", "the upstream's own headers are kept");
    assert_eq!(hit.header("x-cache-key"), key);
    assert!(hit.header("age").parse::<u64>().is_ok());
    assert_eq!(echo.requests(), 1, "the upstream was asked once");
    let other = c.get(&n2.url("/items?page=3")).await;
    assert_eq!(status(&other), "Miss", "another query is another entry");
    let metrics = String::from_utf8_lossy(&c.get(&n2.admin_url("/metrics")).await.body).into_owned();
    assert!(metrics.contains(r#"gateway_cache_total{status="Hit"} 1"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_may_not_be_cached_is_bypassed() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(
        echo.addr,
        "{ max_body_bytes: 1000, content_type: [application/json, application/octet-stream] }",
    ))
    .await;
    let c = HttpClient::new();
    for _ in 0..2 {
        let post = c.call(Method::POST, &gw.url("/x"), "body").await;
        assert_eq!(status(&post), "Bypass", "POST is not a cached method");
        let created = c.get(&gw.url("/status/201")).await;
        assert_eq!((created.status.as_u16(), status(&created)), (201, "Bypass"), "201 is not a cached status");
        let big = c.get(&gw.url("/bytes/5000")).await;
        assert_eq!((big.body.len(), status(&big)), (5000, "Bypass"), "over max_body_bytes streams through");
    }
    assert_eq!(echo.requests(), 6, "nothing was served from the cache");
    let small = c.get(&gw.url("/bytes/500")).await;
    assert_eq!(status(&small), "Miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_fetch_the_upstream_once() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(echo.addr, "{ strategy: memory }")).await;
    let statuses = statuses_of_concurrent_gets(vec![gw.url("/delay/300"); 8]).await;
    assert_eq!(echo.requests(), 1, "one fetch for eight concurrent misses: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| *s == "Miss").count(), 1, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_through_one_node_makes_every_node_miss() {
    let echo = Upstream::start("a").await;
    let redis = Redis::start().await;
    let (n1, n2) = pair(&config(echo.addr, "{}"), Some(&redis)).await;
    let c = HttpClient::new();
    let key = c.get(&n1.url("/p")).await.header("x-cache-key").to_owned();
    stored(&n1, &key).await;
    assert_eq!(status(&c.get(&n2.url("/p")).await), "Hit", "read from Redis, kept in n2's memory level");
    let before = redis_gets(&redis).await;
    assert_eq!(status(&c.get(&n2.url("/p")).await), "Hit");
    assert_eq!(redis_gets(&redis).await, before, "the second hit on n2 came from its memory level");
    let purged = std::time::Instant::now();
    assert_eq!(c.call(Method::DELETE, &n2.admin_url(&format!("/proxy-cache/{key}")), "").await.status, 204);
    // Gone from Redis at once, and from n1's memory level once the purge's gossip arrives.
    gone(&n1, &key).await;
    println!("the purge reached n1's memory level {:?} after it was asked of n2", purged.elapsed());
    assert_eq!(status(&c.get(&n1.url("/p")).await), "Miss");
    stored(&n2, &key).await;
    assert_eq!(c.call(Method::DELETE, &n1.admin_url("/proxy-cache"), "").await.status, 204);
    gone(&n2, &key).await;
    assert_eq!(status(&c.get(&n2.url("/p")).await), "Miss");
    assert_eq!(c.get(&n1.admin_url("/proxy-cache/nope")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_purge_reaches_every_node_by_gossip() {
    let echo = Upstream::start("a").await;
    let (n1, n2) = pair(&config(echo.addr, "{ strategy: memory }"), None).await;
    let c = HttpClient::new();
    let key = c.get(&n1.url("/m")).await.header("x-cache-key").to_owned();
    stored(&n1, &key).await;
    assert_eq!(status(&c.get(&n1.url("/m")).await), "Hit");
    assert_eq!(status(&c.get(&n2.url("/m")).await), "Miss", "memory is per node");
    stored(&n2, &key).await;
    assert_eq!(c.call(Method::DELETE, &n2.admin_url("/proxy-cache"), "").await.status, 204);
    for gw in [&n1, &n2] {
        eventually(WAIT, "the purge to reach the node", || async {
            (c.get(&gw.admin_url(&format!("/proxy-cache/{key}"))).await.status == 404).then_some(())
        })
        .await;
    }
    assert!(n1.logged("cache purge received"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_redis_means_bypass_never_an_error() {
    let echo = Upstream::start("a").await;
    let mut redis = Redis::start().await;
    let gw = Gateway::start_with(&config(echo.addr, "{}"), &["--redis-url", &redis.url()]).await;
    let c = HttpClient::new();
    assert_eq!(status(&c.get(&gw.url("/l")).await), "Miss");
    let key = c.get(&gw.url("/l")).await.header("x-cache-key").to_owned();
    stored(&gw, &key).await;
    redis.stop().await;
    // The node's memory level still has its copy of what it stored (for its 5 s residency);
    // anything else goes to the upstream.
    let reply = c.get(&gw.url("/l")).await;
    assert_eq!((reply.status.as_u16(), status(&reply)), (200, "Hit"), "from the memory level");
    for i in 0..5 {
        let started = std::time::Instant::now();
        let reply = c.get(&gw.url(&format!("/other/{i}"))).await;
        assert_eq!((reply.status.as_u16(), status(&reply)), (200, "Bypass"));
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    }
}
