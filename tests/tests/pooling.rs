//! Upstream connections are pooled and kept alive: requests reuse them, and a connection whose
//! exchange did not finish cleanly is not reused.

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
