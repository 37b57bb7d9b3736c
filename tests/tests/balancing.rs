//! Load balancing end to end, each test over three echo instances behind one upstream of a real
//! gateway process:
//!
//! - round-robin: exact shares for equal and unequal weights, a weight-0 target never chosen;
//! - least-connections: concurrent slow requests land on different instances, a busy instance
//!   is passed over, idle instances take turns;
//! - consistent-hashing on a header and on the path: a key sticks to one instance, many keys
//!   spread;
//! - latency (peak-EWMA): a slow instance gets little traffic;
//! - retries: a refused connection is retried on another target (GET and POST with a body),
//!   and with `retries: 0` it is a JSON 502.

use http::Method;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tests::http::{HttpClient, Reply};
use tests::{closed_port, eventually, Gateway, Upstream};

/// Three echo instances named `a`, `b`, `c`.
async fn three() -> [Upstream; 3] {
    [Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await]
}

/// A gateway whose `/` route goes to upstream `up`, configured with `upstream_fields` (indented
/// YAML lines) and targets `(address, weight)`.
async fn gateway(upstream_fields: &str, targets: &[(String, u32)]) -> Gateway {
    gateway_with_service("", upstream_fields, targets).await
}

async fn gateway_with_service(service_fields: &str, upstream_fields: &str, targets: &[(String, u32)]) -> Gateway {
    let mut yaml = format!(
        "services:\n  - name: s\n    url: http://up\n{service_fields}    routes: [{{ name: all, paths: [/] }}]\nupstreams:\n  - name: up\n{upstream_fields}    targets:\n"
    );
    for (target, weight) in targets {
        yaml.push_str(&format!("      - {{ target: \"{target}\", weight: {weight} }}\n"));
    }
    Gateway::start(&yaml).await
}

fn targets(ups: &[Upstream], weights: &[u32]) -> Vec<(String, u32)> {
    ups.iter().zip(weights).map(|(u, w)| (u.addr.to_string(), *w)).collect()
}

