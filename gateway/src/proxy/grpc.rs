//! gRPC on the proxy path: which requests are gRPC calls, the gateway's own answers to them in
//! gRPC's form (HTTP 200, trailers-only, `grpc-status` and `grpc-message`), and `grpc-timeout`.

use crate::health::Outcome;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use std::time::Duration;

/// The call's deadline, set by the client.
pub(crate) static TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// The call's status code, in the trailers (or a trailers-only response's head).
pub(crate) static STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The status's message, percent-encoded.
pub(crate) static MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// gRPC status codes the gateway answers with or reads.
pub(crate) mod code {
    pub(crate) const UNKNOWN: u32 = 2;
    pub(crate) const DEADLINE_EXCEEDED: u32 = 4;
    pub(crate) const PERMISSION_DENIED: u32 = 7;
    pub(crate) const RESOURCE_EXHAUSTED: u32 = 8;
    pub(crate) const UNIMPLEMENTED: u32 = 12;
    pub(crate) const INTERNAL: u32 = 13;
    pub(crate) const UNAVAILABLE: u32 = 14;
    pub(crate) const UNAUTHENTICATED: u32 = 16;
}

/// Whether the request is a gRPC call: its content type is `application/grpc` or a subtype
/// (`application/grpc+proto`).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status of one of the gateway's own HTTP answers, as the contract maps them (and
/// gRPC's own HTTP-to-gRPC table for the rest).
pub(crate) fn status_code(status: StatusCode) -> u32 {
    match status.as_u16() {
        404 => code::UNIMPLEMENTED,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        413 | 429 => code::RESOURCE_EXHAUSTED,
        502 | 503 => code::UNAVAILABLE,
        408 | 504 => code::DEADLINE_EXCEEDED,
        400 | 426 | 431 => code::INTERNAL,
        _ => code::UNKNOWN,
    }
}

/// The gateway's answer `status` with `message`, in gRPC's form: HTTP 200 and a trailers-only
/// response whose `grpc-status` says what `status` would have.
pub(crate) fn answer(status: StatusCode, message: &str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(STATUS.clone(), HeaderValue::from(status_code(status)));
    if let Ok(message) = HeaderValue::try_from(percent_encode(message)) {
        h.insert(MESSAGE.clone(), message);
    }
    response
}

/// `grpc-message`'s encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `grpc-timeout` value (`TimeoutValue TimeoutUnit`: at most 8 digits, then `H`, `M`, `S`,
/// `m`, `u` or `n`); None when absent or malformed (gRPC's servers ignore such a value too).
pub(crate) fn timeout(value: Option<&HeaderValue>) -> Option<Duration> {
    let value = value?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The `grpc-status` a head or trailers carry, if any.
pub(crate) fn status_of(headers: &HeaderMap) -> Option<u32> {
    std::str::from_utf8(headers.get(&STATUS)?.as_bytes()).ok()?.parse().ok()
}

/// What a call's `grpc-status` says of its target, for passive health checks: UNAVAILABLE and
/// DEADLINE_EXCEEDED count as failures, any other status (or none) as a success.
pub(crate) fn outcome(status: Option<u32>) -> Outcome {
    match status {
        Some(code::UNAVAILABLE | code::DEADLINE_EXCEEDED) => Outcome::HttpFailure,
        _ => Outcome::Success,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_grpc_writes_them() {
        let t = |s: &'static str| timeout(Some(&HeaderValue::from_static(s)));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "100", "100x", "123456789S", "-1S", "1.5S"] {
            assert_eq!(t(bad), None, "{bad}");
        }
        assert_eq!(timeout(None), None);
    }

    #[test]
    fn answers_are_trailers_only_with_the_contracts_codes() {
        let codes: Vec<_> = [404, 401, 403, 429, 502, 503, 504]
            .into_iter()
            .map(|s| status_code(StatusCode::from_u16(s).unwrap()))
            .collect();
        assert_eq!(codes, [12, 16, 7, 8, 14, 14, 4]);
        let a = answer(StatusCode::FORBIDDEN, "not 100% allowed: é");
        assert_eq!(a.status(), StatusCode::OK);
        assert_eq!(a.headers()["grpc-status"], "7");
        assert_eq!(a.headers()["grpc-message"], "not 100%25 allowed: %C3%A9");
        assert_eq!(a.headers()["content-type"], "application/grpc");
        assert!(a.body().is_empty());
        assert_eq!(status_of(a.headers()), Some(7));
    }
}
