//! A response body streamed to the client while a copy is kept for the cache: up to the
//! plugin's `max_body_bytes`; past that the copy is dropped and the body streams through
//! uncached. When the body ends cleanly, the entry is stored.

use super::entry::Entry;
use super::store::{Caches, FillGuard};
use crate::exchange::{BoxBody, BoxError};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// What to store once the body is whole.
pub struct Pending {
    /// The stores.
    pub caches: Arc<Caches>,
    /// The key.
    pub key: String,
    /// The entry, its body still empty.
    pub entry: Entry,
    /// Store in Redis (else memory).
    pub redis: bool,
    /// The fill this response ends, released once it is stored.
    pub fill: Option<FillGuard>,
}

/// The body, and the copy being kept.
pub struct Tee {
    inner: BoxBody,
    copy: Option<BytesMut>,
    limit: usize,
    pending: Option<Pending>,
}

impl Tee {
    /// Streams `inner`, keeping a copy of at most `limit` bytes for `pending`.
    pub fn new(inner: BoxBody, limit: usize, pending: Pending) -> Tee {
        Tee { inner, copy: Some(BytesMut::new()), limit, pending: Some(pending) }
    }

    fn store(&mut self) {
        let (Some(copy), Some(mut pending)) = (self.copy.take(), self.pending.take()) else { return };
        pending.entry.body = copy.freeze();
        tokio::spawn(async move {
            if let Err(e) = pending.caches.put(&pending.key, pending.entry, pending.redis).await {
                tracing::debug!(error = %e, "response not cached");
            }
            drop(pending.fill);
        });
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(copy), Some(data)) = (this.copy.as_mut(), frame.data_ref()) {
                    if copy.len() + data.len() > this.limit {
                        this.copy = None;
                        this.pending = None;
                    } else {
                        copy.extend_from_slice(data);
                    }
                }
                if this.inner.is_end_stream() {
                    this.store();
                }
            }
            Some(Err(_)) => {
                this.copy = None;
                this.pending = None;
            }
            None => this.store(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // A body with nothing to read (a HEAD, an empty 200) may end without being polled.
        if self.inner.is_end_stream() {
            self.store();
        }
    }
}
