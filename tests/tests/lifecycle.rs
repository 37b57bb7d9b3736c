//! A node's life: refusing an invalid file at start, `gateway validate`, reloading on SIGHUP
//! (a bad file keeps the old config), and draining in-flight requests on SIGTERM.

use std::process::Command;
use std::time::Duration;
use tests::http::HttpClient;
use tests::{eventually, Gateway, TempDir, Upstream};

const BAD: &str = r#"
services:
  - name: orders
    url: ftp://orders
    retries: -1
    routes:
      - name: orders
        paths: ["~(unclosed"]
routes:
  - { name: lost, service: nobody, paths: [/lost] }
upstreams:
  - { name: up, algorithm: fastest, targets: [{ target: "no-port" }] }
"#;

const EXPECTED: [&str; 5] = [
    "services/orders.retries",
    "routes/orders.paths[0]: invalid regex",
    "upstreams/up.algorithm",
    "routes/lost.service: unknown service",
    "services/orders.url",
];

fn gateway_command() -> Command {
    let bin = std::env::var("GATEWAY_BIN").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("gateway")
    });
    Command::new(bin)
}

#[test]
fn validate_lists_every_error_and_exits_1() {
    let dir = TempDir::new();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, BAD).unwrap();
    let out = gateway_command().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for e in EXPECTED.iter().filter(|e| !e.starts_with("services/orders.url")) {
        assert!(stderr.contains(e), "missing {e:?} in:\n{stderr}");
    }
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "services: [{ name: a, url: \"http://127.0.0.1:1\", routes: [{ name: a, paths: [/] }] }]")
        .unwrap();
    let out = gateway_command().arg("validate").arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_invalid_file_at_start_exits_1_listing_every_error() {
    let dir = TempDir::new();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, BAD.replace("retries: -1", "retries: 1")).unwrap();
    let out = gateway_command()
        .args(["run", "--proxy-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config-file"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for e in EXPECTED.iter().filter(|e| !e.starts_with("services/orders.retries")) {
        assert!(stderr.contains(e), "missing {e:?} in:\n{stderr}");
    }
}

#[test]
fn bad_settings_exit_1_naming_the_setting() {
    let out = gateway_command()
        .args(["run", "--proxy-listen", "127.0.0.1:0"])
        .env("GATEWAY_ADMIN_LISTEN", "nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_ascii_lowercase().contains("admin_listen"), "{stderr}");

    // Several Redis URLs name a cluster's seeds, which needs the cluster mode said.
    let out = gateway_command()
        .args(["run", "--proxy-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--redis-url", "redis://127.0.0.1:7000,redis://127.0.0.1:7001"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("redis_url") && stderr.contains("redis_cluster = true"), "{stderr}");
}

fn config(echo: &Upstream, path: &str) -> String {
    format!("services: [{{ name: a, url: \"http://{}\", routes: [{{ name: a, paths: [{path}] }}] }}]", echo.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_right_after_listening_reloads_and_does_not_kill() {
    let echo = Upstream::start("a").await;
    // Both cores kept busy, so that a node's tasks may run late after it says it listens.
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let busy = busy.clone();
            std::thread::spawn(move || while busy.load(std::sync::atomic::Ordering::Relaxed) {})
        })
        .collect();
    // Several nodes, each signalled the moment it says it listens: SIGHUP's default action
    // (exit) must already be taken over by then.
    for _ in 0..10 {
        let gw = Gateway::start(&config(&echo, "/old")).await;
        gw.write_config(&config(&echo, "/new"));
        gw.signal("HUP");
        let client = HttpClient::new();
        eventually(Duration::from_secs(10), "the new config to be served", || async {
            (client.get(&gw.url("/new")).await.status == 200).then_some(())
        })
        .await;
    }
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    for spinner in spinners {
        spinner.join().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_good_file_and_refuses_a_bad_one() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(&echo, "/old")).await;
    let client = HttpClient::new();
    assert_eq!(client.get(&gw.url("/old")).await.status, 200);
    let status = client.get(&gw.admin_url("/status")).await.json();
    assert_eq!(status["config"]["version"], 1);

    gw.write_config(BAD);
    gw.signal("HUP");
    eventually(Duration::from_secs(10), "the reload to be refused", || async {
        gw.logged("reload refused").then_some(())
    })
    .await;
    assert!(gw.logged("routes/orders.paths[0]: invalid regex"), "the refusal should list the errors");
    assert_eq!(client.get(&gw.url("/old")).await.status, 200, "the old config must still be served");
    let status = client.get(&gw.admin_url("/status")).await.json();
    assert_eq!(status["config"]["version"], 1);

    gw.write_config(&config(&echo, "/new"));
    gw.signal("HUP");
    eventually(Duration::from_secs(10), "the new config to be served", || async {
        (client.get(&gw.url("/new")).await.status == 200).then_some(())
    })
    .await;
    assert_eq!(client.get(&gw.url("/old")).await.status, 404);
    let status = client.get(&gw.admin_url("/status")).await.json();
    assert_eq!(status["config"]["version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let echo = Upstream::start("a").await;
    let mut gw = Gateway::start(&config(&echo, "/")).await;
    let url = gw.url("/delay/700");
    let in_flight = tokio::spawn(async move { HttpClient::new().get(&url).await });
    eventually(Duration::from_secs(5), "the request to reach the upstream", || async {
        (echo.requests() > 0).then_some(())
    })
    .await;
    gw.signal("TERM");
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request must finish");
    let status = gw.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(tokio::net::TcpStream::connect(gw.proxy).await.is_err(), "still accepting after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_period_bounds_shutdown() {
    let echo = Upstream::start("a").await;
    let mut gw = Gateway::start_with(&config(&echo, "/"), &["--shutdown-grace-ms", "300"]).await;
    let url = gw.url("/delay/30000");
    let stuck = tokio::spawn(async move {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Full<bytes::Bytes>>();
        client.get(url.parse().unwrap()).await.is_ok()
    });
    eventually(Duration::from_secs(5), "the request to reach the upstream", || async {
        (echo.requests() > 0).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    gw.signal("TERM");
    gw.wait(Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    assert!(!stuck.await.unwrap(), "the stuck request should have been cut");
}

/// `worker_threads = 1` runs the node on a single-threaded runtime (the setting the benchmarks
/// use): one thread serves many requests at once, the admin API, a reload and a clean shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_serves_requests_concurrently_reloads_and_stops() {
    let echo = Upstream::start("a").await;
    let mut gw = Gateway::start_with(&config(&echo, "/"), &["--worker-threads", "1"]).await;
    let threads = std::fs::read_dir(format!("/proc/{}/task", gw.pid())).unwrap().count();
    assert_eq!(threads, 1, "one worker: the node should run on its main thread alone");

    // Eight slow requests are all at the upstream at once: none waits for another to finish.
    let slow: Vec<_> = (0..8)
        .map(|i| {
            let url = gw.url(&format!("/delay/1500?n={i}"));
            tokio::spawn(async move { HttpClient::new().get(&url).await.status })
        })
        .collect();
    eventually(Duration::from_secs(5), "eight requests in flight at the upstream", || async {
        (echo.requests() == 8).then_some(())
    })
    .await;
    assert!(slow.iter().all(|r| !r.is_finished()), "a request finished before all eight had arrived");
    let client = HttpClient::new();
    assert_eq!(client.get(&gw.admin_url("/status")).await.status, 200, "the admin API answers meanwhile");
    for request in slow {
        assert_eq!(request.await.unwrap(), 200);
    }

    gw.write_config(&config(&echo, "/new"));
    gw.signal("HUP");
    eventually(Duration::from_secs(10), "the new config to be served", || async {
        (client.get(&gw.url("/new")).await.status == 200).then_some(())
    })
    .await;
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
}
