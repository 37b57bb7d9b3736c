//! Decisions per second: `MemoryStore` and, if `REDIS_URL` points at a reachable server, `RedisStore`.
//!
//! `REDIS_URL=redis://127.0.0.1:6379 cargo bench -p ratelimit`. Besides criterion's per-decision
//! times, prints decisions per second of each store (one caller, and for Redis also 64 concurrent
//! callers pipelining over the one connection) and their ratio to the memory store.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use ratelimit::{counter_key, Algorithm, MemoryStore, RedisConfig, RedisStore, Store, Window};
use tokio::runtime::Runtime;

/// Limits no run reaches, so every decision counts (the common case on the hot path).
const LIMITS: [(Window, u64); 2] = [(Window::Second, 1 << 40), (Window::Minute, 1 << 40)];
/// Distinct clients the keys rotate over.
const CLIENTS: usize = 1_000;

fn keys() -> Vec<String> {
    (0..CLIENTS).map(|i| counter_key("route:bench:0123abcd", &format!("10.0.{}.{}", i / 256, i % 256))).collect()
}

/// Decisions per second of `store` over `span`, `callers` at a time.
fn throughput<S: Store + 'static>(
    rt: &Runtime,
    store: Arc<S>,
    keys: &Arc<Vec<String>>,
    callers: usize,
    span: Duration,
) -> f64 {
    rt.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|caller| {
                let (store, keys) = (store.clone(), keys.clone());
                tokio::spawn(async move {
                    let mut done = 0_u64;
                    while started.elapsed() < span {
                        let key = &keys[(caller * 7 + done as usize) % keys.len()];
                        let decision = store.check(key, &LIMITS, Algorithm::Sliding, SystemTime::now()).await;
                        assert!(decision.expect("a decision").allowed);
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.expect("bench task");
        }
        total as f64 / started.elapsed().as_secs_f64()
    })
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
        .configure_from_args();
    let keys = Arc::new(keys());

    let memory = Arc::new(MemoryStore::new());
    let mut i = 0;
    criterion.bench_function("memory/check_sync/sliding_2_windows", |b| {
        b.iter(|| {
            i = (i + 1) % CLIENTS;
            black_box(memory.check_sync(&keys[i], &LIMITS, Algorithm::Sliding, SystemTime::now()))
        })
    });
    let memory_rate = throughput(&rt, memory.clone(), &keys, 1, Duration::from_millis(500));
    println!("memory: {memory_rate:.0} decisions/s (1 caller)");

    let redis = std::env::var("REDIS_URL").ok().and_then(|url| {
        let store = rt.block_on(RedisStore::connect(
            url.as_str(),
            RedisConfig { timeout: Duration::from_secs(1), ..Default::default() },
        ));
        store.map_err(|e| println!("redis: skipped, {url}: {e}")).ok()
    });
    match redis {
        None => println!("redis: skipped (set REDIS_URL to a reachable server)"),
        Some(redis) => {
            let redis = Arc::new(redis);
            let mut i = 0;
            criterion.bench_function("redis/check/sliding_2_windows", |b| {
                b.iter(|| {
                    i = (i + 1) % CLIENTS;
                    rt.block_on(redis.check(&keys[i], &LIMITS, Algorithm::Sliding, SystemTime::now()))
                        .expect("a decision")
                })
            });
            let one = throughput(&rt, redis.clone(), &keys, 1, Duration::from_secs(1));
            let many = throughput(&rt, redis.clone(), &keys, 64, Duration::from_secs(1));
            println!("redis: {one:.0} decisions/s (1 caller), memory/redis = {:.0}x", memory_rate / one);
            println!("redis: {many:.0} decisions/s (64 callers), memory/redis = {:.1}x", memory_rate / many);
        }
    }
    criterion.final_summary();
}
