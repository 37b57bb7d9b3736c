//! The proxy cache as one cache for the cluster, through real gateway processes and a real
//! redis-server: the memory level in front of Redis (a hit costs no Redis call, a copy outlives
//! an entry deleted behind its back by at most its residency; a purge reaching it by gossip is in
//! proxy_cache.rs), one upstream fetch for concurrent misses on three nodes (also when the
//! node that claimed the fetch dies), and ranges served from a stored response.

use std::time::{Duration, Instant};
use tests::cache::{config, redis_gets, status, statuses_of_concurrent_gets, stored, WAIT};
use tests::http::HttpClient;
use tests::origin::{Origin, Script};
use tests::{eventually, Gateway, Redis, Upstream};

/// A node on `redis` serving `yaml`, once it has reached Redis (until then a cache bypasses).
async fn node_on(yaml: &str, redis: &Redis) -> Gateway {
    let gw = Gateway::start_with(yaml, &["--redis-url", &redis.url()]).await;
    eventually(WAIT, "the node to reach Redis", || async { (gw.status().await["redis"] == "connected").then_some(()) })
        .await;
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_in_the_memory_level_costs_no_redis_call_and_lasts_at_most_its_residency() {
    let echo = Upstream::start("a").await;
    let redis = Redis::start().await;
    let gw = node_on(&config(echo.addr, "{ strategy: redis, cache_ttl: 300 }"), &redis).await;
    let c = HttpClient::new();
    let miss = c.get(&gw.url("/level")).await;
    assert_eq!(status(&miss), "Miss");
    let key = miss.header("x-cache-key").to_owned();
    stored(&gw, &key).await;
    let before = redis_gets(&redis).await;
    for _ in 0..20 {
        assert_eq!(status(&c.get(&gw.url("/level")).await), "Hit");
    }
    assert_eq!(redis_gets(&redis).await, before, "twenty hits, no Redis GET");
    // Deleted in Redis behind the node's back (no purge, so no gossip): the copy serves on for
    // at most its residency, 5 s, then the node reads Redis again and misses.
    let deleted = Instant::now();
    redis.cli(&["DEL", &format!("pc:{key}")]).await;
    assert_eq!(status(&c.get(&gw.url("/level")).await), "Hit", "the copy, within its residency");
    eventually(WAIT, "the copy to expire", || async {
        (status(&c.get(&gw.url("/level")).await) == "Miss").then_some(())
    })
    .await;
    let outlived = deleted.elapsed();
    println!("a copy outlived its Redis entry by {outlived:?} (residency 5 s)");
    assert!(outlived < Duration::from_secs(7), "{outlived:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_on_three_nodes_fetch_the_upstream_once() {
    let echo = Upstream::start("a").await;
    let redis = Redis::start().await;
    let yaml = config(echo.addr, "{ strategy: redis, cache_ttl: 300 }");
    let nodes = [node_on(&yaml, &redis).await, node_on(&yaml, &redis).await, node_on(&yaml, &redis).await];
    let statuses = statuses_of_concurrent_gets((0..24).map(|i| nodes[i % 3].url("/delay/300")).collect()).await;
    println!("24 concurrent misses over 3 nodes: {} upstream request(s); {statuses:?}", echo.requests());
    assert_eq!(echo.requests(), 1, "one fetch for the cluster: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| *s == "Miss").count(), 1, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_node_fetching_a_key_dies_another_fetches_it() {
    let echo = Upstream::start("a").await;
    let redis = Redis::start().await;
    let yaml = config(echo.addr, "{ strategy: redis, cache_ttl: 300 }");
    let holder = node_on(&yaml, &redis).await;
    let other = node_on(&yaml, &redis).await;
    let url = holder.url("/delay/2000");
    let held = tokio::spawn(async move { HttpClient::new().try_get(&url).await });
    eventually(WAIT, "the holder to ask the upstream", || async { (echo.requests() == 1).then_some(()) }).await;
    let url = other.url("/delay/2000");
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        (HttpClient::new().get(&url).await, started.elapsed())
    });
    holder.signal("KILL");
    assert!(held.await.unwrap().is_err(), "the holder died mid-request");
    let (reply, took) = waiting.await.unwrap();
    assert_eq!((reply.status.as_u16(), status(&reply)), (200, "Miss"));
    assert_eq!(echo.requests(), 2, "the other node fetched it once the claim ran out");
    println!("the waiting request was answered after {took:?} (claim 2 s, upstream 2 s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_served_from_a_stored_response() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&config(origin.addr, "{ strategy: memory, response_code: [200, 206] }")).await;
    let c = HttpClient::new();
    origin.answer("/r", &[("content-type", "text/plain"), ("etag", "\"v1\"")], "0123456789abcdef");
    let miss = c.get(&gw.url("/r")).await;
    assert_eq!(status(&miss), "Miss");
    stored(&gw, miss.header("x-cache-key")).await;
    let ask = |range: &'static str, if_range: Option<&'static str>| {
        let (c, url) = (c.clone(), gw.url("/r"));
        async move {
            let mut headers = vec![("range", range)];
            headers.extend(if_range.map(|v| ("if-range", v)));
            c.get_with(&url, &headers).await
        }
    };
    for (range, body, content_range) in [
        ("bytes=2-5", "2345", "bytes 2-5/16"),
        ("bytes=-3", "def", "bytes 13-15/16"),
        ("bytes=14-99", "ef", "bytes 14-15/16"),
    ] {
        let reply = ask(range, None).await;
        assert_eq!((reply.status.as_u16(), status(&reply)), (206, "Hit"), "{range}");
        assert_eq!(reply.body.as_ref(), body.as_bytes(), "{range}");
        assert_eq!(reply.header("content-range"), content_range);
        assert_eq!(reply.header("content-length"), body.len().to_string());
    }
    let past = ask("bytes=16-", None).await;
    assert_eq!((past.status.as_u16(), past.header("content-range")), (416, "bytes */16"));
    assert!(past.body.is_empty());
    for (range, if_range) in [("bytes=0-1,4-5", None), ("bytes=5-2", None), ("bytes=2-5", Some("\"v2\""))] {
        let reply = ask(range, if_range).await;
        assert_eq!(reply.status, 200, "{range} {if_range:?}: the whole response");
        assert_eq!(reply.body.as_ref(), b"0123456789abcdef");
    }
    assert_eq!(ask("bytes=2-5", Some("\"v1\"")).await.status, 206, "If-Range naming the stored response");
    assert_eq!(origin.count("/r"), 1, "every answer came from the cache");
    // A 206 from the upstream is never stored, so never served as a whole response.
    let partial = Script {
        status: 206,
        headers: vec![("content-type".into(), "text/plain".into()), ("content-range".into(), "bytes 0-3/16".into())],
        body: "0123".into(),
        honour_conditionals: false,
    };
    origin.script("/partial", partial);
    for _ in 0..2 {
        let reply = c.get(&gw.url("/partial")).await;
        assert_eq!((reply.status.as_u16(), status(&reply)), (206, "Bypass"));
    }
    assert_eq!(origin.count("/partial"), 2);
}
