//! What the proxy and the plugins both handle, beneath both: the client of a request, the
//! bodies plugins may wrap, the answers they may give, query strings, and header values made
//! cheaply.

mod body;
mod client;
pub(crate) mod query;

pub(crate) use body::{ClientBody, ReadError};
pub use client::ClientInfo;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// The error type of every body on the proxy path.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body wrapped by a plugin (the cache's copy on its way to the client).
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A JSON error answer: `{"message": "..."}` with `status`.
pub fn json_error(status: StatusCode, message: &str) -> Response<Bytes> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The header value of `n`. Below 1,000 (latencies in milliseconds, most rate-limit counts)
/// it comes from a table made once, since `HeaderValue::from` allocates for every value.
pub fn number_header(n: u64) -> HeaderValue {
    const SMALL: usize = 1000;
    static TABLE: std::sync::LazyLock<Vec<HeaderValue>> = std::sync::LazyLock::new(|| {
        // One string for all of them, leaked once, so each value is static and free to clone.
        let text: &'static str = Box::leak((0..SMALL).map(|i| i.to_string()).collect::<String>().into_boxed_str());
        let mut start = 0;
        (0..SMALL)
            .map(|i| {
                let end = start + i.checked_ilog10().unwrap_or(0) as usize + 1;
                let value = HeaderValue::from_static(&text[start..end]);
                start = end;
                value
            })
            .collect()
    });
    usize::try_from(n).ok().and_then(|i| TABLE.get(i)).cloned().unwrap_or_else(|| HeaderValue::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_the_same_from_the_table_and_beyond_it() {
        for n in [0, 1, 9, 10, 99, 100, 999, 1000, 12_345, u64::MAX] {
            assert_eq!(number_header(n), HeaderValue::from(n), "{n}");
        }
    }
}
