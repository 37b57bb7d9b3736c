//! Routing end to end, through a real gateway process and a real echo upstream:
//!
//! - precedence over one route table: exact host over wildcard host over no host, a host-only
//!   route as the catch-all of its host, longest prefix first, prefix before regex, regex by
//!   higher `priority` (anchored at the start of the path), a method- or header-restricted route
//!   falling through to a less specific one;
//! - how the upstream request is built: `strip_path` true and false with a service path, the
//!   query string kept, `preserve_host` true and false, `X-Forwarded-*` and `Via`, hop-by-hop
//!   headers removed;
//! - what the client gets back: `Via` and the latency headers, and the JSON 404 when no route
//!   matches.
//!
//! Every service points at the same echo instance but with its own url path
//! (`http://127.0.0.1:PORT/svc-NAME`), so the `uri` the echo reports names the route that
//! served.

use http::{Method, Request};
use http_body_util::Full;
use serde_json::Value;
use tests::http::{HttpClient, Reply};
use tests::{Gateway, Upstream};

/// The route table of the precedence test. `PORT` is the echo's port.
const PRECEDENCE: &str = r#"
services:
  - name: svc-exact
    url: http://127.0.0.1:PORT/svc-exact
    routes:
      - { name: host-exact, hosts: [api.example.test], paths: [/h] }
  - name: svc-wild
    url: http://127.0.0.1:PORT/svc-wild
    routes:
      - { name: host-wild, hosts: ["*.example.test"], paths: [/h] }
  - name: svc-nohost
    url: http://127.0.0.1:PORT/svc-nohost
    routes:
      - { name: host-none, paths: [/h] }
  - name: svc-catch
    url: http://127.0.0.1:PORT/svc-catch
    routes:
      - { name: catch-all, hosts: [catch.test] }
  - name: svc-only
    url: http://127.0.0.1:PORT/svc-only
    routes:
      - { name: only-host, hosts: [only.test], paths: [/only] }
  - name: svc-short
    url: http://127.0.0.1:PORT/svc-short
    routes:
      - { name: prefix-short, paths: [/api] }
  - name: svc-long
    url: http://127.0.0.1:PORT/svc-long
    routes:
      - { name: prefix-long, paths: [/api/v2] }
  # Both regexes match /items/42/detail; the one with the higher priority must win even though
  # its name (and so its id) comes later.
  - name: svc-re-low
    url: http://127.0.0.1:PORT/svc-re-low
    routes:
      - { name: re-a-low, paths: ["~/items/\\d+"], priority: 1 }
  - name: svc-re-high
    url: http://127.0.0.1:PORT/svc-re-high
    routes:
      - { name: re-b-high, paths: ["~/items/\\d+/detail"], priority: 10 }
  # Priority, not the length of the match: the shorter regex wins with the higher priority.
  - name: svc-prio5
    url: http://127.0.0.1:PORT/svc-prio5
    routes:
      - { name: re-c-p5, paths: ["~/prio"], priority: 5 }
  - name: svc-prio0
    url: http://127.0.0.1:PORT/svc-prio0
    routes:
      - { name: re-d-p0, paths: ["~/prio/x"], priority: 0 }
  # A prefix beats a regex whatever the regex's priority.
  - name: svc-re-alpha
    url: http://127.0.0.1:PORT/svc-re-alpha
    routes:
      - { name: re-e-alpha, paths: ["~/items/[a-z]+"], priority: 100 }
  - name: svc-items-prefix
    url: http://127.0.0.1:PORT/svc-items-prefix
    routes:
      - { name: items-special, paths: [/items/special] }
  # Methods and headers.
  - name: svc-orders
    url: http://127.0.0.1:PORT/svc-orders
    routes:
      - { name: orders-any, paths: [/orders] }
  - name: svc-orders-post
    url: http://127.0.0.1:PORT/svc-orders-post
    routes:
      - { name: orders-post, paths: [/orders], methods: [POST] }
  - name: svc-orders-new
    url: http://127.0.0.1:PORT/svc-orders-new
    routes:
      - { name: orders-new-write, paths: [/orders/new], methods: [POST, PUT] }
  - name: svc-beta
    url: http://127.0.0.1:PORT/svc-beta
    routes:
      - { name: orders-beta, paths: [/orders], headers: { x-version: [beta, v2] } }
