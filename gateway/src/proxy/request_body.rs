//! What goes upstream: the client's body streamed frame by frame ([`RequestBody`]), how far it
//! has got ([`Progress`]), and [`IdleTimeout`], which fails a body that waits too long for its
//! next frame (the service's `write_timeout` for requests, `read_timeout` for responses). Only
//! time spent waiting on the sender counts, not time the receiver took to ask for more.

use crate::exchange::{BoxError, ClientBody};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// A body's next frame took longer than allowed.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?}")]
pub struct IdleTimedOut(pub Duration);

/// A body that fails when its next frame takes longer than `timeout` to arrive.
pub struct IdleTimeout<B> {
    inner: B,
    timeout: Duration,
    /// Made the first time a frame is not there at once: a small body that came with its head
    /// never needs a timer.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether the deadline is armed for the frame being waited on.
    waiting: bool,
}

impl<B> IdleTimeout<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, timeout: Duration) -> Self {
        IdleTimeout { inner, timeout, sleep: None, waiting: false }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let sleep = match &mut this.sleep {
            Some(sleep) => sleep,
            None => this.sleep.insert(Box::pin(tokio::time::sleep(this.timeout))),
        };
        if !this.waiting {
            sleep.as_mut().reset(Instant::now() + this.timeout);
            this.waiting = true;
        }
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(IdleTimedOut(this.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Something wrong with the client's request body (malformed, or stalled): the client's fault,
/// never the target's.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body: {0}")]
pub struct ClientBodyError(#[source] pub BoxError);

/// How far a streamed request body has got, shared between the body (inside hyper) and the
/// attempt that waits on it.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    /// Nanoseconds after `start` of the last frame handed to hyper (or of the stream's start).
    last: AtomicU64,
    /// Whether hyper is waiting on the client for the next frame right now.
    waiting_on_client: AtomicBool,
    /// Whether the whole body has been handed to hyper.
    done: AtomicBool,
    done_signal: Notify,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            start: Instant::now(),
            last: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
            done: AtomicBool::new(false),
            done_signal: Notify::new(),
        }
    }

    fn frame(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(nanos, Ordering::Relaxed);
        self.waiting_on_client.store(false, Ordering::Relaxed);
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.done_signal.notify_waiters();
    }

    /// Completes once the whole body has been handed to hyper.
    pub async fn sent(&self) {
        let notified = self.done_signal.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.done.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    /// When the upstream side counts as stalled if nothing moves before then.
    pub fn deadline(&self, write_timeout: Duration) -> Instant {
        self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed)) + write_timeout
    }

    /// Whether hyper has not asked for the next frame for `write_timeout`: the upstream stopped
    /// reading. A wait on the client is not a stall of the upstream (the client's own idle
    /// timeout covers that).
    pub fn upstream_stalled(&self, write_timeout: Duration) -> bool {
        !self.done.load(Ordering::Acquire)
            && !self.waiting_on_client.load(Ordering::Relaxed)
            && Instant::now() >= self.deadline(write_timeout)
    }
}

/// What is sent upstream.
pub enum RequestBody {
    /// No body.
    Empty,
    /// The client's body, streamed.
    Stream {
        /// The client's body, failing when the client stalls.
        body: IdleTimeout<ClientBody>,
        /// Shared with the attempt.
        progress: Arc<Progress>,
    },
}

impl RequestBody {
    /// Streams `body` with `write_timeout` between the client's frames.
    pub fn stream(body: ClientBody, write_timeout: Duration) -> (RequestBody, Arc<Progress>) {
        let progress = Arc::new(Progress::new());
        (RequestBody::Stream { body: IdleTimeout::new(body, write_timeout), progress: progress.clone() }, progress)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Stream { body, progress } => {
                let frame = match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => {
                        progress.waiting_on_client.store(true, Ordering::Relaxed);
                        return Poll::Pending;
                    }
                    Poll::Ready(frame) => frame,
                };
                progress.frame();
                if frame.is_none() || body.is_end_stream() {
                    progress.finish();
                }
                Poll::Ready(frame.map(|f| f.map_err(|e| Box::new(ClientBodyError(e)) as BoxError)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Stream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Stream { body, .. } => body.size_hint(),
        }
    }
}
