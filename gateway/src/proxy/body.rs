//! What goes to the client ([`ProxyBody`]): the upstream's body, a small generated one, or one a
//! plugin wrapped. Bodies stream frame by frame; nothing here buffers a whole body. When an
//! upstream body ends, its connection goes back to the pool and its balancer hears that the
//! request finished. The body of a request someone logs ([`crate::request_log`]) counts the
//! bytes it sends and finishes the request's record when it ends or is dropped.

use super::log::Draft;
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
    pub connection: Option<(Pool, super::pool::PoolKey, Held)>,
    /// Tells the balancer the request is over: the upstream, the target's index, and the time
    /// to the response head.
    pub finish: Option<(Arc<UpstreamState>, usize, Duration)>,
    /// A gRPC call whose status comes in the trailers: the upstream and target that passive
    /// health checks count it against.
    pub grpc_health: Option<(Arc<UpstreamState>, usize)>,
}

impl Completion {
    /// Counts a gRPC call's status from its trailers, once.
    fn trailers(&mut self, frame: &Frame<Bytes>) {
        if let Some(trailers) = frame.trailers_ref() {
            if let Some((upstream, index)) = self.grpc_health.take() {
                upstream.report(index, super::grpc::outcome(super::grpc::status_of(trailers)));
            }
        }
    }

    fn complete(&mut self, clean: bool, cx: Option<&mut Context<'_>>) {
        if let Some((upstream, index, latency)) = self.finish.take() {
            upstream.finish(index, Some(latency));
        }
        if let Some((pool, key, Held::H1(sender))) = self.connection.take() {
            if clean {
                pool.checkin_when_ready(key, sender, cx);
            }
        }
    }
}

/// What a response holds of its connection until it ends.
pub enum Held {
    /// An HTTP/1.1 connection, whole.
    H1(super::pool::Sender),
    /// A stream of a shared HTTP/2 connection (freed when dropped).
    H2(super::h2::Slot),
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
    /// Any of the above, for a request that is logged: its bytes counted, its record finished
    /// at its end. Only requests someone logs pay for it.
    Logged(Box<Logged>),
}

/// A logged request's body, the bytes it has sent, and its record until it is finished.
pub struct Logged {
    body: ProxyBody,
    sent: u64,
    draft: Option<Box<Draft>>,
}

impl Logged {
    /// Finishes the record, once.
    fn finish(&mut self) {
        if let Some(draft) = self.draft.take() {
            draft.finish(self.sent);
        }
    }
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

    /// `body`, whose request `draft` records once it has been sent.
    pub(crate) fn logged(body: ProxyBody, draft: Box<Draft>) -> ProxyBody {
        ProxyBody::Logged(Box::new(Logged { body, sent: 0, draft: Some(draft) }))
    }

    /// The target an upstream's body comes from (`host:port`); none for other bodies, and for a
    /// protocol switch.
    pub(crate) fn target(&self) -> Option<&Arc<str>> {
        match self {
            ProxyBody::Upstream { completion: Completion { connection: Some((_, (target, _), _)), .. }, .. } => {
                Some(target)
            }
            _ => None,
        }
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
                    Some(Ok(frame)) => {
                        if completion.grpc_health.is_some() {
                            completion.trailers(frame);
                        }
                        if body.is_end_stream() {
                            completion.complete(true, Some(cx));
                        }
                    }
                }
                Poll::Ready(frame)
            }
            ProxyBody::Logged(logged) => {
                let frame = ready!(Pin::new(&mut logged.body).poll_frame(cx));
                match &frame {
                    Some(Ok(data)) => {
                        logged.sent += data.data_ref().map_or(0, |d| d.len() as u64);
                        if logged.body.is_end_stream() {
                            logged.finish();
                        }
                    }
                    // The end, or a broken body: either way nothing more will be sent.
                    None | Some(Err(_)) => logged.finish(),
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
            ProxyBody::Logged(logged) => logged.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(full) => full.size_hint(),
            ProxyBody::Wrapped(body) => body.size_hint(),
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Logged(logged) => logged.body.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        match self {
            ProxyBody::Upstream { body, completion } => {
                // A body with nothing to read (204, HEAD) may never be polled; it is still clean.
                let clean = body.is_end_stream();
                completion.complete(clean, None);
            }
            // Sent, never polled (a HEAD), or the client went away: the record says how far.
            ProxyBody::Logged(logged) => logged.finish(),
            _ => {}
        }
    }
}
