//! Accepting connections and serving HTTP/1.1 and h2c on them, until told to stop.
//!
//! Limits that protect the node from its clients live here: at most `max_connections` are served
//! at once (more wait in the kernel's backlog); a client must say which protocol it speaks within
//! the header read timeout, and an HTTP/1.1 client must then finish its request head within it
//! too, or it is dropped; a client that takes nothing of what is sent to it for the send timeout
//! is dropped (`send_timeout`); a head larger than the limit gets 431; a malformed request gets 400
//! from hyper and only that connection ends; HTTP/2 peers that stop answering pings are dropped,
//! and so are those that open too many streams at once or reset them as fast as they open them
//! (the rapid reset attack).
//! On shutdown the listener closes at once, connections finish their in-flight requests, and
//! whatever is still running when the grace period ends is cut.
//!
//! Who the client is: with `proxy_protocol`, a PROXY header read first, under the header read
//! timeout, names it; behind a trusted proxy, a header of each request may name another
//! (crate::client_address).

mod proxy_protocol;
mod read_ahead;
mod send_timeout;
mod traffic;

pub use traffic::Traffic;

use crate::client_address::{Addressing, RealIp};
use crate::exchange::{BoxError, ClientInfo};
use crate::proxy::ProxyBody;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Streams one HTTP/2 client may have open at once.
const H2_MAX_STREAMS: u32 = 200;
/// Streams an HTTP/2 client may reset before the node has accepted them.
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the node may reset for an HTTP/2 client's protocol errors on one connection.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Limits applied to every connection of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for the first byte and for the whole request head.
    pub header_read_timeout: Duration,
    /// Longest a write to the client may wait for it to take something.
    pub client_send_timeout: Duration,
    /// Largest request head, bytes (at least 8192).
    pub max_header_bytes: usize,
    /// Whether HTTP/1 header names keep the letter case they came with (not a limit, but set
    /// per listener like them).
    pub preserve_header_case: bool,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves `handler` on every connection accepted from `listener` until `shutdown` completes,
/// then drains as [`Limits::shutdown_grace`] allows; `addressing` says who the clients are;
/// `traffic` counts the connections and their bytes.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    limits: Limits,
    addressing: Addressing,
    tls: Option<Arc<ServerConfig>>,
    traffic: Arc<Traffic>,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, Arc<ClientInfo>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let tls = tls.map(TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .preserve_header_case(limits.preserve_header_case)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        // A client's streams at once, and the HTTP/2 rapid reset (CVE-2023-44487): streams the
        // client resets before they are served, and streams this side had to reset for the
        // client's errors, are counted; past these the connection ends with GOAWAY.
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_pending_accept_reset_streams(Some(H2_MAX_PENDING_RESETS))
        .max_local_error_reset_streams(Some(H2_MAX_LOCAL_ERROR_RESETS))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (handler, builder, watcher) = (handler.clone(), builder.clone(), graceful.watcher());
        let addressing = addressing.clone();
        let tls = tls.clone();
        let connection = Connection { handler, builder, watcher, limits, real_ip: None, traffic: traffic.clone() };
        let open = traffic::Open::new(traffic.clone());
        tokio::spawn(async move {
            let (_slot, _open) = (slot, open);
            let mut stream = read_ahead::ReadAhead::new(stream);
            let peer = if addressing.proxy_protocol {
                match proxy_protocol::accept(&mut stream, peer, limits.header_read_timeout).await {
                    Ok(source) => source,
                    Err(e) => return tracing::debug!(%peer, error = %e, "connection closed"),
                }
            } else {
                peer
            };
            // Resolved per request only for a trusted peer; everyone else's requests share this.
            let connection = Connection { real_ip: addressing.real_ip.filter(|r| r.trusts(peer.ip())), ..connection };
            let client = ClientInfo::new(peer, local_port);
            match tls {
                None => connection.serve(stream, client, peer).await,
                Some(acceptor) => {
                    let Some(stream) = handshake(&acceptor, stream, peer, limits.header_read_timeout).await else {
                        return;
                    };
                    connection.serve(read_ahead::ReadAhead::new(stream), client.over_tls(), peer).await;
                }
            }
        });
    }
    drop(listener);
    tracing::info!(grace = ?limits.shutdown_grace, "stopped accepting; draining connections");
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("grace period over; cutting the connections still open");
    }
}

/// One connection's share of what the listener serves with.
struct Connection<H> {
    handler: Arc<H>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    limits: Limits,
    /// Set when the peer is a trusted proxy whose headers may name the client.
    real_ip: Option<Arc<RealIp>>,
    traffic: Arc<Traffic>,
}

impl<H, F> Connection<H>
where
    H: Fn(Request<Incoming>, Arc<ClientInfo>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    /// Serves HTTP/1.1 or HTTP/2 on `stream` until it ends (or shutdown cuts it).
    async fn serve<S>(self, mut stream: read_ahead::ReadAhead<S>, client: ClientInfo, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // hyper's header timeout starts once the protocol is known; a client that says
        // nothing, or only part of the HTTP/2 preface, is dropped here.
        if !stream.read_until_protocol_known(self.limits.header_read_timeout).await {
            return;
        }
        let (client, real_ip, handler) = (Arc::new(client), self.real_ip, self.handler);
        let service = service_fn(move |request: Request<Incoming>| {
            let client = match &real_ip {
                None => client.clone(),
                Some(real_ip) => real_ip.client(&client, request.headers()),
            };
            let response = handler(request, client);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let stream = traffic::Counted::new(stream, self.traffic);
        let stream = send_timeout::SendTimeout::new(stream, self.limits.client_send_timeout);
        let connection = self.builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        if let Err(e) = self.watcher.watch(connection.into_owned()).await {
            log_connection_error(e, peer);
        }
    }
}

/// What a client that speaks plain HTTP to the TLS listener is told, as nginx does.
const PLAIN_HTTP_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\
Content-Length: 59\r\nConnection: close\r\n\r\n{\"message\":\"The plain HTTP request was sent to HTTPS port\"}";

/// The TLS handshake on `stream`, within `timeout`. None (and the connection closed) when it
/// fails, stalls, or the client speaks plain HTTP, which gets a 400 first.
async fn handshake(
    acceptor: &TlsAcceptor,
    mut stream: read_ahead::ReadAhead,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<TlsStream<read_ahead::ReadAhead>> {
    let handshake = async {
        // A TLS connection starts with a handshake record (content type 22).
        if stream.unread().is_empty() && stream.read_more(1).await.ok()? == 0 {
            return None;
        }
        if stream.unread()[0] != 22 {
            tracing::debug!(%peer, "plain HTTP on the TLS listener");
            let _ = stream.write_all(PLAIN_HTTP_ON_TLS).await;
            // Read what the client sent before closing (a close with bytes unread would be a
            // reset, and could cost the client the answer), as nginx's lingering close does.
            let _ = stream.shutdown().await;
            let linger = async {
                while matches!(stream.read_more(4096).await, Ok(n) if n > 0) {
                    stream.consume(stream.unread().len());
                }
            };
            let _ = tokio::time::timeout(Duration::from_millis(200), linger).await;
            return None;
        }
        match acceptor.accept(stream).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
        }
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(stream) => stream,
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "TLS handshake timed out");
            None
        }
    }
}

fn log_connection_error(error: BoxError, peer: SocketAddr) {
    // hyper's errors say what failed, and their sources why: "error writing a body to
    // connection: the client took nothing for 60s".
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::debug!(%peer, error = %text, "connection ended with an error");
}
