//! A rolling restart under load, behind a real load balancer: HAProxy in front of three nodes,
//! checking each node's `/status/ready`. Each node in turn gets SIGTERM, answers 503 there while
//! it serves on for `shutdown_drain_ms`, stops, and starts again on the same ports. The clients
//! of the load balancer see no failed request. Skipped, saying why, without HAProxy.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tests::http::HttpClient;
use tests::{eventually, free_port, Gateway, TempDir, Upstream};

const WAIT: Duration = Duration::from_secs(20);
/// HAProxy checks every 100 ms and takes a node out at the first failure: half a second of
/// drain is five checks.
const DRAIN: [&str; 4] = ["--shutdown-drain-ms", "500", "--cluster-probe-period-ms", "200"];

fn haproxy() -> Option<std::path::PathBuf> {
    ["/usr/sbin/haproxy", "/usr/bin/haproxy"].iter().map(std::path::PathBuf::from).find(|p| p.exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_a_load_balancer_fails_no_request() {
    let Some(haproxy) = haproxy() else {
        eprintln!("skipped: HAProxy is not installed");
        return;
    };
    let echo = Upstream::start("a").await;
    let yaml = format!("services: [{{ name: s, url: \"http://{}\", routes: [{{ name: r, paths: [/] }}] }}]", echo.addr);
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let mut nodes = Vec::new();
    for (i, &(proxy, admin)) in ports.iter().enumerate() {
        let seed = nodes.first().map(|n: &Gateway| n.gossip.to_string());
        let mut flags = DRAIN.to_vec();
        if let Some(seed) = &seed {
            flags.extend(["--cluster-seeds", seed]);
        }
        nodes.push(Gateway::start_at(&format!("node-{}", i + 1), &yaml, &flags, proxy, admin).await);
    }

    let dir = TempDir::new();
    let front = free_port();
    let servers: String = ports
        .iter()
        .enumerate()
        .map(|(i, (proxy, admin))| format!("    server n{i} 127.0.0.1:{proxy} check port {admin}\n"))
        .collect();
    let config = format!(
        "global\n    maxconn 1000\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n    \
         timeout server 10s\nfrontend f\n    bind 127.0.0.1:{front}\n    default_backend b\nbackend b\n    \
         option httpchk GET /status/ready\n    http-check expect status 200\n    \
         default-server inter 100ms fall 1 rise 1\n{servers}"
    );
    let config_path = dir.path().join("haproxy.cfg");
    std::fs::write(&config_path, config).unwrap();
    let mut balancer = tokio::process::Command::new(haproxy)
        .args(["-db", "-f"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start HAProxy");
    let url = format!("http://127.0.0.1:{front}/");
    let client = HttpClient::new();
    eventually(WAIT, "HAProxy serving", || async { client.try_get(&url).await.ok().filter(|r| r.status == 200) }).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (url, stop, sent, failed) = (url.clone(), stop.clone(), sent.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let client = HttpClient::new();
            while !stop.load(Ordering::Relaxed) {
                let status = client.try_get(&url).await.map(|reply| reply.status.as_u16());
                sent.fetch_add(1, Ordering::Relaxed);
                if status != Ok(200) {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed: {status:?}");
                }
            }
        }));
    }

    for (i, &(proxy, admin)) in ports.iter().enumerate() {
        let before = sent.load(Ordering::Relaxed);
        nodes[i].signal("TERM");
        let status = nodes[i].wait(WAIT).await;
        assert!(status.success(), "node-{} exited {status:?}", i + 1);
        let seed = nodes[(i + 1) % 3].gossip.to_string();
        let mut flags = DRAIN.to_vec();
        flags.extend(["--cluster-seeds", &seed]);
        nodes[i] = Gateway::start_at(&format!("node-{}", i + 1), &yaml, &flags, proxy, admin).await;
        let ready = nodes[i].admin_url("/status/ready");
        eventually(WAIT, "the restarted node ready", || async {
            client.try_get(&ready).await.ok().filter(|r| r.status == 200)
        })
        .await;
        // Traffic went on meanwhile.
        eventually(WAIT, "requests flowing", || async { (sent.load(Ordering::Relaxed) > before + 200).then_some(()) })
            .await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let _ = balancer.kill().await;
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{sent} requests through the load balancer during the rolling restart, {failed} failed");
    assert_eq!(failed, 0, "of {sent}");
}

/// `/status/ready`: 200 while serving a config, 503 naming why not once shutting down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_503_at_shutdown_while_the_node_serves_on() {
    let echo = Upstream::start("a").await;
    let yaml = format!("services: [{{ name: s, url: \"http://{}\", routes: [{{ name: r, paths: [/] }}] }}]", echo.addr);
    let mut gw = Gateway::start_with(&yaml, &["--shutdown-drain-ms", "3000"]).await;
    let client = HttpClient::new();
    let ready = client.get(&gw.admin_url("/status/ready")).await;
    assert_eq!((ready.status.as_u16(), ready.json()["ready"].as_bool()), (200, Some(true)));
    gw.signal("TERM");
    let draining = eventually(WAIT, "not ready", || async {
        client.try_get(&gw.admin_url("/status/ready")).await.ok().filter(|r| r.status == 503)
    })
    .await;
    assert_eq!(draining.json()["reason"], "shutting down");
    // Still serving while it drains.
    assert_eq!(client.get(&gw.url("/")).await.status, 200);
    assert!(gw.wait(WAIT).await.success());
}
