//! A connection whose first bytes the server reads itself, before hyper (or TLS) takes it: a
//! PROXY protocol header, and enough of the start to tell HTTP/1.1 from the HTTP/2 preface.
//! What was read past those is given back first.
//!
//! The preface is looked for here, under the header read timeout, because hyper's own detection
//! waits for the whole preface with no time limit: a client sending `PRI` and nothing more would
//! hold the connection forever.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The HTTP/2 connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream with the bytes read from it and not yet taken kept in front.
pub struct ReadAhead<S = TcpStream> {
    buf: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> ReadAhead<S> {
    pub fn new(inner: S) -> ReadAhead<S> {
        ReadAhead { buf: Vec::new(), pos: 0, inner }
    }

    /// The bytes read ahead and not yet consumed.
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Drops the first `n` unread bytes (a header the server has dealt with).
    pub fn consume(&mut self, n: usize) {
        self.pos += n.min(self.buf.len() - self.pos);
        if self.pos == self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// Reads whatever the peer has sent next (up to `at_most` bytes) behind the unread bytes.
    /// Zero when the peer has closed.
    pub async fn read_more(&mut self, at_most: usize) -> io::Result<usize> {
        self.buf.reserve(at_most);
        let mut limited = (&mut self.inner).take(at_most as u64);
        limited.read_buf(&mut self.buf).await
    }

    /// Reads until the unread bytes either stop looking like the HTTP/2 preface or are the whole
    /// preface. False when the peer closes, fails, or is slower than `timeout`.
    pub async fn read_until_protocol_known(&mut self, timeout: Duration) -> bool {
        let read = async {
            while self.unread().len() < PREFACE.len() && PREFACE.starts_with(self.unread()) {
                match self.read_more(PREFACE.len() - self.unread().len()).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => {}
                }
            }
            true
        };
        tokio::time::timeout(timeout, read).await.unwrap_or(false)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let unread = self.unread();
        if !unread.is_empty() {
            let n = unread.len().min(buf.remaining());
            buf.put_slice(&unread[..n]);
            self.consume(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
pub(super) mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Both ends of a loopback connection: the client's, the server's.
    pub(in crate::server) async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn http1_is_told_apart_at_the_first_byte_and_given_back_whole() {
        let (mut client, server) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut stream = ReadAhead::new(server);
        assert!(stream.read_until_protocol_known(Duration::from_secs(5)).await);
        let mut got = vec![0u8; 18];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_partial_preface_times_out() {
        let (mut client, server) = pair().await;
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        assert!(!ReadAhead::new(server).read_until_protocol_known(Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn a_whole_preface_is_given_back_and_nothing_past_it_is_read() {
        let (mut client, server) = pair().await;
        client.write_all(PREFACE).await.unwrap();
        client.write_all(b"rest").await.unwrap();
        let mut stream = ReadAhead::new(server);
        assert!(stream.read_until_protocol_known(Duration::from_secs(5)).await);
        assert_eq!(stream.unread(), PREFACE);
        let mut got = vec![0u8; 28];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..24], PREFACE);
        assert_eq!(&got[24..], b"rest");
    }

    #[tokio::test]
    async fn consumed_bytes_are_not_given_back() {
        let (mut client, server) = pair().await;
        client.write_all(b"HEADERrest").await.unwrap();
        let mut stream = ReadAhead::new(server);
        while stream.unread().len() < 6 {
            stream.read_more(6).await.unwrap();
        }
        stream.consume(6);
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"rest");
    }
}
