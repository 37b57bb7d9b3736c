//! Pooled keep-alive connections to upstream targets, keyed by `host:port` and how TLS is spoken
//! to it (plain, or the id of a service's TLS settings), shared by every worker thread (one
//! pool, as Pingora found, beats one per thread).
//!
//! A connection is taken out for one request and put back when the response body has been read
//! to its end; a connection whose exchange did not finish cleanly is closed instead. Idle
//! connections are reused newest first; [`Pool::reap`], run every half idle timeout, closes
//! those older than the idle timeout and forgets those the upstream closed, including those of
//! targets no longer configured. Taking and returning a connection cost O(1): neither scans the
//! idle list nor reads the clock more than once. The HTTP/2 connections of `http2` services,
//! shared by many requests at once, are kept apart by [`H2Pool`], which the pool holds and reaps.

pub use super::dial::PoolKey;
use super::dial::{dial, ConnectError, Handshake};
use super::h2::H2Pool;
use super::request_body::RequestBody;
use crate::tls::UpstreamTls;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// The sending half of an upstream connection.
pub type Sender = http1::SendRequest<RequestBody>;

/// HTTP/1.1, upgrades included.
struct Http1 {
    preserve_header_case: bool,
}

impl Handshake for Http1 {
    type Sender = Sender;

    async fn handshake<S>(self, stream: S) -> Result<Sender, hyper::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::Builder::new()
            .preserve_header_case(self.preserve_header_case)
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection closed with an error");
            }
        });
        Ok(sender)
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// The pool; cheap to clone.
#[derive(Clone)]
pub struct Pool(Arc<Inner>);

struct Inner {
    /// Per target, oldest first.
    idle: Mutex<HashMap<PoolKey, VecDeque<Idle>>>,
    max_idle: usize,
    idle_timeout: Duration,
    preserve_header_case: bool,
    h2: H2Pool,
}

impl Pool {
    /// A pool keeping at most `max_idle` idle connections per target (0: no keep-alive, a
    /// connection per request), each for at most `idle_timeout`. With `preserve_header_case`,
    /// requests go out with the header-name case their extensions record, and responses record
    /// theirs.
    pub fn new(max_idle: usize, idle_timeout: Duration, preserve_header_case: bool) -> Pool {
        Pool(Arc::new(Inner {
            idle: Mutex::new(HashMap::new()),
            max_idle,
            idle_timeout,
            preserve_header_case,
            h2: H2Pool::new(idle_timeout),
        }))
    }

    /// Whether header-name case is carried through (see [`Pool::new`]).
    pub fn preserves_header_case(&self) -> bool {
        self.0.preserve_header_case
    }

    /// An idle connection of `key`, if there is a usable one.
    pub fn checkout(&self, key: &PoolKey) -> Option<Sender> {
        let mut idle = self.0.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        let now = Instant::now();
        while let Some(conn) = list.pop_back() {
            if conn.sender.is_ready() && now.duration_since(conn.since) < self.0.idle_timeout {
                return Some(conn.sender);
            }
        }
        None
    }

    /// An idle connection of `key` (`true`: reused), or a new one opened within
    /// `connect_timeout` (its TLS handshake included).
    pub async fn get(
        &self,
        key: &PoolKey,
        tls: Option<&UpstreamTls>,
        connect_timeout: Duration,
    ) -> Result<(Sender, bool), ConnectError> {
        if let Some(sender) = self.checkout(key) {
            return Ok((sender, true));
        }
        // Boxed: opening a connection is the rare path, and its future is large; inline, it
        // would make every request's future (moved at each poll hand-off) that much larger.
        Ok((Box::pin(self.connect(&key.0, tls, connect_timeout)).await?, false))
    }

    /// Opens a new connection to `target`, over TLS with `tls`.
    pub async fn connect(
        &self,
        target: &Arc<str>,
        tls: Option<&UpstreamTls>,
        connect_timeout: Duration,
    ) -> Result<Sender, ConnectError> {
        let h1 = Http1 { preserve_header_case: self.0.preserve_header_case };
        let mut sender = dial(target, tls, connect_timeout, h1).await?;
        sender.ready().await.map_err(|source| ConnectError::Handshake { target: target.clone(), source })?;
        Ok(sender)
    }

    /// The HTTP/2 connections.
    pub(crate) fn h2(&self) -> &H2Pool {
        &self.0.h2
    }

    /// Puts a connection whose exchange finished back into the pool. The connection may need
    /// a moment to become ready for the next request: with `cx` it is polled once here, and if
    /// it is not ready yet a small task waits for it.
    pub fn checkin_when_ready(&self, target: PoolKey, mut sender: Sender, cx: Option<&mut Context<'_>>) {
        if let Some(cx) = cx {
            match sender.poll_ready(cx) {
                Poll::Ready(Ok(())) => return self.checkin(target, sender),
                Poll::Ready(Err(_)) => return,
                Poll::Pending => {}
            }
        }
        if sender.is_closed() {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            // Bounded: a connection that never becomes ready again is dropped, not waited on.
            if let Ok(Ok(())) = tokio::time::timeout(pool.0.idle_timeout, sender.ready()).await {
                pool.checkin(target, sender);
            }
        });
    }

    fn checkin(&self, target: PoolKey, sender: Sender) {
        if self.0.max_idle == 0 {
            return;
        }
        let mut idle = self.0.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(target).or_default();
        // Closed and expired ones are left to `reap` and to `checkout`, which skips them.
        if list.len() >= self.0.max_idle {
            list.pop_front();
        }
        list.push_back(Idle { sender, since: Instant::now() });
    }

    /// Closes idle connections older than the idle timeout and forgets closed ones.
    pub fn reap(&self) {
        let timeout = self.0.idle_timeout;
        let now = Instant::now();
        let mut idle = self.0.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, list| {
            list.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < timeout);
            !list.is_empty()
        });
        drop(idle);
        self.0.h2.reap();
    }

    /// How often [`Pool::reap`] should run.
    pub fn reap_interval(&self) -> Duration {
        (self.0.idle_timeout / 2).max(Duration::from_millis(100))
    }

    /// Idle connections held now, over all targets.
    pub fn idle_count(&self) -> usize {
        self.0.idle.lock().unwrap_or_else(|e| e.into_inner()).values().map(VecDeque::len).sum()
    }
}
