//! Upstream connections are pooled and kept alive: requests reuse them, a connection whose
//! exchange did not finish cleanly is not reused, and one the upstream closed while it sat idle
//! costs no request anything.

use tests::http::HttpClient;
use tests::{Gateway, Upstream};

fn config(echo: &Upstream) -> String {
    format!("services: [{{ name: a, url: \"http://{}\", retries: 0, routes: [{{ name: a, paths: [/] }}] }}]", echo.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_upstream_connection() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(&echo)).await;
    // A fresh client connection for every request: reuse upstream must not depend on the client.
    for i in 0..50 {
        let reply = HttpClient::new().get(&gw.url(&format!("/n/{i}"))).await;
        assert_eq!(reply.status, 200);
    }
    for _ in 0..10 {
        assert_eq!(HttpClient::new().get(&gw.url("/bytes/100000")).await.body.len(), 100_000);
    }
    assert_eq!(echo.requests(), 60);
    assert_eq!(echo.connections(), 1, "every request should have reused the pooled connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_open_no_more_connections_than_needed() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(&echo)).await;
    for _ in 0..5 {
        let wave: Vec<_> = (0..8)
            .map(|_| {
                let url = gw.url("/delay/50");
                tokio::spawn(async move { HttpClient::new().get(&url).await.status })
            })
            .collect();
        for request in wave {
            assert_eq!(request.await.unwrap(), 200);
        }
    }
    assert_eq!(echo.requests(), 40);
    let opened = echo.connections();
    assert!((1..=8).contains(&opened), "{opened} connections for waves of 8 concurrent requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cut_short_does_not_poison_the_pool() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(&echo)).await;
    // Read only the head of a large response, then drop the client connection.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
        stream.write_all(b"GET /bytes/50000000 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut head = [0u8; 512];
        let n = stream.read(&mut head).await.unwrap();
        assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    }
    for _ in 0..20 {
        let reply = HttpClient::new().get(&gw.url("/after")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.json()["uri"], "/after");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_idle_connections_costs_no_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers one request per connection as if keeping it alive, then closes it, as an upstream
    // whose keep-alive timeout is shorter than the gateway's does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
            });
        }
    });
    // No retries: a request sent on a connection found closed must go again on a fresh one
    // without using a retry, whatever its method.
    let yaml =
        format!("services: [{{ name: a, url: \"http://{addr}\", retries: 0, routes: [{{ name: a, paths: [/] }}] }}]");
    let gw = Gateway::start(&yaml).await;
    let c = HttpClient::new();
    for i in 0..30 {
        let reply = if i % 2 == 0 {
            c.get(&gw.url("/x")).await
        } else {
            c.call(http::Method::POST, &gw.url("/x"), "body").await
        };
        assert_eq!((reply.status.as_u16(), &reply.body[..]), (200, &b"ok"[..]), "request {i}");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::Relaxed), 30, "one connection per request");
}
