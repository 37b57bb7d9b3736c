//! A demo and test upstream: answers every request with a JSON description of what it received
//! (a header sent on several lines with its values joined by `, `) and which instance it is.
//! The body is read frame by frame and only counted (kept only for `/body...`), so uploads of
//! any size cost no memory.
//!
//! Paths with a meaning:
//! - `/status/{code}`: answers with that status.
//! - `/delay/{ms}`: waits that long before answering.
//! - `/bytes/{n}`: answers with an `n`-byte body, streamed in 64 KiB chunks.
//! - `/body...`: the answer also carries the request body as text (`body`, at most 1 MiB kept).
//! - `/ws` with a WebSocket upgrade: echoes every message back.
//!
//! Every instance can also be told to wait `delay` before each answer.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// How an echo instance behaves.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Reported in every answer as `instance`.
    pub name: String,
    /// Added before every answer.
    pub delay: Duration,
}

/// Counts what an instance served, for tests.
#[derive(Debug, Default)]
pub struct EchoStats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// When not 0, every answer has this status (a sick instance).
    pub forced_status: AtomicU16,
    /// When set, every exchange is cut without an answer (a crashing instance).
    pub drop_requests: AtomicBool,
    /// When not 0, every other answer has this status (a flaky instance).
    pub flaky_status: AtomicU16,
    /// Answers given the flaky status.
    pub flaked: AtomicU64,
}

/// An exchange the instance was told to cut.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

/// Serves echo on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, config: EchoConfig, stats: Arc<EchoStats>) {
    serve_with(listener, config, stats, None).await;
}

/// Serves echo on `listener`, over TLS with `tls`, until the task is dropped. A connection
/// whose handshake fails counts as a connection and is closed.
pub async fn serve_with(
    listener: TcpListener,
    config: EchoConfig,
    stats: Arc<EchoStats>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let config = Arc::new(config);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let config = config.clone();
        let stats = stats.clone();
        match tls.clone() {
            None => {
                tokio::spawn(serve_connection(stream, config, stats));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_connection(stream, config, stats).await;
                    }
                });
            }
        }
    }
}

async fn serve_connection<S>(stream: S, config: Arc<EchoConfig>, stats: Arc<EchoStats>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    {
        {
            let service = service_fn(move |req| {
                let config = config.clone();
                let stats = stats.clone();
                async move {
                    if stats.drop_requests.load(Ordering::Relaxed) {
                        return Err(Dropped);
                    }
                    Ok(answer(req, &config, &stats).await)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        }
    }
}

async fn answer(mut req: Request<Incoming>, config: &EchoConfig, stats: &EchoStats) -> Response<Body> {
    let n = stats.requests.fetch_add(1, Ordering::Relaxed);
    if !config.delay.is_zero() {
        tokio::time::sleep(config.delay).await;
    }
    let path = req.uri().path().to_owned();
    if path == "/ws" && req.headers().contains_key(header::UPGRADE) {
        return websocket(&mut req);
    }
    if let Some(ms) = path.strip_prefix("/delay/").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = path.strip_prefix("/bytes/").and_then(|v| v.parse::<u64>().ok()) {
        return bytes(n);
    }
    let mut forced = stats.forced_status.load(Ordering::Relaxed);
    let flaky = stats.flaky_status.load(Ordering::Relaxed);
    if forced == 0 && flaky != 0 && n.is_multiple_of(2) {
        stats.flaked.fetch_add(1, Ordering::Relaxed);
        forced = flaky;
    }
    let status = Some(forced)
        .filter(|s| *s != 0)
        .or_else(|| path.strip_prefix("/status/").and_then(|v| v.parse::<u16>().ok()))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let mut headers = serde_json::Map::new();
    for name in req.headers().keys() {
        // A header sent on several lines reads as one, its values joined.
        let values: Vec<_> =
            req.headers().get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
        headers.insert(name.as_str().to_owned(), json!(values.join(", ")));
    }
    let method = req.method().to_string();
    let uri = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let version = format!("{:?}", req.version());
    let keep = path.starts_with("/body");
    let mut body = req.into_body();
    let mut body_bytes = 0u64;
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let data = frame.data_ref().map_or(&[][..], |d| &d[..]);
                body_bytes += data.len() as u64;
                if keep && kept.len() + data.len() <= 1 << 20 {
                    kept.extend_from_slice(data);
                }
            }
            Err(_) => break,
        }
    }
    let mut answer = json!({
        "instance": config.name, "method": method, "uri": uri, "version": version,
        "headers": headers, "body_bytes": body_bytes,
    });
    if keep {
        answer["body"] = json!(String::from_utf8_lossy(&kept));
    }
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-echo-instance", config.name.as_str())
        .body(Full::new(Bytes::from(answer.to_string())).boxed())
        .expect("a valid response")
}

fn bytes(n: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let frames = futures_util::stream::iter((0..n.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(n - i * CHUNK) as usize;
        Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
    }));
    Response::builder()
        .header(header::CONTENT_LENGTH, n)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("a valid response")
}

fn websocket(req: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return Response::builder().status(400).body(Full::new(Bytes::new()).boxed()).expect("valid");
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        // After a Close, keep reading: tungstenite sends the close reply on the next read, which
        // then ends the stream.
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::new(Bytes::new()).boxed())
        .expect("a valid response")
}
