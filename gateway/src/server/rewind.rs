//! A connection whose first bytes were read ahead, to be given back before the rest.
//!
//! The server reads the start of every connection itself, under the header read timeout, to
//! tell HTTP/1.1 from the HTTP/2 preface: hyper's own detection waits for the whole preface with
//! no time limit, and a client sending `PRI` and nothing more would hold the connection forever.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The HTTP/2 connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A TCP stream (or one that gives back a PROXY header's leftovers) with bytes already read
/// from it, returned first.
pub struct Rewind<S = TcpStream> {
    head: [u8; 24],
    len: usize,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> Rewind<S> {
    /// Reads until the bytes seen so far either stop looking like the HTTP/2 preface or are the
    /// whole preface. None when the client closes, fails, or is too slow.
    pub async fn read_start(mut inner: S, timeout: Duration) -> Option<Rewind<S>> {
        let mut head = [0u8; 24];
        let mut len = 0;
        let read = async {
            while len < PREFACE.len() && PREFACE.starts_with(&head[..len]) {
                match inner.read(&mut head[len..]).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => len += n,
                }
            }
            true
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(true) => Some(Rewind { head, len, pos: 0, inner }),
            _ => None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pos < self.len {
            let n = (self.len - self.pos).min(buf.remaining());
            buf.put_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
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
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn http1_is_told_apart_at_the_first_byte_and_given_back_whole() {
        let (mut client, server) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut rewind = Rewind::read_start(server, Duration::from_secs(5)).await.unwrap();
        let mut got = vec![0u8; 18];
        rewind.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_partial_preface_times_out() {
        let (mut client, server) = pair().await;
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        assert!(Rewind::read_start(server, Duration::from_millis(100)).await.is_none());
    }

    #[tokio::test]
    async fn a_whole_preface_is_given_back() {
        let (mut client, server) = pair().await;
        client.write_all(PREFACE).await.unwrap();
        client.write_all(b"rest").await.unwrap();
        let mut rewind = Rewind::read_start(server, Duration::from_secs(5)).await.unwrap();
        let mut got = vec![0u8; 28];
        rewind.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..24], PREFACE);
        assert_eq!(&got[24..], b"rest");
    }
}
