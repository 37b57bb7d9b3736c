//! What can go wrong on the proxy path, and the one place that maps it to a status code and a
//! JSON body (`{"message": "..."}`).

use super::body::ProxyBody;
use http::{Response, StatusCode};

/// A request the proxy could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matched.
    #[error("no Route matched with those values")]
    NoRoute,
    /// Every target of the upstream is out (none configured, all weight 0, or all unhealthy).
    #[error("no healthy target in upstream {0:?}")]
    NoHealthyTarget(String),
    /// No connection to any target could be opened.
    #[error("failed to connect to the upstream server")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The upstream broke the exchange or answered with something that is not HTTP.
    #[error("an invalid response was received from the upstream server")]
    Upstream(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The upstream did not connect or answer in time.
    #[error("the upstream server is timing out")]
    Timeout,
    /// The rate limit could not be decided (Redis is out) and is not fault tolerant.
    #[error("rate limiting is unavailable")]
    RateLimitUnavailable,
    /// The client stopped sending its request body for longer than the write timeout.
    #[error("the client did not send its request body in time")]
    ClientTimeout,
    /// The request body went past a plugin's size limit while it streamed.
    #[error("Request size limit exceeded")]
    PayloadTooLarge,
    /// An HTTP/1 request to a `grpc://` or `grpcs://` service, which only HTTP/2 can carry
    /// (trailers).
    #[error("this service speaks gRPC: send the request over HTTP/2")]
    NeedsHttp2,
    /// The request cannot be forwarded as it is.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
}

impl ProxyError {
    /// The status a client sees for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoHealthyTarget(_) | ProxyError::RateLimitUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NeedsHttp2 => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The response a client sees for this error.
    pub fn to_response(&self) -> Response<ProxyBody> {
        json_error(self.status(), &self.to_string())
    }
}

/// A JSON error response: `{"message": "..."}` with `status`.
pub fn json_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    ProxyBody::answer(crate::exchange::json_error(status, message))
}
