//! Protocols through the gateway, end to end with a real gateway process and echo upstream:
//!
//! - h2c (HTTP/2 with prior knowledge) from the client, HTTP/1.1 to the upstream, several
//!   streams at once on one connection, bodies included;
//! - WebSocket: the upgrade is tunnelled (text and binary messages echoed back, a clean close),
//!   both on a route that keeps its path and on a route on `/`, and several sessions in parallel;
//!   a direct session with the echo is the baseline of what a close looks like;
//! - header-name case: lower case on the wire by default, as it came with
//!   `preserve_header_case`, both ways.

use futures_util::{SinkExt, StreamExt};
use http::Method;
use std::net::SocketAddr;
use std::time::Duration;
use tests::http::HttpClient;
use tests::{Gateway, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// One service on the echo: `/ws` kept whole, `/plain` stripped, `/keep-host` with preserve_host.
const CONFIG: &str = r#"
services:
  - name: echo
    url: http://127.0.0.1:PORT
    routes:
      - { name: ws, paths: [/ws], strip_path: false }
      - { name: plain, paths: [/plain] }
      - { name: keep-host, paths: [/keep-host], preserve_host: true }
"#;

/// Everything on `/`, so `/ws` goes through whole even with strip_path's default.
const ROOT: &str = r#"
services:
  - name: echo
    url: http://127.0.0.1:PORT
    routes: [{ name: root, paths: [/] }]
"#;

async fn start(yaml: &str) -> (Upstream, Gateway) {
    let up = Upstream::start("echo").await;
    let gw = Gateway::start(&yaml.replace("PORT", &up.addr.port().to_string())).await;
    (up, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_reach_http1_upstreams() {
    let (up, gw) = start(CONFIG).await;
    let c = HttpClient::h2c();

    let reply = c.get(&gw.url("/plain/hello?x=1")).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let echo = reply.json();
    assert_eq!(echo["version"], "HTTP/1.1", "the upstream speaks HTTP/1.1: {echo}");
    assert_eq!(echo["uri"], "/hello?x=1");
    assert_eq!(echo["headers"]["x-forwarded-host"], "127.0.0.1", "the host without its port: {echo}");
    assert_eq!(echo["headers"]["x-forwarded-port"], gw.proxy.port().to_string().as_str(), "{echo}");
    assert_eq!(echo["headers"]["host"], up.addr.to_string().as_str(), "the target's host:port: {echo}");
    assert_eq!(reply.header("via"), "1.1 test-node");
    assert!(reply.header("x-gateway-upstream-latency").parse::<u64>().is_ok(), "{:?}", reply.headers);

    // Over h2 the client's host is the :authority; preserve_host sends that as Host.
    let echo = c.get(&gw.url("/keep-host/x")).await.json();
    assert_eq!(echo["headers"]["host"], gw.proxy.to_string().as_str(), "{echo}");
    assert_eq!(echo["uri"], "/x");

    // A body goes through too.
    let reply = c.call(Method::POST, &gw.url("/plain/upload"), vec![b'b'; 100_000]).await;
    assert_eq!(reply.status, 200);
    let echo = reply.json();
    assert_eq!((echo["method"].as_str(), echo["body_bytes"].as_u64()), (Some("POST"), Some(100_000)));
    assert_eq!(echo["version"], "HTTP/1.1");

    // Many streams at once on the one connection, each with its own answer.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (c, url) = (c.clone(), gw.url(&format!("/plain/delay/{}?i={i}", 50 + i)));
            tokio::spawn(async move { (i, c.get(&url).await) })
        })
        .collect();
    for task in tasks {
        let (i, reply) = task.await.expect("the request task");
        assert_eq!(reply.status, 200, "stream {i}");
        assert_eq!(reply.json()["uri"], format!("/delay/{}?i={i}", 50 + i));
    }

    // An unknown path is still the JSON 404 over h2.
    let reply = c.get(&gw.url("/nowhere")).await;
    assert_eq!(reply.status, 404);
    assert!(reply.json()["message"].is_string());
}

/// A WebSocket session to `ws://<addr><path>`.
async fn connect(addr: SocketAddr, path: &str) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect to the gateway");
    let (ws, response) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp)
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake on {path}: {e}"));
    assert_eq!(response.status(), 101);
    ws
}

/// The next data message, within a deadline.
async fn next_message(ws: &mut WebSocketStream<TcpStream>) -> Message {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message within 5 s")
        .expect("the session is open")
        .expect("a valid message")
}

/// Sends text and binary messages and expects each back unchanged, then closes.
async fn echo_session(ws: &mut WebSocketStream<TcpStream>, tag: &str) {
    for i in 0..5 {
        let text = Message::text(format!("{tag} says hello {i}"));
        ws.send(text.clone()).await.expect("send text");
        assert_eq!(next_message(ws).await, text);
        let binary = Message::binary((0..=255u8).cycle().skip(i).take(1000 + i).collect::<Vec<u8>>());
        ws.send(binary.clone()).await.expect("send binary");
        assert_eq!(next_message(ws).await, binary);
    }
    // A large message crosses many TCP segments both ways.
    let big = Message::binary(vec![7u8; 300_000]);
    ws.send(big.clone()).await.expect("send a large message");
    assert_eq!(next_message(ws).await, big);
}

