//! The read-only admin API: status, entity lists and single entities, token checks, and 405
//! for writes in file mode.

use http::Method;
use tests::http::HttpClient;
use tests::{Gateway, Upstream};

fn config(echo: &Upstream) -> String {
    format!(
        r#"
services:
  - name: orders
    url: http://orders-up/v1
    routes: [{{ name: orders, paths: [/orders] }}]
upstreams:
  - name: orders-up
    targets: [{{ target: "{addr}", weight: 30 }}]
"#,
        addr = echo.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_status_show_what_is_applied() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(&echo)).await;
    let c = HttpClient::new();
    let status = c.get(&gw.admin_url("/status")).await;
    assert_eq!(status.status, 200);
    let status = status.json();
    assert_eq!(status["node_id"], "test-node");
    assert_eq!(status["config"]["source"], "file");
    assert_eq!(status["config"]["version"], 1);
    assert_eq!(status["config"]["hash"].as_str().unwrap().len(), 64);
    assert!(status["config"]["applied_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(status["config"]["errors"], serde_json::json!([]));

    let services = c.get(&gw.admin_url("/services")).await.json();
    assert_eq!(services["data"][0]["name"], "orders");
    assert_eq!(services["data"][0]["retries"], 5);
    let routes = c.get(&gw.admin_url("/routes")).await.json();
    assert_eq!(routes["data"][0]["service"], "orders");
    assert_eq!(routes["data"][0]["strip_path"], true);
    let upstreams = c.get(&gw.admin_url("/upstreams")).await.json();
    assert_eq!(upstreams["data"][0]["algorithm"], "round-robin");
    assert_eq!(upstreams["data"][0]["healthchecks"]["active"]["http_path"], "/");
    let targets = c.get(&gw.admin_url("/upstreams/orders-up/targets")).await.json();
    assert_eq!(targets["data"][0]["target"], echo.addr.to_string());
    assert_eq!(targets["data"][0]["weight"], 30);
    assert_eq!(c.get(&gw.admin_url("/services/orders")).await.json()["url"], "http://orders-up/v1");

    for missing in ["/services/nope", "/upstreams/nope/targets", "/nowhere", "/routes/orders/extra"] {
        let reply = c.get(&gw.admin_url(missing)).await;
        assert_eq!(reply.status, 404, "{missing}");
        assert!(reply.json()["message"].is_string(), "{missing}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_answer_405_in_file_mode() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(&echo)).await;
    let c = HttpClient::new();
    for (method, path) in [
        (Method::PUT, "/services/orders"),
        (Method::DELETE, "/routes/orders"),
        (Method::PUT, "/upstreams/orders-up/targets/127.0.0.1:1"),
    ] {
        let reply = c.call(method.clone(), &gw.admin_url(path), r#"{"url":"http://x"}"#).await;
        assert_eq!(reply.status, 405, "{method} {path}");
        assert!(reply.json()["message"].as_str().unwrap().contains("SIGHUP"));
    }
    assert_eq!(c.get(&gw.url("/orders")).await.status, 200, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_admin_request() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start_with(&config(&echo), &["--admin-token", "s3cret"]).await;
    let c = HttpClient::new();
    for headers in [&[][..], &[("authorization", "Bearer wrong")], &[("authorization", "s3cret")]] {
        let reply = c.get_with(&gw.admin_url("/status"), headers).await;
        assert_eq!(reply.status, 401, "{headers:?}");
        assert_eq!(reply.json()["message"], "Unauthorized");
    }
    let reply = c.get_with(&gw.admin_url("/status"), &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(c.get(&gw.url("/orders")).await.status, 200, "the proxy port takes no token");
}
