//! `RedisStore` against real `redis-server` processes (Debian's `redis-server`, which the test
//! command installs).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ratelimit::{counter_key, Algorithm, Counters, RedisConfig, RedisStore, RedisTarget, Store, StoreError, Window};
use redis::Commands;
use support::RedisServer;

/// 2024-01-01T00:00:00Z plus `ms`: a minute, hour and day boundary.
fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_704_067_200_000 + ms)
}

const MIN: u64 = 60_000;

fn config() -> RedisConfig {
    RedisConfig { timeout: Duration::from_millis(50), ..RedisConfig::default() }
}

/// Checks on three stores, as three gateway nodes would, all at once.
async fn attempts_through_three_nodes(
    stores: &[RedisStore],
    key: &str,
    algorithm: Algorithm,
    attempts: usize,
) -> usize {
    let tasks: Vec<_> = (0..attempts)
        .map(|i| {
            let (store, key) = (stores[i % stores.len()].clone(), key.to_owned());
            tokio::spawn(async move {
                // A generous timeout here: this test is about counting, not latency.
                let decision = store.check(&key, &[(Window::Minute, 10)], algorithm, at(30_000)).await;
                decision.expect("a decision").allowed
            })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += usize::from(task.await.expect("task"));
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_counter() {
    let Some(server) = RedisServer::start() else { return };
    let config = RedisConfig { timeout: Duration::from_secs(2), ..config() };
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(RedisStore::connect(server.url(), config).await.expect("connect"));
    }
    for algorithm in [Algorithm::Fixed, Algorithm::Sliding] {
        let key = counter_key(&format!("route:orders:{algorithm:?}"), "10.0.0.7");
        assert_eq!(attempts_through_three_nodes(&stores, &key, algorithm, 40).await, 10, "{algorithm:?}");
    }
}

#[tokio::test]
async fn decides_exactly_like_the_sans_io_counters() {
    let Some(server) = RedisServer::start() else { return };
    let store = RedisStore::connect(server.url(), config()).await.expect("connect");
    let limits = [(Window::Second, 4), (Window::Minute, 25), (Window::Hour, 200)];
    for algorithm in [Algorithm::Sliding, Algorithm::Fixed] {
        let key = counter_key("route:mirror", &format!("{algorithm:?}"));
        let mut counters = Counters::new();
        // Irregular steps across second and minute boundaries, bursts included.
        let mut now = 50_000;
        for step in 0_u64..400 {
            now += [3, 0, 0, 41, 250, 7, 0, 1_003][step as usize % 8];
            let expected = counters.check(&limits, algorithm, at(now));
            let got = store.check(&key, &limits, algorithm, at(now)).await.expect("a decision");
            assert_eq!(got, expected, "{algorithm:?} step {step} at +{now} ms");
        }
    }
}

#[tokio::test]
async fn sliding_window_allows_no_double_burst_at_the_edge() {
    let Some(server) = RedisServer::start() else { return };
    let store = RedisStore::connect(server.url(), config()).await.expect("connect");
    let key = counter_key("route:edge", "client");
    let limits = [(Window::Minute, 10)];
    let through = |now: SystemTime, n: usize| {
        let (store, key) = (&store, &key);
        async move {
            let mut allowed = 0;
            for _ in 0..n {
                allowed +=
                    usize::from(store.check(key, &limits, Algorithm::Sliding, now).await.expect("a decision").allowed);
            }
            allowed
        }
    };
    assert_eq!(through(at(59_000), 12).await, 10, "10 at 00:59");
    assert_eq!(through(at(MIN), 10).await, 0, "none more at 01:00");
    assert_eq!(through(at(MIN + 5_999), 10).await, 0);
    assert_eq!(through(at(MIN + 6_000), 10).await, 1, "one more after 6 s of decay");
    let refused = store.check(&key, &limits, Algorithm::Sliding, at(MIN + 6_000)).await.expect("a decision");
    assert!(!refused.allowed);
    // 1 + 10 * (1 - e/60) <= 9 at e = 12 s.
    assert_eq!(refused.retry_after, Some(Duration::from_secs(6)));
    assert_eq!(refused.windows[0].reset, Duration::from_secs(54));
}

#[tokio::test]
async fn every_key_gets_a_ttl() {
    let Some(server) = RedisServer::start() else { return };
    let store = RedisStore::connect(server.url(), config()).await.expect("connect");
    let limits = Window::ALL.map(|window| (window, 100));
    for (algorithm, factor) in [(Algorithm::Fixed, 1), (Algorithm::Sliding, 2)] {
        let base = counter_key(&format!("route:ttl:{algorithm:?}"), "client");
        // Two consecutive seconds, so the sliding second window has a previous key too.
        for now in [at(5_500), at(6_500)] {
            assert!(store.check(&base, &limits, algorithm, now).await.expect("a decision").allowed);
        }
        let mut admin = server.admin();
        let keys: Vec<String> = admin.keys(format!("{}*", base.replace('{', "\\{").replace('}', "\\}"))).expect("KEYS");
        assert_eq!(keys.len(), 5, "{algorithm:?}: four windows, the second window twice: {keys:?}");
        for key in keys {
            let len_secs: u64 = key.rsplit(':').nth(1).and_then(|s| s.parse().ok()).expect("window length in key");
            let pttl: i64 = admin.pttl(&key).expect("PTTL");
            assert!(pttl > 0, "{key} has no TTL ({pttl})");
            assert!(pttl as u64 <= factor * len_secs * 1_000, "{key}: {pttl} ms");
        }
    }
}

fn command_calls(admin: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(admin).expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a count"))
}

#[tokio::test]
async fn the_script_is_loaded_once_and_again_after_a_flush() {
    let Some(server) = RedisServer::start() else { return };
    let store = RedisStore::connect(server.url(), config()).await.expect("connect");
    let key = counter_key("route:script", "client");
    for _ in 0..20 {
        store.check(&key, &[(Window::Minute, 100)], Algorithm::Sliding, at(0)).await.expect("a decision");
    }
    let mut admin = server.admin();
    assert_eq!(command_calls(&mut admin, "script|load"), 1);
    assert_eq!(command_calls(&mut admin, "evalsha"), 20);
    assert_eq!(command_calls(&mut admin, "eval"), 0, "the script body is never sent with each call");

    // As after a restart or a failover to a fresh replica: NOSCRIPT, load again, retry once.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut admin).expect("SCRIPT FLUSH");
    let decision = store.check(&key, &[(Window::Minute, 100)], Algorithm::Sliding, at(0)).await.expect("a decision");
    assert_eq!((decision.allowed, decision.windows[0].remaining), (true, 79));
    let exists: Vec<bool> =
        redis::cmd("SCRIPT").arg("EXISTS").arg(store.script_sha()).query(&mut admin).expect("EXISTS");
    assert_eq!(exists, [true]);
    assert_eq!(command_calls(&mut admin, "script|load"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_of_one_key_share_calls_and_decide_as_if_in_turn() {
    let Some(server) = RedisServer::start() else { return };
    let config = RedisConfig { timeout: Duration::from_secs(2), ..config() };
    let store = RedisStore::connect(server.url(), config).await.expect("connect");
    let limits = [(Window::Second, 1_000), (Window::Minute, 50)];
    for algorithm in [Algorithm::Fixed, Algorithm::Sliding] {
        let key = counter_key(&format!("route:joined:{algorithm:?}"), "client");
        let mut admin = server.admin();
        let calls_before = command_calls(&mut admin, "evalsha");
        let tasks: Vec<_> = (0..300)
            .map(|_| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move { store.check(&key, &limits, algorithm, at(30_000)).await })
            })
            .collect();
        let mut remaining = Vec::new();
        let mut refused = 0;
        for task in tasks {
            let decision = task.await.expect("task").expect("a decision");
            if decision.allowed {
                remaining.push(decision.windows[1].remaining);
            } else {
                refused += 1;
                assert_eq!(decision.windows[1].remaining, 0, "{algorithm:?}");
                // Fixed: the minute ends in 30 s; sliding: then 1.2 s more, for the 50 to decay.
                let wait = decision.retry_after.expect("a refusal says when to retry");
                assert!(
                    wait >= Duration::from_secs(30) && wait <= Duration::from_millis(31_200),
                    "{algorithm:?}: {wait:?}"
                );
            }
        }
        // Exactly the limit through, each allowed check told a different remaining count, as one
        // after another would have been.
        remaining.sort_unstable();
        assert_eq!(remaining, (0..50).collect::<Vec<u64>>(), "{algorithm:?}");
        assert_eq!(refused, 250, "{algorithm:?}");
        let calls = command_calls(&mut admin, "evalsha") - calls_before;
        assert!(calls < 300, "{algorithm:?}: queued checks went out together ({calls} calls for 300 checks)");
        let counted: u64 = admin.get(ratelimit::window_key(&key, Window::Minute, at(30_000))).expect("GET");
        assert_eq!(counted, 50, "{algorithm:?}: refusals count nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_fails_within_the_timeout_and_a_restarted_one_is_used_again() {
    let Some(mut server) = RedisServer::start() else { return };
    let store = Arc::new(RedisStore::connect(server.url(), config()).await.expect("connect"));
    let key = counter_key("route:outage", "client");
    let limits = [(Window::Minute, 1_000)];
    assert!(store.check(&key, &limits, Algorithm::Sliding, SystemTime::now()).await.expect("a decision").allowed);

    server.kill();
    // Several rounds while the client notices and keeps reconnecting; concurrent callers too.
    for round in 0..5 {
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let result = store.check(&key, &limits, Algorithm::Sliding, SystemTime::now()).await;
                    (result, started.elapsed())
                })
            })
            .collect();
        for call in calls {
            let (result, took) = call.await.expect("task");
            let err = result.expect_err("no decision from a dead redis");
            eprintln!("round {round}: {err} after {took:?}");
            assert!(matches!(err, StoreError::Timeout(_) | StoreError::Connection(_)), "{err:?}");
            assert!(took < Duration::from_millis(300), "round {round}: {err} after {took:?}");
        }
        let started = Instant::now();
        assert!(store.ping().await.is_err());
        assert!(started.elapsed() < Duration::from_millis(300));
    }

    server.restart();
    let restarted = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.check(&key, &limits, Algorithm::Sliding, SystemTime::now()).await {
            Ok(decision) => {
                eprintln!("used again {:?} after the restart", restarted.elapsed());
                assert!(decision.allowed);
                break;
            }
            Err(err) => assert!(Instant::now() < deadline, "still failing after the restart: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.ping().await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_shares_one_counter_per_key() {
    let Some(nodes) = support::start_cluster() else { return };
    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let config = RedisConfig { timeout: Duration::from_secs(2), connect_timeout: Duration::from_secs(5), ..config() };
    let mut stores = Vec::new();
    for url in &urls {
        // Each "node" knows the cluster through a different seed.
        stores.push(
            RedisStore::connect(RedisTarget::Cluster(vec![url.clone()]), config).await.expect("connect to the cluster"),
        );
    }
    // Several identities, so the keys spread over the three primaries' slots.
    for client in 0..6 {
        let key = counter_key("route:cluster", &format!("client-{client}"));
        assert_eq!(attempts_through_three_nodes(&stores, &key, Algorithm::Sliding, 40).await, 10, "{key}");
    }
    let mut used = 0;
    for node in &nodes {
        let size: u64 = redis::cmd("DBSIZE").query(&mut node.admin()).expect("DBSIZE");
        used += usize::from(size > 0);
    }
    assert!(used >= 2, "keys spread over the primaries");
    assert_eq!(stores[0].ping().await, Ok(()));
    // A primary lost (no replica to fail over to): the store no longer counts as answering, so
    // the gateway falls back for every key rather than for a third of them.
    let mut nodes = nodes;
    nodes[2].kill();
    assert!(stores[0].ping().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opened_while_redis_is_down_connects_when_it_comes_up() {
    let port = support::free_port();
    let store = RedisStore::open(format!("redis://127.0.0.1:{port}"), config()).expect("a usable url");
    let key = counter_key("route:late", "client");
    let limits = [(Window::Minute, 5)];
    let started = Instant::now();
    assert!(store.check(&key, &limits, Algorithm::Sliding, at(0)).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(300), "{:?}", started.elapsed());

    let Some(server) = RedisServer::start_on(port, false) else { return };
    ping_until_it_answers(&store).await;
    // The ping loaded the script, so the first check is one EVALSHA, not NOSCRIPT and a reload.
    let loaded: Vec<bool> =
        redis::cmd("SCRIPT").arg("EXISTS").arg(store.script_sha()).query(&mut server.admin()).expect("SCRIPT EXISTS");
    assert_eq!(loaded, [true]);
    let decision = store.check(&key, &limits, Algorithm::Sliding, at(0)).await.expect("a decision");
    assert_eq!((decision.allowed, decision.windows[0].remaining), (true, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_store_opened_before_the_cluster_is_up_uses_it_once_it_is() {
    let ports = support::free_ports::<3>();
    let seeds = ports.iter().map(|port| format!("redis://127.0.0.1:{port}")).collect();
    let config = RedisConfig { timeout: Duration::from_millis(500), ..config() };
    let store = RedisStore::open(RedisTarget::Cluster(seeds), config).expect("usable urls");
    let key = counter_key("route:late-cluster", "client");
    let limits = [(Window::Minute, 2)];
    assert!(store.check(&key, &limits, Algorithm::Sliding, at(0)).await.is_err(), "nothing is up yet");

    let Some(_nodes) = support::start_cluster_on(ports) else { return };
    ping_until_it_answers(&store).await;
    let mut allowed = Vec::new();
    for _ in 0..3 {
        allowed.push(store.check(&key, &limits, Algorithm::Sliding, at(0)).await.expect("a decision").allowed);
    }
    assert_eq!(allowed, [true, true, false]);
}

/// Pings `store` until it answers, for at most 20 s.
async fn ping_until_it_answers(store: &RedisStore) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(err) = store.ping().await {
        assert!(Instant::now() < deadline, "never connected: {err}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_refused_without_redis_until_its_window_ends() {
    let Some(mut server) = RedisServer::start() else { return };
    let store = RedisStore::connect(server.url(), config()).await.expect("connect");
    let key = counter_key("route:hammered", "client");
    let limits = [(Window::Minute, 3), (Window::Hour, 100)];
    for _ in 0..3 {
        assert!(store.check(&key, &limits, Algorithm::Fixed, at(10_000)).await.unwrap().allowed);
    }
    let refused = store.check(&key, &limits, Algorithm::Fixed, at(10_000)).await.unwrap();
    assert_eq!((refused.allowed, refused.retry_after), (false, Some(Duration::from_secs(50))));

    // Redis gone: the refusal is known to hold until the minute ends, and is answered here, as
    // Redis would have answered it.
    server.kill();
    let later = store.check(&key, &limits, Algorithm::Fixed, at(40_000)).await.expect("answered locally");
    assert_eq!((later.allowed, later.retry_after), (false, Some(Duration::from_secs(20))));
    assert_eq!((later.windows[0].remaining, later.windows[1].remaining), (0, 97));
    // A new minute: only Redis can say, and it is gone.
    assert!(store.check(&key, &limits, Algorithm::Fixed, at(MIN)).await.is_err());
    // Another client was never refused: it asks Redis.
    let other = counter_key("route:hammered", "someone-else");
    assert!(store.check(&other, &limits, Algorithm::Fixed, at(40_000)).await.is_err());
}
