//! `request-size-limiting`: refuses request bodies over a size, as Kong's plugin does. A body
//! whose `Content-Length` is over the limit gets 413 before the upstream is contacted; a body of
//! unknown length (chunked, or HTTP/2 without the header) is counted as it streams upstream, and
//! the moment it goes past the limit the upstream request is aborted and the client gets 413
//! (the proxy's `PayloadTooLarge`).

use super::pipeline::{Access, Ctx, Flow, Plugin, Refusal};
use crate::exchange::ClientBody;
use http::{header, StatusCode};
use http_body::Body as _;

/// A compiled `request-size-limiting` config.
pub(crate) struct RequestSizeLimiting {
    limit: u64,
    require_content_length: bool,
}

impl RequestSizeLimiting {
    pub(crate) fn new(config: &config_sync::model::RequestSizeLimiting) -> RequestSizeLimiting {
        RequestSizeLimiting { limit: config.limit_bytes(), require_content_length: config.require_content_length }
    }
}

impl Plugin for RequestSizeLimiting {
    fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
        Access::Ready(self.check(&ctx.request.headers, &mut ctx.body))
    }
}

impl RequestSizeLimiting {
    fn check(&self, headers: &http::HeaderMap, body: &mut ClientBody) -> Flow {
        let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        match length {
            Some(length) if length > self.limit => {
                Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "Request size limit exceeded").into()
            }
            // hyper holds the body to its Content-Length: it cannot carry more.
            Some(_) => Flow::Continue,
            None if body.is_end_stream() => Flow::Continue,
            None if self.require_content_length => {
                Refusal::new(StatusCode::LENGTH_REQUIRED, "A valid Content-Length header is required").into()
            }
            None => {
                body.limit(usize::try_from(self.limit).unwrap_or(usize::MAX));
                Flow::Continue
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::BoxBody;
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full, LengthLimitError};

    fn plugin(limit: u64, require_content_length: bool) -> RequestSizeLimiting {
        RequestSizeLimiting { limit, require_content_length }
    }

    fn streamed(text: &'static str) -> ClientBody {
        ClientBody::Wrapped(BoxBody::new(Full::new(Bytes::from_static(text.as_bytes())).map_err(|e| match e {})))
    }

    fn status(flow: Flow) -> Option<u16> {
        match flow {
            Flow::Continue => None,
            Flow::Refuse(refusal) => Some(refusal.status.as_u16()),
            Flow::Respond(_) => panic!("answered"),
        }
    }

    #[test]
    fn content_length_decides_before_the_upstream_and_a_streamed_body_is_counted() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "11".parse().unwrap());
        assert_eq!(status(plugin(10, false).check(&headers, &mut streamed("hello world"))), Some(413));
        assert_eq!(status(plugin(11, false).check(&headers, &mut streamed("hello world"))), None);

        let none = http::HeaderMap::new();
        assert_eq!(status(plugin(10, true).check(&none, &mut streamed("hello world"))), Some(411));
        assert_eq!(status(plugin(10, true).check(&none, &mut ClientBody::Empty)), None, "no body, no length needed");
        let mut body = streamed("hello world");
        assert_eq!(status(plugin(10, false).check(&none, &mut body)), None);
        let error = futures_util::FutureExt::now_or_never(body.collect()).unwrap().unwrap_err();
        assert!(error.is::<LengthLimitError>());
    }
}
