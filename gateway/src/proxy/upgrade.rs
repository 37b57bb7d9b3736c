//! Protocol upgrades (WebSocket and the like): once the upstream answers 101, the two
//! connections are joined and bytes copied both ways until either side closes, or until nothing
//! has moved either way for the idle timeout (the service's `read_timeout`, as nginx's
//! `proxy_read_timeout` and Kong's `read_timeout` close a silent WebSocket; applications keep
//! theirs open with pings). Open tunnels are counted, so that shutdown can give them the grace
//! period too.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The tunnels open now.
#[derive(Clone, Default)]
pub struct Tunnels(Arc<Inner>);

#[derive(Default)]
struct Inner {
    open: AtomicUsize,
    closed: Notify,
}

/// Counts one tunnel while it lives.
struct Open(Arc<Inner>);

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

impl Tunnels {
    /// Joins the client's and the upstream's upgraded connections in a task of its own, until
    /// either closes or nothing moves for `idle_timeout`.
    pub fn open(&self, client: OnUpgrade, upstream: OnUpgrade, idle_timeout: Duration) {
        self.0.open.fetch_add(1, Ordering::AcqRel);
        let open = Open(self.0.clone());
        tokio::spawn(async move {
            let _open = open;
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            let started = Instant::now();
            let last = Arc::new(AtomicU64::new(0));
            let mut client = Active { io: TokioIo::new(client), started, last: last.clone() };
            let mut upstream = Active { io: TokioIo::new(upstream), started, last: last.clone() };
            tokio::select! {
                copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
                    Ok((up, down)) => tracing::debug!(bytes_up = up, bytes_down = down, "upgraded connection closed"),
                    Err(e) => tracing::debug!(error = %e, "upgraded connection broke"),
                },
                () = idle(started, &last, idle_timeout) => {
                    tracing::debug!(?idle_timeout, "upgraded connection idle; closed");
                }
            }
        });
    }

    /// How many are open.
    pub fn count(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }

    /// Completes once none is open.
    pub async fn closed(&self) {
        loop {
            let notified = self.0.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Completes once nothing has been read from either side for `timeout`.
async fn idle(started: Instant, last: &AtomicU64, timeout: Duration) {
    loop {
        let seen = last.load(Ordering::Relaxed);
        tokio::time::sleep_until(started + Duration::from_millis(seen) + timeout).await;
        if last.load(Ordering::Relaxed) == seen {
            return;
        }
    }
}

/// One side of a tunnel, noting when it last gave bytes (ms since `started`).
struct Active<IO> {
    io: IO,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Active<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            let ms = self.started.elapsed().as_millis() as u64;
            self.last.store(ms, Ordering::Relaxed);
        }
        poll
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Active<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_a_quiet_stretch_as_long_as_the_timeout() {
        let started = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let watcher = tokio::spawn({
            let last = last.clone();
            async move { idle(started, &last, Duration::from_secs(10)).await }
        });
        // Activity at 6 s and 12 s: quiet from 12 s, so idle at 22 s.
        for at in [6, 12] {
            tokio::time::sleep_until(started + Duration::from_secs(at)).await;
            last.store(at * 1000, Ordering::Relaxed);
        }
        watcher.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(22));
    }
}
