//! Protocol upgrades (WebSocket and the like): once the upstream answers 101, the two
//! connections are joined and bytes copied both ways until either side closes. Open tunnels are
//! counted, so that shutdown can give them the grace period too.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

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
    /// Joins the client's and the upstream's upgraded connections in a task of its own.
    pub fn open(&self, client: OnUpgrade, upstream: OnUpgrade) {
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
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                Ok((up, down)) => tracing::debug!(bytes_up = up, bytes_down = down, "upgraded connection closed"),
                Err(e) => tracing::debug!(error = %e, "upgraded connection broke"),
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
