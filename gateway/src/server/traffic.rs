//! What a listener's clients cost: connections open, bytes received and sent, for
//! `gateway_client_connections` and `gateway_client_bytes_total`. The bytes are HTTP's, after
//! TLS (what the clients asked and were answered, not the records on the wire).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The counts of the listeners that share it.
#[derive(Debug, Default)]
pub struct Traffic {
    open: AtomicI64,
    received: AtomicU64,
    sent: AtomicU64,
}

impl Traffic {
    /// Client connections open now.
    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Bytes received from clients so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Bytes sent to clients so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// One open connection, counted until dropped.
pub(super) struct Open(Arc<Traffic>);

impl Open {
    pub(super) fn new(traffic: Arc<Traffic>) -> Open {
        traffic.open.fetch_add(1, Ordering::Relaxed);
        Open(traffic)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `inner`, its bytes counted.
pub(super) struct Counted<IO> {
    inner: IO,
    traffic: Arc<Traffic>,
}

impl<IO> Counted<IO> {
    pub(super) fn new(inner: IO, traffic: Arc<Traffic>) -> Self {
        Self { inner, traffic }
    }

    fn sent(&self, poll: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = poll {
            self.traffic.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            self.traffic.received.fetch_add(read as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.sent(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.sent(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_both_ways_and_open_connections_are_counted() {
        let traffic = Arc::new(Traffic::default());
        let (client, server) = tokio::io::duplex(64);
        let open = Open::new(traffic.clone());
        let mut counted = Counted::new(server, traffic.clone());
        let mut client = client;
        client.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        counted.read_exact(&mut buf).await.unwrap();
        counted.write_all(b"hi!").await.unwrap();
        assert_eq!((traffic.open(), traffic.received(), traffic.sent()), (1, 5, 3));
        drop(open);
        assert_eq!(traffic.open(), 0);
    }
}