/// GET `path` and the instance that answered; the request must succeed.
async fn served_by(client: &HttpClient, gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> String {
    let reply = client.get_with(&gw.url(path), headers).await;
    assert_eq!(reply.status, 200, "GET {path}: {}", String::from_utf8_lossy(&reply.body));
    let instance = reply.instance();
    assert!(!instance.is_empty(), "no instance in {}", String::from_utf8_lossy(&reply.body));
    instance
}

/// Instance name to requests served, over `n` sequential GETs of `path`.
async fn tally(client: &HttpClient, gw: &Gateway, path: &str, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(served_by(client, gw, path, &[]).await).or_default() += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_equal_weights_gives_equal_shares() {
    let ups = three().await;
    let gw = gateway("    algorithm: round-robin\n", &targets(&ups, &[100, 100, 100])).await;
    let c = HttpClient::new();
    assert_eq!(tally(&c, &gw, "/rr", 30).await, counts(&[("a", 10), ("b", 10), ("c", 10)]));
    assert_eq!(ups.iter().map(Upstream::requests).collect::<Vec<_>>(), [10, 10, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_follows_weights() {
    let ups = three().await;
    // Round-robin is the default algorithm.
    let gw = gateway("", &targets(&ups, &[200, 100, 100])).await;
    let c = HttpClient::new();
    assert_eq!(tally(&c, &gw, "/rr", 40).await, counts(&[("a", 20), ("b", 10), ("c", 10)]));
    // Smooth: the heavy target never serves three in a row (nginx's order is a,b,a,c or alike).
    let mut order = Vec::new();
    for _ in 0..8 {
        order.push(served_by(&c, &gw, "/rr", &[]).await);
    }
    assert!(order.windows(3).all(|w| !(w[0] == "a" && w[1] == "a" && w[2] == "a")), "{order:?}");
    assert_eq!(order.iter().filter(|i| *i == "a").count(), 4, "{order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_zero_target_never_gets_traffic() {
    let ups = three().await;
    let gw = gateway("    algorithm: round-robin\n", &targets(&ups, &[100, 100, 0])).await;
    let c = HttpClient::new();
    assert_eq!(tally(&c, &gw, "/rr", 30).await, counts(&[("a", 15), ("b", 15)]));
    assert_eq!(ups[2].requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_counts_requests_in_flight() {
    let ups = three().await;
    let gw = gateway("    algorithm: least-connections\n", &targets(&ups, &[100, 100, 100])).await;
    let c = HttpClient::new();

    // Three slow requests at once: each finds the others in flight and takes a free instance.
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let (c, url) = (c.clone(), gw.url("/delay/400"));
            tokio::spawn(async move { c.get(&url).await })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for task in slow {
        let reply: Reply = task.await.expect("the request task");
        assert_eq!(reply.status, 200);
        seen.insert(reply.instance());
    }
    assert_eq!(seen.len(), 3, "three concurrent requests on {seen:?}");

    // Idle instances take turns.
    let spread = tally(&c, &gw, "/fast", 30).await;
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert!(spread.values().all(|n| *n >= 5), "{spread:?}");

    // While one instance holds a long request, the others get every new one.
    let before: Vec<u64> = ups.iter().map(Upstream::requests).collect();
    let long = {
        let (c, url) = (c.clone(), gw.url("/delay/2000"));
        tokio::spawn(async move { c.get(&url).await })
    };
    let busy = eventually(Duration::from_secs(5), "the long request to reach an instance", || {
        let hit = ups.iter().zip(&before).position(|(u, b)| u.requests() > *b);
        async move { hit }
    })
    .await;
    let during = tally(&c, &gw, "/fast", 12).await;
    assert!(!long.is_finished(), "the long request ended before the check was over; inconclusive");
    assert!(!during.contains_key(&ups[busy].name), "{} was busy yet got {during:?}", ups[busy].name);
    assert_eq!(during.values().sum::<usize>(), 12);
    assert_eq!(during.len(), 2, "the two idle instances share: {during:?}");
    assert_eq!(long.await.expect("the long request task").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_on_a_header_sticks() {
    let ups = three().await;
    let gw = gateway(
        "    algorithm: consistent-hashing\n    hash_on: header\n    hash_on_header: x-user\n",
        &targets(&ups, &[100, 100, 100]),
    )
    .await;
    let c = HttpClient::new();

    for user in ["alice", "bob"] {
        let mut seen = BTreeSet::new();
        for i in 0..20 {
            // The path changes; only the header is hashed.
            seen.insert(served_by(&c, &gw, &format!("/u/{i}"), &[("x-user", user)]).await);
        }
        assert_eq!(seen.len(), 1, "{user} went to {seen:?}");
    }

    let mut owner = BTreeMap::new();
    for i in 0..30 {
        let user = format!("user-{i}");
        owner.insert(user.clone(), served_by(&c, &gw, "/u", &[("x-user", &user)]).await);
    }
    let used: BTreeSet<_> = owner.values().collect();
    assert!(used.len() >= 2, "30 users all on {used:?}");
    // And each of them sticks on a second pass.
    for (user, instance) in &owner {
        assert_eq!(&served_by(&c, &gw, "/again", &[("x-user", user)]).await, instance, "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_on_the_path_sticks() {
    let ups = three().await;
    let gw = gateway("    algorithm: consistent-hashing\n    hash_on: path\n", &targets(&ups, &[100, 100, 100])).await;
    let c = HttpClient::new();

    for path in ["/p/alpha", "/p/beta"] {
        let mut seen = BTreeSet::new();
        for i in 0..20 {
            // Headers and query do not matter; only the path is hashed.
            let with_query = format!("{path}?n={i}");
            seen.insert(served_by(&c, &gw, &with_query, &[("x-user", &i.to_string())]).await);
        }
        assert_eq!(seen.len(), 1, "{path} went to {seen:?}");
    }

    let mut owner = BTreeMap::new();
    for i in 0..30 {
        let path = format!("/p/{i}");
        owner.insert(path.clone(), served_by(&c, &gw, &path, &[]).await);
    }
    let used: BTreeSet<_> = owner.values().collect();
    assert!(used.len() >= 2, "30 paths all on {used:?}");
    for (path, instance) in &owner {
        assert_eq!(&served_by(&c, &gw, path, &[]).await, instance, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_balancing_avoids_the_slow_instance() {
    let slow = Upstream::start_with_delay("slow", Duration::from_millis(40)).await;
    let fast1 = Upstream::start("fast1").await;
    let fast2 = Upstream::start("fast2").await;
    let ups = [slow, fast1, fast2];
    let gw = gateway("    algorithm: latency\n", &targets(&ups, &[100, 100, 100])).await;
    let c = HttpClient::new();

    // Warm-up: the fast instances get measured. The slow one may or may not be: an instance
    // never observed is assumed to answer in 1 ms, and fast loopback echoes can beat that.
    let warm = tally(&c, &gw, "/warm", 30).await;
    assert_eq!(warm.values().sum::<usize>(), 30);

    let before = ups[0].requests();
    let counted = tally(&c, &gw, "/measured", 100).await;
    let to_slow = ups[0].requests() - before;
    assert_eq!(counted.get("slow").copied().unwrap_or(0) as u64, to_slow);
    assert!(to_slow < 20, "the 40 ms instance got {to_slow} of 100: {counted:?}");
    assert!(counted.contains_key("fast1") && counted.contains_key("fast2"), "both fast ones serve: {counted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_on_another_target() {
    let ups = [Upstream::start("a").await, Upstream::start("b").await];
    let closed = closed_port();
    let mut all = vec![(closed.to_string(), 100)];
    all.extend(targets(&ups, &[100, 100]));
    let gw =
        gateway_with_service("    retries: 2\n    connect_timeout: 2000\n", "    algorithm: round-robin\n", &all).await;
    let c = HttpClient::new();

    // POSTs first, bodies of several sizes: the refused attempt sent nothing, so the body is
    // sent whole to the next target.
    for size in [5usize, 1_000, 70_000, 5, 1_000, 70_000] {
        let reply = c.call(Method::POST, &gw.url("/post"), vec![b'p'; size]).await;
        assert_eq!(reply.status, 200, "POST of {size} bytes: {}", String::from_utf8_lossy(&reply.body));
        let echo = reply.json();
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["body_bytes"].as_u64(), Some(size as u64), "{echo}");
    }
    eventually(Duration::from_secs(5), "a failed attempt on the closed port in the log", || {
        let seen = gw.logged("attempt failed before sending");
        async move { seen.then_some(()) }
    })
    .await;

    let spread = tally(&c, &gw, "/get", 30).await;
    assert_eq!(spread.values().sum::<usize>(), 30);
    assert_eq!(spread.len(), 2, "both live targets serve: {spread:?}");
    assert_eq!(ups[0].requests() + ups[1].requests(), 36);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_a_refused_connection_is_a_json_502() {
    let closed = closed_port();
    let gw = gateway_with_service("    retries: 0\n", "", &[(closed.to_string(), 100)]).await;
    let c = HttpClient::new();
    for method in [Method::GET, Method::POST] {
        let reply = c.call(method.clone(), &gw.url("/x"), "body").await;
        assert_eq!(reply.status, 502, "{method}: {}", String::from_utf8_lossy(&reply.body));
        assert!(reply.header("content-type").starts_with("application/json"), "{:?}", reply.headers);
        let message = reply.json()["message"].as_str().map(str::to_owned);
        assert!(message.is_some_and(|m| !m.is_empty()), "{}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.header("via"), "1.1 test-node");
    }
}
