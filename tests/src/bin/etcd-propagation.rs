//! `etcd-propagation [WRITES]`: how long a put to etcd takes to be applied by every node of a
//! three-node cluster. Starts etcd and three gateways on loopback (as the tests do), writes
//! WRITES (default 200) route changes one after another, and for each measures from sending the
//! put (etcd's commit included) until all three nodes' `/status` report its revision. Prints p50, p90, p99 and max.
//!
//! Run: `cargo build --release --workspace --bins && GATEWAY_BIN=target/release/gateway \
//! cargo run --release -p tests --bin etcd-propagation`.

use std::time::{Duration, Instant};
use tests::http::HttpClient;
use tests::{Etcd, Gateway, Upstream};

#[tokio::main]
async fn main() {
    let writes: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(200);
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Gateway::start_etcd(&format!("node-{i}"), &etcd.url(), &[]).await);
    }
    etcd.put("/gateway/upstreams/up", "{}").await;
    etcd.put(&format!("/gateway/upstreams/up/targets/{}", echo.addr), "{}").await;
    etcd.put("/gateway/services/s", r#"{"url": "http://up"}"#).await;
    let clients: Vec<HttpClient> = nodes.iter().map(|_| HttpClient::new()).collect();
    let mut client = etcd.client().await;
    let mut samples = Vec::with_capacity(writes);
    for i in 0..writes {
        let value = format!(r#"{{"service": "s", "paths": ["/p/{i}"]}}"#);
        let started = Instant::now();
        let response = client.put("/gateway/routes/probe", value, None).await.expect("put");
        let revision = response.header().expect("a header").revision();
        let waits = nodes.iter().zip(&clients).map(|(gw, c)| applied(gw, c, revision));
        futures_util::future::join_all(waits).await;
        samples.push(started.elapsed());
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    println!("put -> applied on all 3 nodes, {writes} writes:");
    for (name, value) in [("p50", at(0.50)), ("p90", at(0.90)), ("p99", at(0.99)), ("max", at(1.0))] {
        println!("  {name:>4}  {:>8.2} ms", value.as_secs_f64() * 1000.0);
    }
}

/// Polls `/status` until the node reports `revision` (each poll is one loopback request).
async fn applied(gw: &Gateway, client: &HttpClient, revision: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = client.get(&gw.admin_url("/status")).await.json();
        if status["config"]["version"].as_i64().unwrap_or(0) >= revision {
            return;
        }
        assert!(Instant::now() < deadline, "revision {revision} not applied within 10 s");
    }
}
