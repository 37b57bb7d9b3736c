//! The client's request body on its way upstream ([`ClientBody`]): as it came, wrapped by a
//! plugin (a size limit counting it as it streams), or read whole and rewritten (a JSON body
//! transformed).

use super::{BoxBody, BoxError};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The request body as it will go upstream.
#[derive(Default)]
pub enum ClientBody {
    /// No body.
    #[default]
    Empty,
    /// The client's, as received.
    Incoming(Incoming),
    /// Wrapped by a plugin.
    Wrapped(BoxBody),
    /// Read whole by a plugin (and perhaps rewritten); None once sent.
    Full(Option<Bytes>),
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// It is longer than the limit.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The client's body failed (malformed, or a limit set before).
    #[error("the request body could not be read: {0}")]
    Client(#[source] BoxError),
}

impl ClientBody {
    /// Wraps the body in `wrap`; an empty body stays empty.
    pub(crate) fn wrap(&mut self, wrap: impl FnOnce(BoxBody) -> BoxBody) {
        if self.is_end_stream() {
            return;
        }
        let body = std::mem::take(self);
        *self = ClientBody::Wrapped(wrap(BoxBody::new(body)));
    }

    /// Fails the body with [`LengthLimitError`] once it has carried more than `limit` bytes.
    pub(crate) fn limit(&mut self, limit: usize) {
        self.wrap(|body| BoxBody::new(Limited::new(body, limit)));
    }

    /// Reads the whole body, at most `limit` bytes, keeping it to be sent on.
    pub(crate) async fn read_whole(&mut self, limit: usize) -> Result<Bytes, ReadError> {
        let body = std::mem::take(self);
        let collected = Limited::new(body, limit).collect().await.map_err(|error| {
            if error.is::<LengthLimitError>() {
                ReadError::TooLarge(limit)
            } else {
                ReadError::Client(error)
            }
        })?;
        let bytes = collected.to_bytes();
        *self = ClientBody::Full(Some(bytes.clone()));
        Ok(bytes)
    }

    /// Replaces the body with `bytes`.
    pub(crate) fn set(&mut self, bytes: Bytes) {
        *self = ClientBody::Full(Some(bytes));
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Incoming(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::Wrapped(body) => Pin::new(body).poll_frame(cx),
            ClientBody::Full(bytes) => Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Incoming(body) => body.is_end_stream(),
            ClientBody::Wrapped(body) => body.is_end_stream(),
            ClientBody::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Incoming(body) => body.size_hint(),
            ClientBody::Wrapped(body) => body.size_hint(),
            ClientBody::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;
    use http_body_util::{Full, StreamBody};

    fn chunks(parts: &[&'static str]) -> ClientBody {
        let frames = parts.iter().map(|p| Ok::<_, BoxError>(Frame::data(Bytes::from_static(p.as_bytes()))));
        ClientBody::Wrapped(BoxBody::new(StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>()))))
    }

    #[test]
    fn a_limit_fails_the_body_once_it_carries_more() {
        let mut body = chunks(&["abc", "def"]);
        body.limit(5);
        let error = body.collect().now_or_never().unwrap().unwrap_err();
        assert!(error.is::<LengthLimitError>(), "{error}");
        let mut body = chunks(&["abc", "de"]);
        body.limit(5);
        assert_eq!(body.collect().now_or_never().unwrap().unwrap().to_bytes(), "abcde");
    }

    #[test]
    fn a_body_read_whole_is_sent_on_and_can_be_replaced() {
        let mut body = chunks(&["{\"a\":", "1}"]);
        assert_eq!(body.read_whole(100).now_or_never().unwrap().unwrap(), "{\"a\":1}");
        assert_eq!(body.size_hint().exact(), Some(7));
        body.set(Bytes::from_static(b"{}"));
        let sent = std::mem::take(&mut body).collect().now_or_never().unwrap().unwrap().to_bytes();
        assert_eq!(sent, "{}");
        let mut long = chunks(&["0123456789"]);
        assert!(matches!(long.read_whole(4).now_or_never().unwrap(), Err(ReadError::TooLarge(4))));
        let mut empty = ClientBody::Wrapped(BoxBody::new(Full::new(Bytes::new()).map_err(|e| match e {})));
        empty.limit(1);
        assert!(empty.is_end_stream());
    }
}
