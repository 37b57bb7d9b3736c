//! Range requests answered from a stored full response (RFC 9110 §14): one satisfiable byte
//! range is a 206 with its `Content-Range`, a range wholly past the end a 416. The whole
//! response is served instead for a `Range` that does not parse (§14.2: ignored), for several
//! ranges (a server may ignore them rather than build a multipart body), and for an `If-Range`
//! that no longer names the stored response (§13.1.5). A stored 206 is never kept at all, so it
//! is never served as a whole.

use http::{header, HeaderMap, Method};
use http_range_header::RangeUnsatisfiableError;
use std::ops::RangeInclusive;

/// What of a stored response a request gets.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Whole,
    Range(RangeInclusive<u64>),
    Unsatisfiable,
}

/// The part of a stored 200 with `stored` headers and a body of `len` bytes that `request`
/// asks for.
pub(crate) fn part(method: &Method, request: &HeaderMap, stored: &HeaderMap, len: u64) -> Part {
    if method != Method::GET {
        return Part::Whole;
    }
    let Some(range) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Part::Whole };
    if !if_range_holds(request, stored) {
        return Part::Whole;
    }
    let Ok(parsed) = http_range_header::parse_range_header(range) else { return Part::Whole };
    match parsed.validate(len) {
        Ok(ranges) if ranges.len() == 1 => Part::Range(ranges[0].clone()),
        Err(RangeUnsatisfiableError::Unsatisfiable) => Part::Unsatisfiable,
        // Several ranges, overlapping ones, or an empty body: the whole response.
        Ok(_) | Err(_) => Part::Whole,
    }
}

/// Whether the request's `If-Range` (if any) names the stored response: its strong entity tag,
/// or its `Last-Modified` date exactly.
fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(condition) = request.get(header::IF_RANGE) else { return true };
    let condition = condition.as_bytes();
    if condition.starts_with(b"\"") || condition.starts_with(b"W/") {
        let strong = |tag: &[u8]| tag.starts_with(b"\"");
        return stored.get(header::ETAG).is_some_and(|etag| strong(condition) && etag.as_bytes() == condition);
    }
    let date = |value: &[u8]| httpdate::parse_http_date(std::str::from_utf8(value).ok()?).ok();
    match (date(condition), stored.get(header::LAST_MODIFIED).and_then(|v| date(v.as_bytes()))) {
        (Some(asked), Some(modified)) => asked == modified,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(n, v)| (n.parse().unwrap(), v.parse().unwrap())).collect()
    }

    #[test]
    fn one_range_several_and_past_the_end() {
        let stored = HeaderMap::new();
        let ask = |range: &str| part(&Method::GET, &headers(&[("range", range)]), &stored, 100);
        assert_eq!(ask("bytes=0-9"), Part::Range(0..=9));
        assert_eq!(ask("bytes=90-"), Part::Range(90..=99));
        assert_eq!(ask("bytes=-5"), Part::Range(95..=99));
        assert_eq!(ask("bytes=50-500"), Part::Range(50..=99), "clamped to the end");
        assert_eq!(ask("bytes=100-"), Part::Unsatisfiable);
        assert_eq!(ask("bytes=0-1,5-6"), Part::Whole, "several ranges: the whole");
        assert_eq!(ask("bytes=9-1"), Part::Whole, "invalid: ignored");
        assert_eq!(ask("pages=1-2"), Part::Whole, "another unit: ignored");
        let head = part(&Method::HEAD, &headers(&[("range", "bytes=0-9")]), &stored, 100);
        assert_eq!(head, Part::Whole);
    }

    #[test]
    fn if_range_by_strong_tag_or_exact_date() {
        let stored = headers(&[("etag", "\"v1\""), ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT")]);
        let ask = |if_range: &str| {
            part(&Method::GET, &headers(&[("range", "bytes=0-9"), ("if-range", if_range)]), &stored, 100)
        };
        assert_eq!(ask("\"v1\""), Part::Range(0..=9));
        assert_eq!(ask("\"v2\""), Part::Whole);
        assert_eq!(ask("W/\"v1\""), Part::Whole, "a weak tag never matches");
        assert_eq!(ask("Tue, 01 Dec 2026 10:00:00 GMT"), Part::Range(0..=9));
        assert_eq!(ask("Tue, 01 Dec 2026 09:00:00 GMT"), Part::Whole);
        assert_eq!(ask("not a date"), Part::Whole);
    }
}