"#;

async fn start(yaml: &str) -> (Upstream, Gateway) {
    let up = Upstream::start("echo").await;
    let gw = Gateway::start(&yaml.replace("PORT", &up.addr.port().to_string())).await;
    (up, gw)
}

/// Sends `method` `path` with `headers` (a `host` among them replaces the default one).
async fn send(client: &HttpClient, gw: &Gateway, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().method(method).uri(gw.url(path));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    client.send(request.body(Full::default()).expect("a valid request")).await
}

/// The upstream URI the echo saw for a request that must succeed.
async fn upstream_uri(
    client: &HttpClient,
    gw: &Gateway,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let reply = send(client, gw, method.clone(), path, headers).await;
    assert_eq!(reply.status, 200, "{method} {path} {headers:?}: {}", String::from_utf8_lossy(&reply.body));
    reply.json()["uri"].as_str().expect("the echo reports uri").to_owned()
}

/// The echo's view of a GET that must succeed.
async fn echoed(client: &HttpClient, gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Value {
    let reply = send(client, gw, Method::GET, path, headers).await;
    assert_eq!(reply.status, 200, "GET {path} {headers:?}: {}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

fn assert_not_found(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 404, "{what}: {}", String::from_utf8_lossy(&reply.body));
    assert!(reply.header("content-type").starts_with("application/json"), "{what}: {:?}", reply.headers);
    let body = reply.json();
    let message = body["message"].as_str().unwrap_or_else(|| panic!("{what}: no message in {body}"));
    assert!(!message.is_empty(), "{what}: empty message");
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{what}: only a message is expected: {body}");
}

/// A request (method, path, headers) and the upstream URI expected for it.
type Case<'a> = (Method, &'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_over_one_route_table() {
    let (_up, gw) = start(PRECEDENCE).await;
    let c = HttpClient::new();
    let get = Method::GET;

    let cases: &[Case] = &[
        // Hosts: exact over wildcard over none; case and port of the Host do not matter.
        (get.clone(), "/h/1", &[("host", "api.example.test")], "/svc-exact/1"),
        (get.clone(), "/h/1", &[("host", "API.Example.TEST:8080")], "/svc-exact/1"),
        (get.clone(), "/h/1", &[("host", "other.example.test")], "/svc-wild/1"),
        (get.clone(), "/h/1", &[("host", "a.b.example.test")], "/svc-wild/1"),
        (get.clone(), "/h/1", &[("host", "example.test")], "/svc-nohost/1"),
        (get.clone(), "/h/1", &[("host", "elsewhere.test")], "/svc-nohost/1"),
        (get.clone(), "/h/1", &[], "/svc-nohost/1"),
        // A host-only route catches everything for its host, even paths other routes serve
        // (host groups come before paths), and its whole path is kept.
        (get.clone(), "/anything/at/all?q=1", &[("host", "catch.test")], "/svc-catch/anything/at/all?q=1"),
        (get.clone(), "/h/1", &[("host", "catch.test")], "/svc-catch/h/1"),
        (get.clone(), "/api/v2/x", &[("host", "catch.test")], "/svc-catch/api/v2/x"),
        (get.clone(), "/", &[("host", "catch.test")], "/svc-catch/"),
        (get.clone(), "/only/1", &[("host", "only.test")], "/svc-only/1"),
        // Longest prefix first.
        (get.clone(), "/api/v2/users", &[], "/svc-long/users"),
        (get.clone(), "/api/v2", &[], "/svc-long"),
        (get.clone(), "/api/v1/users", &[], "/svc-short/v1/users"),
        (get.clone(), "/api", &[], "/svc-short"),
        // Regexes: the higher priority wins among those that match.
        (get.clone(), "/items/42/detail", &[], "/svc-re-high"),
        (get.clone(), "/items/42/detail/more", &[], "/svc-re-high/more"),
        (get.clone(), "/items/42", &[], "/svc-re-low"),
        (get.clone(), "/items/42/other", &[], "/svc-re-low/other"),
        (get.clone(), "/prio/x/1", &[], "/svc-prio5/x/1"),
        // A prefix beats a regex of any priority; the regex still serves what the prefix does not.
        (get.clone(), "/items/special", &[], "/svc-items-prefix"),
        (get.clone(), "/items/special/7", &[], "/svc-items-prefix/7"),
        (get.clone(), "/items/other", &[], "/svc-re-alpha"),
        // Methods: a route whose methods do not match falls through.
        (get.clone(), "/orders/1", &[], "/svc-orders/1"),
        (Method::DELETE, "/orders/1", &[], "/svc-orders/1"),
        (Method::POST, "/orders/1", &[], "/svc-orders-post/1"),
        (Method::POST, "/orders/new", &[], "/svc-orders-new"),
        (Method::PUT, "/orders/new/9", &[], "/svc-orders-new/9"),
        (get.clone(), "/orders/new", &[], "/svc-orders/new"),
        (Method::DELETE, "/orders/new", &[], "/svc-orders/new"),
        // Headers: any listed value, compared without case; otherwise fall through.
        (get.clone(), "/orders/1", &[("x-version", "beta")], "/svc-beta/1"),
        (get.clone(), "/orders/1", &[("x-version", "BETA")], "/svc-beta/1"),
        (get.clone(), "/orders/1", &[("x-version", "v2")], "/svc-beta/1"),
        (get.clone(), "/orders/1", &[("x-version", "v3")], "/svc-orders/1"),
        (Method::POST, "/orders/1", &[("x-version", "v3")], "/svc-orders-post/1"),
        // The longer prefix still comes before a header-conditioned shorter one.
        (Method::POST, "/orders/new", &[("x-version", "beta")], "/svc-orders-new"),
    ];
    for (method, path, headers, expected) in cases {
        let uri = upstream_uri(&c, &gw, method.clone(), path, headers).await;
        assert_eq!(uri, *expected, "{method} {path} with {headers:?}");
    }

    // Nothing matches: regexes are anchored at the start of the path, hosts must match.
    for (path, headers) in [
        ("/x/items/42", &[][..]),
        ("/nothing", &[][..]),
        ("/only/1", &[("host", "elsewhere.test")][..]),
        ("/only/1", &[][..]),
        ("/items", &[][..]),
    ] {
        let reply = send(&c, &gw, Method::GET, path, headers).await;
        assert_not_found(&reply, &format!("GET {path} {headers:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_path_and_query_strings() {
    let (_up, gw) = start(
        r#"
services:
  - name: v1
    url: http://127.0.0.1:PORT/v1
    routes:
      - { name: strip, paths: [/orders] }
      - { name: keep, paths: [/keep], strip_path: false }
      - { name: regex-strip, paths: ["~/re/\\d+"] }
      - { name: regex-keep, paths: ["~/rk/\\d+"], strip_path: false }
  - name: bare
    url: http://127.0.0.1:PORT
    routes:
      - { name: bare, paths: [/bare] }
      - { name: bare-keep, paths: [/bk], strip_path: false }
  - name: trailing
    url: http://127.0.0.1:PORT/base/
    routes:
      - { name: trailing, paths: [/t] }
"#,
    )
    .await;
    let c = HttpClient::new();
    for (path, expected) in [
        // strip_path defaults to true: the matched prefix goes, the service path comes first.
        ("/orders/1?x=1", "/v1/1?x=1"),
        ("/orders", "/v1"),
        ("/orders/", "/v1/"),
        ("/orders/a/b/c", "/v1/a/b/c"),
        ("/orders?x=1", "/v1?x=1"),
        // strip_path: false keeps the whole path after the service path.
        ("/keep/a?b=2", "/v1/keep/a?b=2"),
        ("/keep", "/v1/keep"),
        // A regex strips what it matched.
        ("/re/42/tail?z=9", "/v1/tail?z=9"),
        ("/re/42", "/v1"),
        ("/rk/42/tail", "/v1/rk/42/tail"),
        // No service path.
        ("/bare", "/"),
        ("/bare/z", "/z"),
        ("/bare?only=query", "/?only=query"),
        ("/bk/z", "/bk/z"),
        // A trailing slash on the service url does not double up.
        ("/t/x", "/base/x"),
        // The query string goes through untouched: repeated keys, escapes, empty values.
        ("/orders/q?a=1&b=%20x&a=2&empty=&flag", "/v1/q?a=1&b=%20x&a=2&empty=&flag"),
        ("/keep/q?redirect=%2Fhome%3Fx%3D1", "/v1/keep/q?redirect=%2Fhome%3Fx%3D1"),
    ] {
        let uri = upstream_uri(&c, &gw, Method::GET, path, &[]).await;
        assert_eq!(uri, expected, "GET {path}");
    }
    // The method and body go through as they are.
    let reply = c.call(Method::PUT, &gw.url("/orders/9?v=1"), vec![b'z'; 1000]).await;
    assert_eq!(reply.status, 200);
    let echo = reply.json();
    assert_eq!(
        (echo["method"].as_str(), echo["uri"].as_str(), echo["body_bytes"].as_u64()),
        (Some("PUT"), Some("/v1/9?v=1"), Some(1000))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_host_sends_the_clients_host() {
    let (up, gw) = start(
        r#"
services:
  - name: s
    url: http://127.0.0.1:PORT
    routes:
      - { name: keep-host, paths: [/keep-host], preserve_host: true }
      - { name: target-host, paths: [/target-host] }
      - { name: target-host-explicit, paths: [/explicit], preserve_host: false }
"#,
    )
    .await;
    let c = HttpClient::new();
    let target = up.addr.to_string();
    let gw_host = gw.proxy.to_string();
    for (path, client_host, expected) in [
        ("/keep-host", Some("client.example.test"), "client.example.test"),
        ("/keep-host", Some("client.example.test:8443"), "client.example.test:8443"),
        ("/keep-host", None, gw_host.as_str()),
        ("/target-host", Some("client.example.test"), target.as_str()),
        ("/target-host", None, target.as_str()),
        ("/explicit", Some("client.example.test"), target.as_str()),
    ] {
        let headers: Vec<(&str, &str)> = client_host.map(|h| ("host", h)).into_iter().collect();
        let echo = echoed(&c, &gw, path, &headers).await;
        assert_eq!(echo["headers"]["host"], expected, "{path} with Host {client_host:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_forwarding_headers() {
    let (_up, gw) = start(
        r#"
services:
  - name: s
    url: http://127.0.0.1:PORT
    routes: [{ name: all, paths: [/] }]
"#,
    )
    .await;
    let c = HttpClient::new();
    let port = gw.proxy.port().to_string();

    let echo = echoed(&c, &gw, "/fwd", &[("host", "fwd.example.test")]).await;
    let h = &echo["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-proto"], "http", "{h}");
    assert_eq!(h["x-forwarded-host"], "fwd.example.test", "{h}");
    assert_eq!(h["x-forwarded-port"], port.as_str(), "{h}");
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-path"], "/fwd", "{h}");
    assert!(h.get("x-forwarded-prefix").is_none(), "stripping `/` strips no prefix: {h}");
    assert_eq!(h["via"], "1.1 test-node", "{h}");
    assert_eq!(echo["version"], "HTTP/1.1");

    // Without a Host of its own the client's default (the gateway's address) is forwarded.
    let echo = echoed(&c, &gw, "/fwd", &[]).await;
    assert_eq!(echo["headers"]["x-forwarded-host"], "127.0.0.1", "the host without its port");

    // What earlier proxies wrote is kept and this hop appended; forged -Proto/-Port/-Host are
    // replaced.
    let echo = echoed(
        &c,
        &gw,
        "/fwd",
        &[
            ("host", "fwd.example.test"),
            ("x-forwarded-for", "203.0.113.7, 10.1.1.1"),
            ("via", "1.0 edge"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "1"),
            ("x-forwarded-host", "forged.test"),
        ],
    )
    .await;
    let h = &echo["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.1.1.1, 127.0.0.1", "{h}");
    assert_eq!(h["via"], "1.0 edge, 1.1 test-node", "{h}");
    assert_eq!(h["x-forwarded-proto"], "http", "{h}");
    assert_eq!(h["x-forwarded-port"], port.as_str(), "{h}");
    assert_eq!(h["x-forwarded-host"], "fwd.example.test", "{h}");

    // Hop-by-hop headers, and those the client's Connection names, stop at the gateway; other
    // headers go through.
    let echo = echoed(
        &c,
        &gw,
        "/hop",
        &[("connection", "keep-alive, x-secret"), ("x-secret", "1"), ("keep-alive", "timeout=5"), ("x-kept", "yes")],
    )
    .await;
    let h = echo["headers"].as_object().expect("headers");
    assert!(!h.contains_key("x-secret"), "{h:?}");
    assert!(!h.contains_key("keep-alive"), "{h:?}");
    assert_eq!(h.get("x-kept").and_then(Value::as_str), Some("yes"), "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_via_and_latency_headers() {
    let (_up, gw) = start(
        r#"
services:
  - name: s
    url: http://127.0.0.1:PORT
    routes: [{ name: all, paths: [/] }]
"#,
    )
    .await;
    let c = HttpClient::new();
    let ms = |reply: &Reply, name: &str| -> u64 {
        reply.header(name).parse().unwrap_or_else(|_| panic!("{name} is not a number of ms: {:?}", reply.headers))
    };

    let reply = c.get(&gw.url("/delay/150")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("via"), "1.1 test-node");
    assert_eq!(reply.header("x-echo-instance"), "echo", "the upstream's own headers come through");
    let upstream = ms(&reply, "x-gateway-upstream-latency");
    let proxy = ms(&reply, "x-gateway-proxy-latency");
    assert!((150..3_000).contains(&upstream), "upstream latency {upstream} ms for a 150 ms upstream");
    assert!(proxy < 1_000, "proxy latency {proxy} ms");

    let reply = c.get(&gw.url("/fast")).await;
    assert_eq!(reply.status, 200);
    assert!(ms(&reply, "x-gateway-upstream-latency") < 150, "{:?}", reply.headers);
    ms(&reply, "x-gateway-proxy-latency");

    // Upstream statuses pass through with the same headers.
    let reply = c.get(&gw.url("/status/418")).await;
    assert_eq!(reply.status, 418);
    assert_eq!(reply.header("via"), "1.1 test-node");
    ms(&reply, "x-gateway-upstream-latency");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_a_json_404() {
    let (up, gw) = start(
        r#"
services:
  - name: s
    url: http://127.0.0.1:PORT
    routes:
      - { name: one, paths: [/one], methods: [GET] }
      - { name: hosted, hosts: [h.test], paths: [/] }
"#,
    )
    .await;
    let c = HttpClient::new();
    for (method, path, headers) in [
        (Method::GET, "/", &[][..]),
        (Method::GET, "/two", &[][..]),
        (Method::GET, "/on", &[][..]),
        (Method::POST, "/one", &[][..]),
        (Method::GET, "/x", &[("host", "other.test")][..]),
    ] {
        let reply = send(&c, &gw, method.clone(), path, headers).await;
        assert_not_found(&reply, &format!("{method} {path} {headers:?}"));
    }
    assert_eq!(up.requests(), 0, "nothing reached the upstream");
    // The same gateway does serve what matches.
    assert_eq!(upstream_uri(&c, &gw, Method::GET, "/one/a", &[]).await, "/a");
    assert_eq!(upstream_uri(&c, &gw, Method::POST, "/x", &[("host", "h.test")]).await, "/x");
}