/// Closes the session and waits for the other side to end it.
///
/// The echo upstream (`tests/src/echo.rs`) stops at the client's close frame and drops the
/// connection without sending its own close frame back (tungstenite queues the reply but it is
/// never flushed), so a clean end here is either a close frame back or an orderly end of stream
/// (FIN, which tungstenite reports as `ResetWithoutClosingHandshake`); an I/O error (RST), a
/// data message, or no end within 5 s fails. Through the gateway this also proves the close frame
/// crossed the tunnel (the echo closes only on receiving it) and the upstream's end came back.
async fn close(mut ws: WebSocketStream<TcpStream>) {
    ws.close(Some(CloseFrame { code: 1000.into(), reason: "done".into() })).await.expect("send the close frame");
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        let mut rest = Vec::new();
        while let Some(item) = ws.next().await {
            rest.push(item);
        }
        rest
    })
    .await
    .expect("the session ends within 5 s of the close");
    let clean = |item: &Result<Message, WsError>| {
        matches!(
            item,
            Ok(Message::Close(_))
                | Err(WsError::ConnectionClosed | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))
        )
    };
    assert!(end.iter().all(clean), "after the close: {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_direct_baseline() {
    let up = Upstream::start("echo").await;
    let mut ws = connect(up.addr, "/ws").await;
    echo_session(&mut ws, "direct").await;
    close(ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_gateway() {
    let (up, gw) = start(CONFIG).await;
    let mut ws = connect(gw.proxy, "/ws").await;
    echo_session(&mut ws, "one").await;
    close(ws).await;
    assert_eq!(up.requests(), 1, "one upgrade request reached the upstream");

    // An upgrade on a stripping route: /plain/ws reaches the echo as /ws.
    let mut ws = connect(gw.proxy, "/plain/ws").await;
    echo_session(&mut ws, "stripped").await;
    close(ws).await;
    assert_eq!(up.requests(), 2);

    // The gateway still serves plain HTTP afterwards.
    let reply = HttpClient::new().get(&gw.url("/plain/after")).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_on_a_root_route() {
    let (_up, gw) = start(ROOT).await;
    let mut ws = connect(gw.proxy, "/ws").await;
    echo_session(&mut ws, "root").await;
    close(ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sessions_in_parallel() {
    let (up, gw) = start(CONFIG).await;
    // Open them all first so they really overlap, then talk on all at once.
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(connect(gw.proxy, "/ws").await);
    }
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            tokio::spawn(async move {
                echo_session(&mut ws, &format!("session {i}")).await;
                close(ws).await;
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a session failed");
    }
    assert_eq!(up.requests(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_is_closed_after_the_read_timeout_of_silence_and_kept_while_it_talks() {
    let yaml = r#"
services:
  - name: echo
    url: http://127.0.0.1:PORT
    read_timeout: 400
    routes: [{ name: ws, paths: [/ws], strip_path: false }]
"#;
    let (_up, gw) = start(yaml).await;
    // Talking every 100 ms for two seconds, five times the timeout: kept open.
    let mut ws = connect(gw.proxy, "/ws").await;
    let talked = std::time::Instant::now();
    let mut last_heard = talked;
    while talked.elapsed() < Duration::from_secs(2) {
        ws.send(Message::text("ping")).await.expect("send");
        assert_eq!(next_message(&mut ws).await, Message::text("ping"));
        last_heard = std::time::Instant::now();
        // The pace of a client that talks, not a wait for something.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then silence: the gateway closes the tunnel, and the client sees the end of its session,
    // about 400 ms after the last bytes went through (the gateway read them a little earlier).
    let end = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("closed within 10 s");
    assert!(!matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))), "{end:?}");
    let quiet = last_heard.elapsed();
    assert!(quiet >= Duration::from_millis(250), "not well before the timeout: {quiet:?}");
}

/// Reads one HTTP/1 message head (up to the blank line) as text.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.expect("read a head"), 1, "the peer closed mid-head");
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("a text head")
}

/// One request with mixed-case names through a gateway started with `flags`, to an upstream
/// that answers with mixed-case names: (the head the upstream got, the head the client got).
async fn heads_through(flags: &[&str]) -> (String, String) {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let seen = tokio::spawn(async move {
        let (mut conn, _) = upstream.accept().await.unwrap();
        let head = read_head(&mut conn).await;
        conn.write_all(b"HTTP/1.1 200 OK\r\nX-Upstream-Case: Yes\r\nContent-Length: 2\r\n\r\nok").await.unwrap();
        head
    });
    let gw = Gateway::start_with(&ROOT.replace("PORT", &port.to_string()), flags).await;
    let mut client = TcpStream::connect(gw.proxy).await.unwrap();
    client.write_all(b"GET /case HTTP/1.1\r\nHost: example.test\r\nX-Client-Case: Yes\r\n\r\n").await.unwrap();
    let answered = read_head(&mut client).await;
    (seen.await.unwrap(), answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_go_out_in_lower_case_by_default() {
    let (upstream_saw, client_saw) = heads_through(&[]).await;
    assert!(upstream_saw.contains("\r\nx-client-case: Yes\r\n"), "{upstream_saw}");
    assert!(client_saw.contains("\r\nx-upstream-case: Yes\r\n"), "{client_saw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_header_case_keeps_the_names_as_they_came_both_ways() {
    let (upstream_saw, client_saw) = heads_through(&["--preserve-header-case"]).await;
    assert!(upstream_saw.contains("\r\nX-Client-Case: Yes\r\n"), "{upstream_saw}");
    // The client's own spelling of Host is kept too, though the gateway set the target's value.
    assert!(upstream_saw.contains("\r\nHost: 127.0.0.1:"), "{upstream_saw}");
    // Headers the gateway adds are its own, in lower case.
    assert!(upstream_saw.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"), "{upstream_saw}");
    assert!(client_saw.contains("\r\nX-Upstream-Case: Yes\r\n"), "{client_saw}");
    assert!(client_saw.contains("\r\nvia: 1.1 "), "{client_saw}");
}
