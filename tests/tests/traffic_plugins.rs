//! The traffic plugins `cors`, `ip-restriction` and `correlation-id` end to end, through real
//! gateway processes and echo upstreams: preflights answered 204 by the gateway with the
//! upstream never contacted (also as `curl` sends one), refused 403 for an origin or a method
//! not allowed, regex origins, credentials echoing the origin, and the headers on every other
//! answer, a refusal of another plugin included; clients refused or let through by their real
//! address, v4 and v6, behind a trusted proxy or not; request ids made, kept, echoed and unique;
//! and bad values (a CIDR, a regex) refused with their path while the last good config serves.

use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;
use tests::http::{HttpClient, Reply};
use tests::{eventually, Etcd, Gateway, Upstream};

const WAIT: Duration = Duration::from_secs(20);

/// One service on `echo` with `routes` (YAML flow mappings).
fn config(echo: &Upstream, routes: &[&str]) -> String {
    let routes = routes.iter().map(|r| format!("      - {r}\n")).collect::<String>();
    format!("services:\n  - name: s\n    url: http://{}\n    routes:\n{routes}", echo.addr)
}

/// `method` `url` with `headers`.
async fn send(method: Method, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    HttpClient::new().send(request.body(Full::default()).unwrap()).await
}

/// A CORS preflight from `origin` asking for `method`.
async fn preflight(url: &str, origin: &str, method: &str) -> Reply {
    send(Method::OPTIONS, url, &[("origin", origin), ("access-control-request-method", method)]).await
}

fn message(reply: &Reply) -> String {
    reply.json()["message"].as_str().unwrap_or_default().to_owned()
}

