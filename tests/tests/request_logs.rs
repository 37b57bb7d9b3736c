//! Request logs, end to end: the `http-log` plugin sending each request's record to a real
//! collector (fields, redaction, batches, Basic auth from the URL), requests unaffected by a
//! collector that hangs, fails or is gone (and what it drops, counted); the `access_log` setting
//! writing JSON lines to a file reopened on SIGUSR1, and to standard output; bad configs refused
//! with their path.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tests::collector::Collector;
use tests::http::HttpClient;
use tests::{eventually, run_gateway, Gateway, TempDir, Upstream};

const WAIT: Duration = Duration::from_secs(10);
const KEY: &str = "alice-secret-key-9f2";

/// A service with a key-auth route and an open route, both logging to `endpoint` with `queue`.
fn config(echo: &Upstream, endpoint: &str, queue: &str) -> String {
    format!(
        r#"
services:
  - name: orders
    url: "http://{echo}"
    plugins:
      http-log: {{ http_endpoint: "{endpoint}", headers: {{ X-Tenant: t1 }}, queue: {queue} }}
    routes:
      - {{ name: keyed, paths: [/keyed], plugins: {{ key-auth: {{}} }} }}
      - {{ name: open, paths: [/open] }}
  - name: quiet
    url: "http://{echo}"
    routes: [{{ name: quiet, paths: [/quiet] }}]
consumers:
  - username: alice
    custom_id: A-1
    keyauth_credentials: [{{ key: {KEY} }}]
"#,
        echo = echo.addr
    )
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_carry_kongs_fields_with_secrets_redacted() {
    let echo = Upstream::start("a").await;
    let collector = Collector::start().await;
    let endpoint = format!("http://logger:s3cret-pass@{}/logs?src=gw", collector.addr);
    let gw = Gateway::start(&config(&echo, &endpoint, "{}")).await;
    let c = HttpClient::new();
    let before = now_ms();
    let url = gw.url(&format!("/keyed/items?apikey={KEY}&page=2"));
    let reply =
        c.get_with(&url, &[("authorization", "Bearer top-secret-token"), ("cookie", "session=cookie-secret")]).await;
    assert_eq!(reply.status, 200);
    let entry = eventually(WAIT, "the entry at the collector", || async { collector.entries().pop() }).await;
    let text = entry.to_string();
    for secret in [KEY, "top-secret-token", "cookie-secret", "s3cret-pass"] {
        assert!(!text.contains(secret), "{secret} is in the entry: {text}");
    }
    let request = &entry["request"];
    assert_eq!(request["method"], "GET");
    assert_eq!(request["uri"], "/keyed/items?apikey=REDACTED&page=2");
    assert_eq!(request["url"], format!("http://{}/keyed/items?apikey=REDACTED&page=2", gw.proxy));
    assert_eq!(request["querystring"], serde_json::json!({"apikey": "REDACTED", "page": "2"}));
    assert_eq!(request["headers"]["authorization"], "REDACTED");
    assert_eq!(request["headers"]["cookie"], "REDACTED");
    assert!(request["size"].as_u64().unwrap() > 50, "{request}");
    let response = &entry["response"];
    assert_eq!(response["status"], 200);
    assert_eq!(response["size"].as_u64().unwrap(), reply.body.len() as u64, "body bytes sent");
    assert_eq!(response["headers"]["content-type"], "application/json");
    let latencies = &entry["latencies"];
    for field in ["request", "proxy", "upstream"] {
        assert!(latencies[field].as_i64().is_some_and(|ms| (0..5000).contains(&ms)), "{latencies}");
    }
    assert_eq!(entry["client_ip"], "127.0.0.1");
    assert_eq!(entry["service"]["name"], "orders");
    assert_eq!(entry["route"]["name"], "keyed");
    assert_eq!(entry["consumer"]["username"], "alice");
    assert_eq!(entry["consumer"]["custom_id"], "A-1");
    assert_eq!(entry["upstream_uri"], "/items?apikey=REDACTED&page=2");
    assert_eq!(entry["tries"][0]["port"], echo.addr.port());
    assert_eq!(entry["node"], "test-node");
    let started = entry["started_at"].as_u64().unwrap();
    assert!(started + 1000 >= before && started <= now_ms(), "{started} vs {before}");

    // The collector was called as configured: Basic auth from the URL, the extra header.
    let batch = collector.batches().pop().unwrap();
    assert_eq!(batch.method, "POST");
    assert_eq!(batch.path, "/logs?src=gw");
    assert_eq!(batch.headers["content-type"], "application/json");
    assert_eq!(batch.headers["x-tenant"], "t1");
    // base64("logger:s3cret-pass")
    assert_eq!(batch.headers["authorization"], "Basic bG9nZ2VyOnMzY3JldC1wYXNz");

    // A refused request is logged too, with its status; a service without the plugin is not.
    assert_eq!(c.get(&gw.url("/keyed/x")).await.status, 401);
    assert_eq!(c.get(&gw.url("/quiet")).await.status, 200);
    assert_eq!(c.get(&gw.url("/open")).await.status, 200);
    let entries = eventually(WAIT, "three entries", || async {
        let entries = collector.entries();
        (entries.len() >= 3).then_some(entries)
    })
    .await;
    assert_eq!(entries[1]["response"]["status"], 401);
    assert!(entries[1].get("consumer").is_none() && entries[1].get("upstream_uri").is_none());
    assert_eq!(entries[1]["latencies"]["upstream"], -1);
    assert_eq!(entries[2]["route"]["name"], "open", "the quiet route logged nothing");

    // The endpoint's password shows neither in the admin API nor in the node's log.
    let shown = c.get(&gw.admin_url("/services/orders")).await;
    let shown = String::from_utf8_lossy(&shown.body).into_owned();
    assert!(shown.contains("logger:<redacted>@") && !shown.contains("s3cret-pass"), "{shown}");
    assert!(!gw.logged("s3cret-pass"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_entries_to_a_batch_go_as_a_json_array() {
    let echo = Upstream::start("a").await;
    let collector = Collector::start().await;
    let queue = "{ max_batch_size: 5, max_coalescing_delay: 0.3 }";
    let gw = Gateway::start(&config(&echo, &collector.url("/"), queue)).await;
    let c = HttpClient::new();
    for i in 0..12 {
        assert_eq!(c.get(&gw.url(&format!("/open/{i}"))).await.status, 200);
    }
    eventually(WAIT, "twelve entries", || async { (collector.entries().len() == 12).then_some(()) }).await;
    let batches = collector.batches();
    assert!(batches.len() < 12, "entries were batched: {} batches", batches.len());
    for batch in &batches {
        let n = batch.entries().len();
        assert!(n <= 5, "at most max_batch_size entries: {n}");
        assert_eq!(batch.body.is_array(), n > 1, "one entry as an object, more as an array");
    }
    let uris: Vec<String> = collector.entries().iter().map(|e| e["request"]["uri"].as_str().unwrap().into()).collect();
    let expected: Vec<String> = (0..12).map(|i| format!("/open/{i}")).collect();
    assert_eq!(uris, expected, "in order, none lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_collector_slows_no_request_and_what_does_not_fit_is_dropped_and_counted() {
    let echo = Upstream::start("a").await;
    let collector = Collector::start().await;
    collector.hang(Duration::from_secs(30));
    let gw = Gateway::start(&config(&echo, &collector.url("/"), "{ max_entries: 10 }")).await;
    let c = HttpClient::new();
    // The first entry goes out and hangs; the queue holds ten; the rest cannot wait.
    let started = Instant::now();
    for _ in 0..200 {
        assert_eq!(c.get(&gw.url("/open")).await.status, 200);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "200 requests took {took:?} while the collector hung");
    eventually(WAIT, "the collector to be called", || async { (collector.arrived() >= 1).then_some(()) }).await;
    let dropped = gw.metric(r#"gateway_log_entries_dropped_total{plugin="http-log"}"#).await;
    assert!((185.0..=189.0).contains(&dropped), "dropped {dropped}: 200 less one in flight and ten queued");
    assert_eq!(gw.metric(r#"gateway_log_entries_dropped_total{plugin="access_log"}"#).await, 0.0);
    assert!(collector.batches().is_empty(), "nothing answered yet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_collector_counts_failed_batches_and_a_stopped_one_fails_no_request() {
    let echo = Upstream::start("a").await;
    let mut collector = Collector::start().await;
    collector.answer(500);
    let queue = "{ max_retry_time: 0.3, initial_retry_delay: 0.05, max_retry_delay: 0.1 }";
    let gw = Gateway::start(&config(&echo, &collector.url("/"), queue)).await;
    let c = HttpClient::new();
    assert_eq!(c.get(&gw.url("/open")).await.status, 200);
    eventually(WAIT, "the batch given up", || async {
        let m = gw.metrics().await;
        let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
        let failed = get(r#"gateway_log_batches_total{outcome="failed"}"#);
        let dropped = get(r#"gateway_log_batches_total{outcome="dropped"}"#);
        (failed >= 2.0 && dropped == 1.0).then_some(())
    })
    .await;
    assert_eq!(gw.metric(r#"gateway_log_entries_dropped_total{plugin="http-log"}"#).await, 1.0);
    assert_eq!(gw.metric(r#"gateway_log_batches_total{outcome="sent"}"#).await, 0.0);

    // The collector is back: entries arrive again.
    collector.answer(200);
    assert_eq!(c.get(&gw.url("/open")).await.status, 200);
    eventually(WAIT, "an entry sent", || async { (collector.entries().len() == 1).then_some(()) }).await;
    assert_eq!(gw.metric(r#"gateway_log_batches_total{outcome="sent"}"#).await, 1.0);

    // Gone: every request still succeeds, and the attempts fail.
    collector.stop().await;
    let failed = gw.metric(r#"gateway_log_batches_total{outcome="failed"}"#).await;
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(c.get(&gw.url("/open")).await.status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    eventually(WAIT, "refused attempts counted", || async {
        (gw.metric(r#"gateway_log_batches_total{outcome="failed"}"#).await > failed).then_some(())
    })
    .await;
}

/// The access log's lines in `path`, parsed.
fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_file_gets_a_line_per_request_and_is_reopened_on_sigusr1() {
    let echo = Upstream::start("a").await;
    let dir = TempDir::new();
    let path = dir.path().join("access.log");
    let yaml =
        format!("services: [{{ name: s, url: \"http://{}\", routes: [{{ name: r, paths: [/r] }}] }}]", echo.addr);
    let gw = Gateway::start_with(&yaml, &["--access-log", path.to_str().unwrap()]).await;
    let c = HttpClient::new();
    assert_eq!(c.get(&gw.url("/r/1?token=x")).await.status, 200);
    assert_eq!(c.get(&gw.url("/nowhere")).await.status, 404);
    let first = eventually(WAIT, "two lines", || async {
        let lines = lines(&path);
        (lines.len() == 2).then_some(lines)
    })
    .await;
    assert_eq!(first[0]["request"]["uri"], "/r/1?token=x");
    assert_eq!(first[0]["route"]["name"], "r");
    assert_eq!(first[0]["response"]["status"], 200);
    assert_eq!(first[0]["upstream_uri"], "/1?token=x");
    assert_eq!(first[1]["response"]["status"], 404, "a request no route took is logged");
    assert!(first[1].get("route").is_none());

    // logrotate: move the file away, then signal.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    gw.signal("USR1");
    eventually(WAIT, "the reopen", || async { gw.logged("access_log reopened").then_some(()) }).await;
    for i in 0..3 {
        assert_eq!(c.get(&gw.url(&format!("/r/after-{i}"))).await.status, 200);
    }
    let after = eventually(WAIT, "three lines in the new file", || async {
        let lines = lines(&path);
        (lines.len() == 3).then_some(lines)
    })
    .await;
    assert_eq!(after[0]["request"]["uri"], "/r/after-0");
    assert_eq!(lines(&rotated).len(), 2, "the rotated file got nothing more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_goes_to_stdout() {
    let echo = Upstream::start("a").await;
    let yaml =
        format!("services: [{{ name: s, url: \"http://{}\", routes: [{{ name: r, paths: [/r] }}] }}]", echo.addr);
    let gw = Gateway::start_with_env(&yaml, &[], &[("GATEWAY_ACCESS_LOG", "stdout")]).await;
    let reply = HttpClient::new().get_with(&gw.url("/r"), &[("cookie", "c=secret-cookie")]).await;
    assert_eq!(reply.status, 200);
    let line = eventually(WAIT, "a line on stdout", || async { gw.stdout_lines().pop() }).await;
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["request"]["uri"], "/r");
    assert_eq!(entry["request"]["headers"]["cookie"], "REDACTED");
    assert_eq!(entry["response"]["size"].as_u64().unwrap(), reply.body.len() as u64);
    assert_eq!(entry["service"]["name"], "s");
    // A rotation signal with no file to reopen does not stop the node.
    gw.signal("USR1");
    eventually(WAIT, "the signal noted", || async { gw.logged("nothing to reopen").then_some(()) }).await;
    assert_eq!(HttpClient::new().get(&gw.url("/r")).await.status, 200);
}

#[test]
fn bad_http_log_configs_are_refused_with_their_path() {
    let dir = TempDir::new();
    let file = dir.path().join("bad.yaml");
    let yaml = r#"
services:
  - name: s
    url: "http://127.0.0.1:1"
    routes:
      - { name: a, paths: [/a], plugins: { http-log: { http_endpoint: "not a url" } } }
      - { name: b, paths: [/b], plugins: { http-log: { http_endpoint: "ftp://user:hunter2@logs/x" } } }
      - { name: c, paths: [/c], plugins: { http-log: { http_endpoint: "http://logs/x", queue: { max_batch_size: 0 } } } }
"#;
    std::fs::write(&file, yaml).unwrap();
    let out = run_gateway(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "routes/a.plugins.http-log.http_endpoint: must be an http:// or https:// URL",
        "routes/b.plugins.http-log.http_endpoint: must be an http:// or https:// URL",
        "routes/c.plugins.http-log.queue.max_batch_size: must be 1 to 1000000",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
