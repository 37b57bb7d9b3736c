//! HTTP/2 connections to upstream targets (`grpc://`, `grpcs://`, `http2: true`), keyed as the
//! HTTP/1.1 pool's are. A connection carries many requests at once: each request takes a stream
//! slot of a live connection with fewer than [`MAX_STREAMS`] in flight, and gives it back when its
//! response body ends or is dropped; when every connection is full, another is opened. A
//! connection that died (the target closed it, or stopped answering pings) is forgotten when
//! next looked at, and the next request opens a fresh one. Opening is one at a time per key, so
//! a burst of requests to a new target shares one connection rather than opening one each.

use super::dial::{dial, ConnectError, Handshake, PoolKey};
use super::request_body::RequestBody;
use crate::tls::UpstreamTls;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// Streams in flight on one connection before another is opened. Under the targets' usual
/// `SETTINGS_MAX_CONCURRENT_STREAMS` (100 for gRPC's servers and nginx), so a request never
/// queues for a slot the target would not give.
pub(crate) const MAX_STREAMS: usize = 100;

/// The sending half of an HTTP/2 connection; a clone per request.
pub(crate) type H2Sender = http2::SendRequest<RequestBody>;

/// A request's share of a connection: its stream slot, free again when dropped.
pub struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        let since = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_used.store(since, Ordering::Relaxed);
        self.0.streams.fetch_sub(1, Ordering::Release);
    }
}

struct Shared {
    sender: H2Sender,
    streams: AtomicUsize,
    opened: Instant,
    /// Milliseconds after `opened` when a stream last ended, for [`H2Pool::reap`].
    last_used: AtomicU64,
}

impl Shared {
    fn idle_for(&self, now: Instant) -> Duration {
        let last = self.opened + Duration::from_millis(self.last_used.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

/// The HTTP/2 connections of every target.
pub(crate) struct H2Pool {
    connections: Mutex<HashMap<PoolKey, Vec<Arc<Shared>>>>,
    /// One opener at a time per key.
    opening: Mutex<HashMap<PoolKey, Arc<tokio::sync::Mutex<()>>>>,
    idle_timeout: Duration,
}

impl H2Pool {
    pub(crate) fn new(idle_timeout: Duration) -> H2Pool {
        H2Pool { connections: Mutex::default(), opening: Mutex::default(), idle_timeout }
    }

    /// A stream on a connection of `key` (`true`: the connection was open before), opened within
    /// `connect_timeout` when none has room.
    pub(crate) async fn get(
        &self,
        key: &PoolKey,
        tls: Option<&UpstreamTls>,
        connect_timeout: Duration,
    ) -> Result<(H2Sender, Slot, bool), ConnectError> {
        if let Some((sender, slot)) = self.take(key) {
            return Ok((sender, slot, true));
        }
        let opener = {
            let mut opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
            opening.entry(key.clone()).or_default().clone()
        };
        let _opening = opener.lock().await;
        // Another request may have opened one while this one waited.
        if let Some((sender, slot)) = self.take(key) {
            return Ok((sender, slot, true));
        }
        let (sender, slot) = self.open(key, tls, connect_timeout).await?;
        Ok((sender, slot, false))
    }

    /// Opens a new connection of `key` and takes a stream on it.
    pub(crate) async fn open(
        &self,
        key: &PoolKey,
        tls: Option<&UpstreamTls>,
        connect_timeout: Duration,
    ) -> Result<(H2Sender, Slot), ConnectError> {
        let mut sender = Box::pin(dial(&key.0, tls, connect_timeout, Http2)).await?;
        sender.ready().await.map_err(|source| ConnectError::Handshake { target: key.0.clone(), source })?;
        let shared = Arc::new(Shared {
            sender: sender.clone(),
            streams: AtomicUsize::new(1),
            opened: Instant::now(),
            last_used: AtomicU64::new(0),
        });
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.entry(key.clone()).or_default().push(shared.clone());
        Ok((sender, Slot(shared)))
    }

    /// A stream on a live connection of `key` with room for it; the dead ones are forgotten.
    fn take(&self, key: &PoolKey) -> Option<(H2Sender, Slot)> {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        let list = connections.get_mut(key)?;
        list.retain(|c| !c.sender.is_closed());
        let shared = list.iter().find(|c| c.streams.load(Ordering::Acquire) < MAX_STREAMS)?;
        shared.streams.fetch_add(1, Ordering::AcqRel);
        Some((shared.sender.clone(), Slot(shared.clone())))
    }

    /// Closes the connections that carried no stream for the idle timeout (a target no longer
    /// configured keeps none open for long), and forgets dead ones.
    pub(crate) fn reap(&self) {
        let now = Instant::now();
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|_, list| {
            list.retain(|c| {
                let idle = c.streams.load(Ordering::Acquire) == 0 && c.idle_for(now) >= self.idle_timeout;
                !(c.sender.is_closed() || idle)
            });
            !list.is_empty()
        });
        drop(connections);
        let mut opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        opening.retain(|_, lock| Arc::strong_count(lock) > 1);
    }
}

/// HTTP/2 with prior knowledge (or as TLS's ALPN chose). Pings find a target that went away
/// without closing, so that the next request opens a fresh connection instead of waiting.
struct Http2;

impl Handshake for Http2 {
    type Sender = H2Sender;

    async fn handshake<S>(self, stream: S) -> Result<H2Sender, hyper::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection closed with an error");
            }
        });
        Ok(sender)
    }
}