/// A header the echo upstream received, or "" when it did not.
fn upstream_header(reply: &Reply, name: &str) -> String {
    reply.json()["headers"][name].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_and_adds_its_headers_to_every_answer() {
    let echo = Upstream::start("a").await;
    let listed = r#"{ name: listed, paths: [/listed], plugins: { cors: { origins: ["https://app.example", "~https://[a-z0-9-]+\\.preview\\.example"], methods: [GET, POST, PUT], credentials: true, max_age: 600, exposed_headers: [X-Total] } } }"#;
    let routes = [
        listed,
        "{ name: any, paths: [/any], plugins: { cors: {} } }",
        r#"{ name: onward, paths: [/onward], plugins: { cors: { origins: ["https://app.example"], preflight_continue: true } } }"#,
        r#"{ name: guarded, paths: [/guarded], plugins: { cors: { origins: ["https://app.example"] }, ip-restriction: { deny: [127.0.0.1] } } }"#,
    ];
    let gw = Gateway::start(&config(&echo, &routes)).await;
    let url = gw.url("/listed/x");

    // A preflight from a listed origin: answered here, the upstream never asked.
    let before = echo.requests();
    let reply = preflight(&url, "https://app.example", "PUT").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    assert_eq!(reply.header("access-control-allow-origin"), "https://app.example");
    assert_eq!(reply.header("access-control-allow-credentials"), "true");
    assert_eq!(reply.header("access-control-allow-methods"), "GET,POST,PUT");
    assert_eq!(reply.header("access-control-max-age"), "600");
    assert_eq!(reply.header("vary"), "Origin");
    assert!(reply.body.is_empty());
    let asked = send(
        Method::OPTIONS,
        &url,
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type, x-token"),
        ],
    )
    .await;
    assert_eq!(asked.status, StatusCode::NO_CONTENT);
    assert_eq!(asked.header("access-control-allow-headers"), "content-type, x-token", "echoed");

    // A regex origin matches whole origins only.
    let reply = preflight(&url, "https://pr-42.preview.example", "GET").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.header("access-control-allow-origin"), "https://pr-42.preview.example");
    let reply = preflight(&url, "https://pr-42.preview.example.evil.example", "GET").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // Refused: an origin not listed, a method not allowed; JSON saying which.
    let reply = preflight(&url, "https://evil.example", "PUT").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(message(&reply), "CORS preflight refused: origin not allowed");
    assert_eq!(reply.header("access-control-allow-origin"), "");
    let reply = preflight(&url, "https://app.example", "DELETE").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(message(&reply), "CORS preflight refused: method not allowed");
    assert_eq!(echo.requests(), before, "no preflight reached the upstream");

    // Other requests go to the upstream; the answer carries the headers.
    let reply = HttpClient::new().get_with(&url, &[("origin", "https://app.example")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.instance(), "a");
    assert_eq!(reply.header("access-control-allow-origin"), "https://app.example");
    assert_eq!(reply.header("access-control-allow-credentials"), "true");
    assert_eq!(reply.header("access-control-expose-headers"), "X-Total");
    assert_eq!(reply.header("vary"), "Origin");
    let reply = HttpClient::new().get_with(&url, &[("origin", "https://evil.example")]).await;
    assert_eq!(reply.status, 200, "the browser, not the gateway, withholds the answer");
    assert_eq!(reply.header("access-control-allow-origin"), "");
    assert_eq!(reply.header("vary"), "Origin");

    // No origins: any, as `*`.
    let reply = preflight(&gw.url("/any"), "https://whoever.example", "DELETE").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.header("access-control-allow-origin"), "*");
    assert_eq!(reply.header("access-control-allow-methods"), "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT");
    let reply = HttpClient::new().get_with(&gw.url("/any"), &[("origin", "https://whoever.example")]).await;
    assert_eq!((reply.status.as_u16(), reply.header("access-control-allow-origin")), (200, "*"));

    // preflight_continue: the upstream answers preflights.
    let reply = preflight(&gw.url("/onward"), "https://evil.example", "PUT").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["method"], "OPTIONS");
    assert_eq!(reply.header("access-control-allow-origin"), "");

    // A refusal by another plugin still carries the CORS headers, so the page can read it.
    let reply = HttpClient::new().get_with(&gw.url("/guarded"), &[("origin", "https://app.example")]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(message(&reply), "Your IP address is not allowed");
    assert_eq!(reply.header("access-control-allow-origin"), "https://app.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sends_a_real_preflight() {
    let echo = Upstream::start("a").await;
    let route =
        r#"{ name: r, paths: [/], plugins: { cors: { origins: ["http://localhost:3000"], credentials: true } } }"#;
    let gw = Gateway::start(&config(&echo, &[route])).await;
    let curl = |origin: &'static str, url: String| async move {
        let out = tokio::process::Command::new("curl")
            .args(["-si", "--max-time", "10", "-X", "OPTIONS", "-H"])
            .arg(format!("Origin: {origin}"))
            .args(["-H", "Access-Control-Request-Method: PUT", "-H", "Access-Control-Request-Headers: content-type"])
            .arg(url)
            .output()
            .await
            .expect("run curl");
        assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().to_ascii_lowercase()
    };
    let text = curl("http://localhost:3000", gw.url("/orders")).await;
    assert!(text.starts_with("http/1.1 204"), "{text}");
    for line in [
        "access-control-allow-origin: http://localhost:3000\r\n",
        "access-control-allow-credentials: true\r\n",
        "access-control-allow-headers: content-type\r\n",
        "access-control-allow-methods: get,head,put,patch,post,delete,options,trace,connect\r\n",
        "vary: origin\r\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
    let text = curl("http://localhost:4000", gw.url("/orders")).await;
    assert!(text.starts_with("http/1.1 403"), "{text}");
    assert!(text.contains(r#"{"message":"cors preflight refused: origin not allowed"}"#), "{text}");
    assert_eq!(echo.requests(), 0, "curl's preflights never reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_restriction_refuses_by_the_real_client_address() {
    let echo = Upstream::start("a").await;
    let routes = [
        "{ name: deny-local, paths: [/deny-local], plugins: { ip-restriction: { deny: [127.0.0.1] } } }",
        "{ name: allow-local, paths: [/allow-local], plugins: { ip-restriction: { allow: [127.0.0.0/8] } } }",
        r#"{ name: docs, paths: [/docs], plugins: { ip-restriction: { allow: [192.0.2.0/24], status: 404, message: "Not here" } } }"#,
        r#"{ name: v6, paths: [/v6], plugins: { ip-restriction: { allow: ["2001:db8::/32"], deny: ["2001:db8:bad::/48"] } } }"#,
    ];
    let yaml = config(&echo, &routes);
    let gw = Gateway::start_with(&yaml, &["--trusted-ips", "127.0.0.1/32"]).await;
    let c = HttpClient::new();
    let status = |path: &str, forwarded: Option<&'static str>| {
        let (url, c) = (gw.url(path), c.clone());
        async move {
            let headers: Vec<(&str, &str)> = forwarded.map(|f| ("x-forwarded-for", f)).into_iter().collect();
            c.get_with(&url, &headers).await
        }
    };

    // The loopback client itself.
    let before = echo.requests();
    let reply = status("/deny-local", None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json(), json!({"message": "Your IP address is not allowed"}));
    assert_eq!(echo.requests(), before, "a refused client never reaches the upstream");
    assert_eq!(status("/allow-local", None).await.status, 200);
    let reply = status("/docs", None).await;
    assert_eq!((reply.status.as_u16(), message(&reply)), (404, "Not here".to_owned()));

    // Behind the trusted proxy, the client it names.
    assert_eq!(status("/deny-local", Some("198.51.100.1")).await.status, 200);
    assert_eq!(status("/allow-local", Some("198.51.100.1")).await.status, 403);
    assert_eq!(status("/docs", Some("192.0.2.77")).await.status, 200);
    assert_eq!(status("/docs", Some("::ffff:192.0.2.77")).await.status, 200, "IPv4-mapped is IPv4");
    assert_eq!(status("/v6", Some("2001:db8:1::5")).await.status, 200);
    assert_eq!(status("/v6", Some("[2001:db8:1::5]:443")).await.status, 200);
    assert_eq!(status("/v6", Some("2001:db8:bad::1")).await.status, 403, "deny is checked first");
    assert_eq!(status("/v6", Some("2001:db9::1")).await.status, 403);
    assert_eq!(status("/v6", None).await.status, 403);
    drop(gw);

    // From a peer that is not trusted, the header is ignored: the client is the peer.
    let gw = Gateway::start(&yaml).await;
    let reply = HttpClient::new().get_with(&gw.url("/docs"), &[("x-forwarded-for", "192.0.2.77")]).await;
    assert_eq!(reply.status, 404);
    let reply = HttpClient::new().get_with(&gw.url("/deny-local"), &[("x-forwarded-for", "198.51.100.1")]).await;
    assert_eq!(reply.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlation_ids_are_made_kept_and_echoed() {
    let echo = Upstream::start("a").await;
    let routes = [
        "{ name: counter, paths: [/counter], plugins: { correlation-id: { echo_downstream: true } } }",
        "{ name: uuid, paths: [/uuid], plugins: { correlation-id: { generator: uuid, header_name: X-Correlation } } }",
        "{ name: refused, paths: [/refused], plugins: { correlation-id: { echo_downstream: true }, ip-restriction: { deny: [127.0.0.1] } } }",
    ];
    let gw = Gateway::start(&config(&echo, &routes)).await;
    let c = HttpClient::new();

    // uuid#counter: the node's uuid, `#`, a counter; the upstream and the client see the same.
    let mut ids = HashSet::new();
    let mut prefix = None;
    for _ in 0..50 {
        let reply = c.get(&gw.url("/counter")).await;
        assert_eq!(reply.status, 200);
        let sent = upstream_header(&reply, "x-request-id");
        assert_eq!(reply.header("x-request-id"), sent, "echoed downstream");
        let (uuid, counter) = sent.split_once('#').unwrap_or_else(|| panic!("{sent}"));
        assert_eq!(uuid.len(), 36, "{sent}");
        counter.parse::<u64>().unwrap_or_else(|_| panic!("{sent}"));
        assert_eq!(*prefix.get_or_insert_with(|| uuid.to_owned()), uuid, "one uuid per node");
        ids.insert(sent);
    }
    assert_eq!(ids.len(), 50, "every request its own id");

    // An id the client sent is kept.
    let reply = c.get_with(&gw.url("/counter"), &[("x-request-id", "from-the-client-1")]).await;
    assert_eq!(upstream_header(&reply, "x-request-id"), "from-the-client-1");
    assert_eq!(reply.header("x-request-id"), "from-the-client-1");

    // uuid: a random version 4 UUID each time, under another header, not echoed.
    let mut ids = HashSet::new();
    for _ in 0..50 {
        let reply = c.get(&gw.url("/uuid")).await;
        let id = upstream_header(&reply, "x-correlation");
        assert!(id.len() == 36 && id.as_bytes()[14] == b'4', "{id}");
        assert_eq!(reply.header("x-correlation"), "", "echo_downstream is off");
        ids.insert(id);
    }
    assert_eq!(ids.len(), 50);

    // An answer made by another plugin carries the id too.
    let reply = c.get(&gw.url("/refused")).await;
    assert_eq!(reply.status, 403);
    assert!(reply.header("x-request-id").contains('#'), "{:?}", reply.headers);
}

/// Waits for a log line that has every one of `needles`.
async fn logged(gw: &Gateway, needles: &[&str]) {
    eventually(WAIT, &format!("a log line with {needles:?}"), || async {
        gw.logs().iter().any(|line| needles.iter().all(|n| line.contains(n))).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_cidr_or_regex_in_a_file_is_refused_with_its_path_and_the_last_config_serves() {
    let echo = Upstream::start("a").await;
    let good = "{ name: r, paths: [/], plugins: { ip-restriction: { deny: [192.0.2.0/24] }, cors: {} } }";
    let gw = Gateway::start(&config(&echo, &[good])).await;
    let c = HttpClient::new();
    assert_eq!(c.get(&gw.url("/")).await.status, 200);

    let bad_cidr = "{ name: r, paths: [/], plugins: { ip-restriction: { deny: [127.0.0.0/33] } } }";
    let bad_regex = r#"{ name: r, paths: [/], plugins: { ip-restriction: { deny: [127.0.0.1] }, cors: { origins: ["~https://(unclosed"] } } }"#;
    let dir = tests::TempDir::new();
    let checked = dir.path().join("bad.yaml");
    for (route, path) in [
        (bad_cidr, "routes/r.plugins.ip-restriction.deny[0]"),
        (bad_regex, "routes/r.plugins.cors.origins[0]: invalid regex"),
    ] {
        let file = config(&echo, &[route]);
        std::fs::write(&checked, &file).unwrap();
        let check = tests::run_gateway(&["validate", &checked.to_string_lossy()]);
        let said = String::from_utf8_lossy(&check.stdout).into_owned() + &String::from_utf8_lossy(&check.stderr);
        assert!(!check.status.success() && said.contains(path), "validate should name {path}: {said}");
        gw.write_config(&file);
        gw.signal("HUP");
        logged(&gw, &["reload refused", path]).await;
        let reply = c.get(&gw.url("/")).await;
        assert_eq!(reply.status, 200, "the last good config serves (127.0.0.1 is not denied there)");
        assert_eq!(reply.header("access-control-allow-origin"), "*");
    }
    assert_eq!(gw.status().await["config"]["version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_plugin_value_in_etcd_is_listed_and_the_route_keeps_its_last_good_value() {
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let gw = Gateway::start_etcd("node-1", &etcd.url(), &[]).await;
    let c = HttpClient::new();
    let reply = gw.admin_put("/services/s", &json!({"url": format!("http://{}", echo.addr)})).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let good = json!({"service": "s", "paths": ["/"], "plugins": {"ip-restriction": {"deny": ["127.0.0.1"]}}});
    let reply = gw.admin_put("/routes/r", &good).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    eventually(WAIT, "the route served", || async { (c.get(&gw.url("/")).await.status == 403).then_some(()) }).await;

    // Through the admin API: refused, naming the field.
    let bad = json!({"service": "s", "paths": ["/"], "plugins": {"ip-restriction": {"allow": ["10.0.0.0/8", "10.0.0.0/99"]}}});
    let reply = gw.admin_put("/routes/r", &bad).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(message(&reply).contains("ip-restriction.allow[1]"), "{}", message(&reply));

    // Written straight to etcd: listed in /status under its key, the last good value served.
    let revision = etcd.put("/gateway/routes/r", &bad.to_string()).await;
    let error: Value = eventually(WAIT, "the bad route in /status", || async {
        let errors = gw.status().await["config"]["errors"].clone();
        errors.as_array()?.iter().find(|e| e["key"] == "/gateway/routes/r" && e["revision"] == revision).cloned()
    })
    .await;
    let text = error["message"].as_str().unwrap_or_default();
    assert!(text.contains("plugins.ip-restriction.allow[1]") && text.contains("longer than the address"), "{text}");
    assert_eq!(c.get(&gw.url("/")).await.status, 403, "the last good route is served");
}
