//! What goes to the client ([`ProxyBody`]): the upstream's body, a small generated one, or one a
//! plugin wrapped. Bodies stream frame by frame; nothing here buffers a whole body. When an
//! upstream body ends, its connection goes back to the pool and its balancer hears that the
//! request finished.

use super::pool::Pool;
use super::request_body::IdleTimeout;
use crate::exchange::{BoxBody, BoxError};
use crate::runtime::UpstreamState;
use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

/// Work to do once an upstream response body is finished or dropped.
pub struct Completion {
    /// The connection, to go back to the pool if the body was read to its end.
    pub connection: Option<(Pool, super::pool::PoolKey, super::pool::Sender)>,
    /// Tells the balancer the request is over: the upstream, the target's index, and the time
    /// to the response head.
    pub finish: Option<(Arc<UpstreamState>, usize, Duration)>,
}

impl Completion {
    fn complete(&mut self, clean: bool, cx: Option<&mut Context<'_>>) {
        if let Some((upstream, index, latency)) = self.finish.take() {
            upstream.finish(index, Some(latency));
        }
        if let Some((pool, key, sender)) = self.connection.take() {
            if clean {
                pool.checkin_when_ready(key, sender, cx);
            }
        }
    }
}

/// What goes to the client.
pub enum ProxyBody {
    /// A small body made here (errors, admin answers).
    Full(Full<Bytes>),
    /// A body a plugin wrapped (the cache's copy as it streams).
    Wrapped(BoxBody),
    /// The upstream's body.
    Upstream {
        /// The body, with the service's `read_timeout` between frames.
        body: IdleTimeout<Incoming>,
        /// Done at the end.
        completion: Completion,
    },
}

impl ProxyBody {
    /// A body of `bytes`.
    pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Full(Full::new(bytes.into()))
    }

    /// The body of an answer made here or by a plugin.
    pub fn answer(response: Response<Bytes>) -> Response<ProxyBody> {
        response.map(ProxyBody::full)
    }

    /// No body.
    pub fn empty() -> ProxyBody {
        ProxyBody::Full(Full::new(Bytes::new()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(full) => Pin::new(full).poll_frame(cx).map_err(|never| match never {}),
            ProxyBody::Wrapped(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Upstream { body, completion } => {
                let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
                match &frame {
                    None => completion.complete(true, Some(cx)),
                    Some(Err(_)) => completion.complete(false, None),
                    Some(Ok(_)) if body.is_end_stream() => completion.complete(true, Some(cx)),
                    Some(Ok(_)) => {}
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(full) => full.is_end_stream(),
            ProxyBody::Wrapped(body) => body.is_end_stream(),
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(full) => full.size_hint(),
            ProxyBody::Wrapped(body) => body.size_hint(),
            ProxyBody::Upstream { body, .. } => body.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let ProxyBody::Upstream { body, completion } = self {
            // A body with nothing to read (204, HEAD) may never be polled; it is still clean.
            let clean = body.is_end_stream();
            completion.complete(clean, None);
        }
    }
}
