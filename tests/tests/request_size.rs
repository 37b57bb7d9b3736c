//! `request-size-limiting` end to end: a `Content-Length` over the limit is refused 413 with the
//! upstream never contacted; a chunked body is counted as it streams, and past the limit the
//! upstream's request is cut off (it never sees the body's end) while the client gets 413;
//! `require_content_length` refuses a chunked body 411; and a body that lies about its length
//! cannot smuggle more than its `Content-Length` upstream.

use std::time::Duration;
use tests::http::HttpClient;
use tests::{Gateway, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

fn config(upstream: &str) -> String {
    format!(
        r#"
services:
  - name: s
    url: http://{upstream}
    routes:
      - {{ name: small, paths: [/small], plugins: {{ request-size-limiting: {{ allowed_payload_size: 4, size_unit: kilobytes }} }} }}
      - {{ name: strict, paths: [/strict], plugins: {{ request-size-limiting: {{ allowed_payload_size: 4, size_unit: kilobytes, require_content_length: true }} }} }}
"#
    )
}

/// Writes `head` then `chunks` (each as one chunk of a chunked body, then the last chunk) and
/// reads the answer's status line. With `pause`, waits for its signal after that many chunks.
async fn chunked(
    gw: &Gateway,
    path: &str,
    (chunks, size): (usize, usize),
    pause: Option<(usize, tokio::sync::oneshot::Receiver<()>)>,
) -> String {
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{size:x}\r\n{}\r\n", "x".repeat(size));
    let (pause_at, mut signal) = pause.map_or((usize::MAX, None), |(at, signal)| (at, Some(signal)));
    for i in 0..chunks {
        if i == pause_at {
            let _ = tokio::time::timeout(WAIT, signal.take().expect("one pause")).await;
        }
        // The gateway may answer and close before the whole body is written.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_over_the_limit_is_refused_before_the_upstream() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(&echo.addr.to_string())).await;
    let client = HttpClient::new();
    let over = client.call(http::Method::POST, &gw.url("/small"), vec![b'x'; 4097]).await;
    assert_eq!(over.status, 413);
    assert_eq!(over.json()["message"], "Request size limit exceeded");
    assert_eq!(echo.requests(), 0, "the upstream was never contacted");
    let at = client.call(http::Method::POST, &gw.url("/small"), vec![b'x'; 4096]).await;
    assert_eq!((at.status.as_u16(), at.json()["body_bytes"].as_u64()), (200, Some(4096)));
    // Chunked and within the limit: streamed through.
    assert!(chunked(&gw, "/small", (4, 1000), None).await.contains(" 200 "));
    // Chunked, and no Content-Length where one is required.
    assert!(chunked(&gw, "/strict", (1, 10), None).await.contains(" 411 "));
    let metrics = String::from_utf8_lossy(&client.get(&gw.admin_url("/metrics")).await.body).into_owned();
    let refused = metrics.lines().find(|l| {
        l.starts_with("gateway_plugin_refusals_total")
            && l.contains("plugin=\"request-size-limiting\"")
            && l.contains("code=\"413\"")
    });
    assert!(refused.is_some_and(|l| l.ends_with(" 1")), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_past_the_limit_is_cut_off_upstream_and_answered_413() {
    // An upstream that reads what it is sent until the connection ends, and reports it; it
    // signals once the request's head has come, so that the client sends the body past the
    // limit only once the upstream request is under way.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let (mut seen, mut head_tx) = (Vec::new(), Some(head_tx));
        let mut buffer = [0u8; 8192];
        while let Ok(Ok(n @ 1..)) = tokio::time::timeout(WAIT, socket.read(&mut buffer)).await {
            seen.extend_from_slice(&buffer[..n]);
            if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                head_tx.take().map(|tx| tx.send(()));
            }
        }
        let _ = seen_tx.send(seen);
    });
    let gw = Gateway::start(&config(&upstream.to_string())).await;
    let status = chunked(&gw, "/small", (64, 1000), Some((2, head_rx))).await;
    assert!(status.contains(" 413 "), "{status}");
    let seen = tokio::time::timeout(WAIT, seen_rx).await.unwrap().unwrap();
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("POST "), "the upstream got the request: {seen:.80}");
    assert!(!seen.ends_with("0\r\n\r\n"), "the upstream never saw the body end");
    assert!(seen.matches('x').count() <= 4096 + 1000, "no more than the limit (and the chunk that crossed it) went up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_longer_than_its_content_length_smuggles_nothing() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(&echo.addr.to_string())).await;
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    // Five bytes declared; what follows is read as the next request, which is not HTTP.
    let lie = b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /small HTTP/1.1 junk\r\n\r\n";
    stream.write_all(lie).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"body_bytes\":5"), "the upstream got the declared five bytes: {answer}");
    assert!(answer.contains("HTTP/1.1 400"), "the rest was refused as a request of its own: {answer}");
    assert_eq!(echo.requests(), 1);
}
