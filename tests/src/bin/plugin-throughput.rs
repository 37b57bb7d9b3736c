//! `plugin-throughput [SECONDS] [CONNECTIONS]`: requests per second through one node on three
//! routes, in one run against the same upstream and Redis: no plugin, rate limiting (redis
//! policy, a limit never reached) and cache hits (redis strategy). Prints each and its ratio to
//! the plain proxy.
//!
//! Run: `cargo build --release --workspace --bins && GATEWAY_BIN=target/release/gateway \
//! GATEWAY_TEST_LOG_LEVEL=warn,gateway::node=info cargo run --release -p tests --bin plugin-throughput -- 5 32`.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::{Gateway, Redis, Upstream};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(5);
    let connections: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(32);
    let echo = Upstream::start("a").await;
    let redis = Redis::start().await;
    let yaml = format!(
        r#"
services:
  - name: s
    url: http://{addr}
    routes:
      - {{ name: plain, paths: [/plain], strip_path: false }}
      - {{ name: limited, paths: [/limited], strip_path: false, plugins: {{ rate-limiting: {{ second: 1000000000, policy: redis }} }} }}
      - {{ name: local, paths: [/local], strip_path: false, plugins: {{ rate-limiting: {{ second: 1000000000, policy: local }} }} }}
      - {{ name: cached, paths: [/cached], strip_path: false, plugins: {{ proxy-cache: {{ strategy: redis, cache_ttl: 3600 }} }} }}
"#,
        addr = echo.addr
    );
    let gw = Gateway::start_with(&yaml, &["--redis-url", &redis.url()]).await;
    let mut results = Vec::new();
    for path in ["/plain", "/limited", "/local", "/cached"] {
        // Warm up (and fill the cache) before counting.
        load(&gw.url(path), connections, Duration::from_millis(500)).await;
        let rate = load(&gw.url(path), connections, Duration::from_secs(seconds)).await;
        results.push((path, rate));
    }
    let plain = results[0].1;
    println!(
        "{connections} connections, {seconds} s per route, through one node (upstream and Redis on this machine):"
    );
    for (path, rate) in &results {
        println!("  {path:<9} {rate:>9.0} req/s   {:>5.2} x plain", rate / plain);
    }
}

/// Requests per second that `connections` keep-alive clients get from `url` in `duration`.
async fn load(url: &str, connections: usize, duration: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (url, done) = (url.parse::<http::Uri>().expect("a URL"), done.clone());
            tokio::spawn(async move {
                let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
                while Instant::now() < deadline {
                    let Ok(response) = client.get(url.clone()).await else { continue };
                    let ok = response.status().is_success();
                    let _ = response.into_body().collect().await;
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    for worker in workers {
        let _ = worker.await;
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
