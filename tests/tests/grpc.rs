//! gRPC and HTTP/2 to upstreams end to end: a real gRPC server and client (Python's `grpcio`,
//! `tests/grpc/echo_service.py`) through a real gateway process. Unary, client-streaming,
//! server-streaming and bidirectional calls with metadata and trailers; deadlines and
//! cancellation; the gateway's own answers in gRPC's form; HTTP/2 connections shared by calls,
//! bounded in streams, and opened again when the target comes back.

use serde_json::json;
use std::time::Duration;
use tests::grpc::{call, GrpcServer};
use tests::http::HttpClient;
use tests::tls::Ca;
use tests::{closed_port, Gateway, Upstream};

/// A gateway with one service at `url` (its YAML fields after it) and one route for the Echo
/// service's calls, plus `routes` of its own.
fn config(url: &str, fields: &str, routes: &str) -> String {
    format!(
        "services: [{{ name: s, url: \"{url}\", {fields} routes: [\
         {{ name: echo, paths: [/echo.Echo], strip_path: false }}{routes}] }}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_of_every_kind_stream_through_with_metadata_and_trailers() {
    let server = GrpcServer::start().await;
    let gw = Gateway::start(&config(&format!("grpc://{}", server.addr), "", "")).await;
    let target = gw.proxy.to_string();

    let unary = call(&target, "unary").await;
    assert_eq!((&unary["text"], &unary["code"]), (&json!("hello"), &json!(0)), "{unary}");
    assert_eq!(unary["initial"]["x-echoed"], "abc", "the metadata went up and back: {unary}");
    assert_eq!(unary["trailing"], json!({"x-trailer": "done"}));
    let collected = call(&target, "client_stream").await;
    assert_eq!(collected, json!({"text": "a,b,c,d,e", "count": 5, "trailing": {"x-trailer": "collected"}}));
    assert_eq!(call(&target, "server_stream").await, json!({"texts": ["0", "1", "2", "3", "4"]}));
    // Each answer of the bidirectional call came before the next message went: nothing waits
    // for the end of a stream.
    assert_eq!(call(&target, "bidi").await, json!({"texts": ["ONE", "TWO", "THREE"], "rest": 0}));
    let streamed = call(&target, "server_stream_is_not_buffered").await;
    assert_eq!(streamed["first"], "0");
    assert!(streamed["first_after_s"].as_f64().unwrap() < 0.9, "the first message waited for others: {streamed}");
    assert_eq!(streamed["rest"], json!(["1", "2"]));

    // The upstream's own status and message pass as they are.
    assert_eq!(call(&target, "fail").await, json!({"code": 5, "message": "failed on purpose"}));
    // The client's deadline ends the call (the gateway's bound is the same `grpc-timeout`).
    assert_eq!(call(&target, "deadline").await["code"], 4);
    // A client that cancels cancels the upstream's stream.
    assert_eq!(call(&target, "cancel").await, json!({"got": ["0", "1"], "server_saw_cancel": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_shared_bounded_in_streams_and_opened_again() {
    let server = GrpcServer::start().await;
    // h2c on an `http://` service: the same path as `grpc://`.
    let gw = Gateway::start(&config(&format!("http://{}", server.addr), "http2: true,", "")).await;
    let target = gw.proxy.to_string();

    assert_eq!(call(&target, "sequential").await, json!({"ok": true}));
    // Twenty calls, and the stats call: one connection carried them all.
    assert_eq!(call(&target, "stats").await["peers"], 1);
    // 150 calls at once: over the 100 streams of one connection, a second one opens.
    assert_eq!(call(&target, "many").await, json!({"ok": true}));
    let peers = call(&target, "stats").await["peers"].as_u64().unwrap();
    assert!((2..=3).contains(&peers), "{peers} connections for 150 calls at once");

    // The target goes away and comes back on the same port: the dead connections are dropped
    // and the next call opens a fresh one.
    let port = server.port;
    server.stop().await;
    let down = call(&target, "unary").await;
    assert_eq!(down["error"]["code"], 14, "{down}");
    let _server = GrpcServer::start_on(port, "SERVING").await;
    assert_eq!(call(&target, "unary").await["text"], "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_answers_to_grpc_calls_are_grpc_statuses() {
    let server = GrpcServer::start().await;
    let routes = ", { name: keyed, paths: [/echo.Echo/Unary], strip_path: false, plugins: { key-auth: {} } }\
        , { name: denied, paths: [/echo.Echo/Collect], strip_path: false, plugins: { ip-restriction: { deny: [127.0.0.1] } } }\
        , { name: limited, paths: [/echo.Echo/Expand], strip_path: false, plugins: { rate-limiting: { hour: 1, policy: local } } }";
    let gw = Gateway::start(&config(&format!("grpc://{}", server.addr), "", routes)).await;
    let target = gw.proxy.to_string();

    let code = |reply: serde_json::Value| reply["error"]["code"].as_u64().unwrap_or_else(|| panic!("{reply}"));
    assert_eq!(code(call(&target, "unary").await), 16, "key-auth: UNAUTHENTICATED");
    assert_eq!(code(call(&target, "client_stream").await), 7, "ip-restriction: PERMISSION_DENIED");
    assert_eq!(call(&target, "server_stream").await["texts"].as_array().map(Vec::len), Some(5));
    assert_eq!(code(call(&target, "server_stream").await), 8, "rate-limiting: RESOURCE_EXHAUSTED");
    // No route for the health service here.
    let unrouted = call(&target, "health").await;
    assert_eq!(code(unrouted.clone()), 12, "no route: UNIMPLEMENTED");
    assert_eq!(unrouted["error"]["message"], "no Route matched with those values");

    // Nothing listens: UNAVAILABLE.
    let closed = closed_port();
    let gw = Gateway::start(&config(&format!("grpc://{closed}"), "retries: 0,", "")).await;
    assert_eq!(code(call(&gw.proxy.to_string(), "unary").await), 14, "connection refused: UNAVAILABLE");

    // The upstream too slow for the service's read_timeout: DEADLINE_EXCEEDED, from the gateway.
    let gw = Gateway::start(&config(
        &format!("grpc://{}", server.addr),
        "read_timeout: 200, retry_backoff: { max: 100 },",
        "",
    ))
    .await;
    let slow = call(&gw.proxy.to_string(), "deadline").await;
    assert_eq!(slow["code"], 4, "{slow}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_request_to_a_grpc_service_is_told_to_use_http2() {
    let server = GrpcServer::start().await;
    let gw = Gateway::start(&config(&format!("grpc://{}", server.addr), "", "")).await;
    let reply = HttpClient::new().get(&gw.url("/echo.Echo/Unary")).await;
    assert_eq!(reply.status, 505, "{reply:?}");
    assert_eq!(reply.json()["message"], "this service speaks gRPC: send the request over HTTP/2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_service_serves_http1_clients_over_one_upstream_connection() {
    let upstream = Upstream::start("h2c").await;
    let yaml = format!(
        "services: [{{ name: s, url: \"http://{}\", http2: true, routes: [{{ name: r, paths: [/] }}] }}]",
        upstream.addr
    );
    let gw = Gateway::start(&yaml).await;
    let c = HttpClient::new();
    for _ in 0..5 {
        let reply = c.get(&gw.url("/hello")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.json()["version"], "HTTP/2.0", "{reply:?}");
        assert_eq!(reply.json()["uri"], "/hello");
    }
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_resets_streams_as_fast_as_it_opens_them_is_cut_off_and_the_node_stays_up() {
    let server = GrpcServer::start().await;
    let gw = Gateway::start(&config(&format!("grpc://{}", server.addr), "", "")).await;
    // HTTP/2 rapid reset (CVE-2023-44487): streams opened and reset at once, thousands of them.
    let tcp = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut opened = 0;
    for _ in 0..10_000 {
        let request = http::Request::post(format!("http://{}/echo.Echo/Unary", gw.proxy))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let Ok(ready) = client.clone().ready().await else { break };
        client = ready;
        let Ok((_, mut stream)) = client.send_request(request, false) else { break };
        stream.send_reset(h2::Reason::CANCEL);
        opened += 1;
    }
    // The node ended that connection (GOAWAY) long before the flood was over.
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(matches!(ended, Ok(Ok(Err(_)))), "the connection survived {opened} resets: {ended:?}");
    assert!(opened < 10_000, "all {opened} streams were taken");
    // And everyone else is still served.
    assert_eq!(call(&gw.proxy.to_string(), "unary").await["text"], "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_counts_unavailable_grpc_statuses_against_the_target() {
    let server = GrpcServer::start().await;
    let yaml = format!(
        "upstreams: [{{ name: up, healthchecks: {{ passive: {{ unhealthy: {{ http_failures: 2 }} }} }}, \
         targets: [{{ target: \"{}\" }}] }}]\n{}",
        server.addr,
        config("grpc://up", "retries: 0,", "")
    );
    let gw = Gateway::start(&yaml).await;
    let target = gw.proxy.to_string();
    let c = HttpClient::new();
    let state = || async { c.get(&gw.admin_url("/upstreams/up/health")).await.json()["data"][0]["health"].clone() };
    // Other statuses, NOT_FOUND included, are the service's answers: the target is fine.
    assert_eq!(call(&target, "fail").await["code"], 5);
    assert_eq!(call(&target, "unary").await["text"], "hello");
    assert_eq!(call(&target, "unavailable").await["code"], 14);
    assert_eq!(state().await, "HEALTHY");
    assert_eq!(call(&target, "unavailable").await["code"], 14);
    assert_eq!(state().await, "UNHEALTHY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_grpc_probes_ask_the_health_service() {
    let serving = GrpcServer::start().await;
    let not_serving = GrpcServer::start_on(tests::free_port(), "NOT_SERVING").await;
    let active = "{ active: { type: grpc, healthy: { interval: 1, successes: 1 }, \
        unhealthy: { interval: 1, http_failures: 1 } } }";
    let yaml = format!(
        "upstreams: [{{ name: up, healthchecks: {active}, targets: [{{ target: \"{}\" }}, {{ target: \"{}\" }}] }}]\n{}",
        serving.addr,
        not_serving.addr,
        config("grpc://up", "", "")
    );
    let gw = Gateway::start(&yaml).await;
    let c = HttpClient::new();
    let health = tests::eventually(Duration::from_secs(15), "the NOT_SERVING target taken out", || async {
        let h = c.get(&gw.admin_url("/upstreams/up/health")).await.json();
        let state = |addr: &str| {
            h["data"].as_array().unwrap().iter().find(|t| t["target"] == addr).map(|t| t["health"].clone())
        };
        (state(&not_serving.addr) == Some(json!("UNHEALTHY"))).then(|| state(&serving.addr))
    })
    .await;
    assert_eq!(health, Some(json!("HEALTHY")));
    // Every call goes to the serving one.
    assert_eq!(call(&gw.proxy.to_string(), "sequential").await, json!({"ok": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcs_service_speaks_http2_over_verified_tls() {
    let ca = Ca::new("gRPC upstream CA");
    let server = GrpcServer::start_tls(&ca.leaf(&["grpc.test"])).await;
    let yaml = format!(
        "ca_certificates: [{{ name: test-ca, cert: {} }}]\n{}",
        json!(ca.pem),
        config(
            &format!("grpcs://{}", server.addr),
            "ca_certificates: [test-ca], tls_server_name: grpc.test, retries: 0,",
            ""
        )
    );
    let gw = Gateway::start(&yaml).await;
    let target = gw.proxy.to_string();
    let unary = call(&target, "unary").await;
    assert_eq!((&unary["text"], &unary["trailing"]), (&json!("hello"), &json!({"x-trailer": "done"})), "{unary}");
    assert_eq!(call(&target, "bidi").await, json!({"texts": ["ONE", "TWO", "THREE"], "rest": 0}));
    assert_eq!(call(&target, "stats").await["peers"], 1, "one TLS connection for the calls");

    // The same server under a name its certificate does not carry: UNAVAILABLE, nothing sent.
    let wrong = config(
        &format!("grpcs://{}", server.addr),
        "ca_certificates: [test-ca], tls_server_name: other.test, retries: 0,",
        "",
    );
    let gw = Gateway::start(&format!("ca_certificates: [{{ name: test-ca, cert: {} }}]\n{wrong}", json!(ca.pem))).await;
    assert_eq!(call(&gw.proxy.to_string(), "unary").await["error"]["code"], 14);
}

/// A bare HTTP/2 upstream that answers every stream with a head and one message, then breaks:
/// `vanish` closes the connection, else the stream is reset; each when `go` is notified.
async fn breaking_upstream(vanish: bool, go: std::sync::Arc<tokio::sync::Notify>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let go = go.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(tcp).await else { return };
                while let Some(Ok((_, mut respond))) = connection.accept().await {
                    let head = http::Response::builder().header("content-type", "application/grpc").body(()).unwrap();
                    let Ok(mut stream) = respond.send_response(head, false) else { return };
                    let _ = stream.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 2, 0x0a, 0]), false);
                    // The frames go out (the connection is driven) until the client has them.
                    tokio::select! {
                        () = go.notified() => {}
                        _ = connection.accept() => return,
                    }
                    if vanish {
                        // The connection goes without a word.
                        return;
                    }
                    stream.send_reset(h2::Reason::INTERNAL_ERROR);
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_breaks_midway_resets_the_clients_stream_and_the_node_stays_up() {
    for vanish in [true, false] {
        let go = std::sync::Arc::new(tokio::sync::Notify::new());
        let addr = breaking_upstream(vanish, go.clone()).await;
        let gw = Gateway::start(&config(&format!("grpc://{addr}"), "retries: 0,", "")).await;
        let tcp = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let request = http::Request::post(format!("http://{}/echo.Echo/Unary", gw.proxy))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), response).await.unwrap().unwrap();
        assert_eq!(response.status(), 200, "the head came through (vanish: {vanish})");
        let mut body = response.into_body();
        let first = body.data().await.unwrap().unwrap();
        assert_eq!(&first[..], &[0, 0, 0, 0, 2, 0x0a, 0], "the first message came through");
        go.notify_one();
        // Then the client's stream is reset: no trailers, no clean end, and no hang.
        let end = tokio::time::timeout(Duration::from_secs(10), body.data()).await.expect("the stream ended");
        assert!(matches!(end, Some(Err(_))), "the break reached the client as a reset: {end:?} (vanish: {vanish})");
        // The node serves on.
        let reply = HttpClient::new().get(&gw.url("/nowhere")).await;
        assert_eq!(reply.status, 404);
    }
}
