//! Bad input from clients and upstreams: each gets a clear answer and the node keeps serving.
//! Malformed requests (400), oversized heads (431), clients that never finish their head
//! (dropped), upstreams that answer garbage (502), time out (504) or have no target (503).

use std::time::{Duration, Instant};
use tests::http::HttpClient;
use tests::{closed_port, Gateway, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn config(echo: &Upstream, extra: &str) -> String {
    format!(
        r#"
services:
  - name: echo
    url: http://{addr}
    routes: [{{ name: echo, paths: [/echo] }}]
  - name: slow
    url: http://{addr}
    read_timeout: 300
    routes: [{{ name: slow, paths: [/slow] }}]
  - name: upload
    url: http://{addr}
    write_timeout: 300
    routes: [{{ name: upload, paths: [/upload] }}]
  - name: empty
    url: http://nobody-up
    routes: [{{ name: empty, paths: [/empty] }}]
{extra}
upstreams:
  - name: nobody-up
"#,
        addr = echo.addr
    )
}

/// Sends raw bytes and reads until the server closes or `deadline` passes.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8], deadline: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(deadline, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn still_serves(gw: &Gateway) {
    let reply = HttpClient::new().get(&gw.url("/echo")).await;
    assert_eq!(reply.status, 200, "the node stopped serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_the_node_keeps_serving() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(&echo, "")).await;
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nbad header line\r\n\r\n",
        b"GET /echo HTTP/9.9\r\nHost: x\r\n\r\n",
    ] {
        let answer = raw_exchange(gw.proxy, garbage, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 505"), "{garbage:?} got {answer:?}");
    }
    still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_gets_431() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(&echo, "")).await;
    let big = "x".repeat(40 * 1024);
    let request = format!("GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let answer = raw_exchange(gw.proxy, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "got {:?}", &answer[..answer.len().min(100)]);
    still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_head_is_dropped() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start_with(&config(&echo, ""), &["--header-read-timeout-ms", "300"]).await;
    for partial in [&b""[..], b"GET /echo HTTP/1.1\r\nHost: x\r\n"] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(gw.proxy).await.expect("connect");
        stream.write_all(partial).await.expect("write");
        let mut out = Vec::new();
        // The node must close the connection on its own, well before this bound.
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the connection was left open");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250), "closed too early: {waited:?}");
        let text = String::from_utf8_lossy(&out);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "got {text:?}");
    }
    still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_are_json_with_the_contract_statuses() {
    let echo = Upstream::start("a").await;
    // An "upstream" that answers with something that is not HTTP.
    let liar = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let liar_addr = liar.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = liar.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"this is not http\r\n\r\n").await;
        }
    });
    let refused = closed_port();
    let extra = format!(
        r#"  - name: refused
    url: http://{refused}
    retries: 1
    routes: [{{ name: refused, paths: [/refused] }}]
  - name: liar
    url: http://{liar_addr}
    retries: 0
    routes: [{{ name: liar, paths: [/liar] }}]"#
    );
    let gw = Gateway::start(&config(&echo, &extra)).await;
    let client = HttpClient::new();
    for (path, status, message) in [
        ("/nothing-here", 404, "no Route matched with those values"),
        ("/empty", 503, "no healthy target in upstream \"nobody-up\""),
        ("/refused", 502, "failed to connect to the upstream server"),
        ("/liar", 502, "an invalid response was received from the upstream server"),
        ("/slow/delay/3000", 504, "the upstream server is timing out"),
    ] {
        let started = Instant::now();
        let reply = client.get(&gw.url(path)).await;
        assert_eq!(reply.status, status, "{path}: {:?}", reply.body);
        assert_eq!(reply.header("content-type"), "application/json", "{path}");
        assert_eq!(reply.json()["message"], message, "{path}");
        assert_eq!(reply.header("via"), "1.1 test-node", "{path}");
        if status == 504 {
            assert!(started.elapsed() < Duration::from_millis(2500), "the read timeout did not apply");
        }
    }
    still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_its_body_gets_408() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(&echo, "")).await;
    let started = Instant::now();
    let answer = raw_exchange(
        gw.proxy,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly the start",
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "got {answer:?}");
    assert!(answer.contains("the client did not send its request body in time"), "got {answer:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "the write timeout did not apply");
    still_serves(&gw).await;
}
