//! Validation (RFC 9111 §4.3): the conditional request that revalidates a stale entry, the
//! stored response a 304 refreshes, and the client's own conditional answered from the cache.

use super::entry::{now_ms, Entry};
use super::freshness::Exchange;
use super::policy::storage;
use config_sync::model::ProxyCache;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

/// The client's own preconditions: with any of them, its request goes upstream as it is.
const PRECONDITIONS: [HeaderName; 5] =
    [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::IF_MATCH, header::IF_UNMODIFIED_SINCE, header::IF_RANGE];

/// The conditional headers that revalidate a stored response with headers `stored` (RFC 9111
/// §4.3.1): `If-None-Match` with its `ETag`, `If-Modified-Since` with its `Last-Modified`.
/// None when it has no validator, or the client sent preconditions of its own.
pub(crate) fn validators(stored: &HeaderMap, request: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    if PRECONDITIONS.iter().any(|h| request.contains_key(h)) {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(etag) = stored.get(header::ETAG) {
        out.push((header::IF_NONE_MATCH, etag.clone()));
    }
    if let Some(modified) = stored.get(header::LAST_MODIFIED) {
        out.push((header::IF_MODIFIED_SINCE, modified.clone()));
    }
    out
}

/// Whether the client's conditional request is answered 304 by a stored response with headers
/// `stored` (RFC 9110 §13.1.2, §13.1.3: `If-None-Match` by weak comparison, and only without
/// it `If-Modified-Since` against `Last-Modified`).
pub(crate) fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let mut tags = request.get_all(header::IF_NONE_MATCH).iter().peekable();
    if tags.peek().is_some() {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else { return false };
        return tags
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || weak(tag) == weak(etag));
    }
    let date = |headers: &HeaderMap, name| {
        headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| httpdate::parse_http_date(v.trim()).ok())
    };
    match (date(request, header::IF_MODIFIED_SINCE), date(stored, header::LAST_MODIFIED)) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

fn weak(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// The headers a 304 carries of the representation (RFC 9110 §15.4.5).
pub(crate) fn sent_with_304(name: &HeaderName) -> bool {
    [header::CACHE_CONTROL, header::CONTENT_LOCATION, header::DATE, header::ETAG, header::EXPIRES, header::VARY]
        .contains(name)
        || name == header::LAST_MODIFIED
}

/// Header fields a 304 never changes in the stored response (RFC 9111 §3.2: `Content-Length`;
/// and the framing and hop-by-hop fields that describe the 304 itself, not the
/// representation).
fn kept_from_stored(name: &HeaderName) -> bool {
    [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

/// The stored response refreshed by a 304 with `headers` (RFC 9111 §4.3.4, §3.2): each of its
/// fields replaces the stored ones of that name, and freshness and age start again from this
/// exchange. None when the 304 names another representation (a different strong `ETag`).
pub(crate) fn refresh(mut entry: Entry, headers: &HeaderMap, exchange: Exchange, config: &ProxyCache) -> Option<Entry> {
    let stored_etag = entry.headers.iter().find(|(n, _)| n == header::ETAG).map(|(_, v)| v.clone());
    if let (Some(new), Some(old)) = (headers.get(header::ETAG), &stored_etag) {
        if new != old && !new.as_bytes().starts_with(b"W/") {
            return None;
        }
    }
    let mut merged = entry.header_map();
    for name in headers.keys().filter(|n| !kept_from_stored(n)) {
        merged.remove(name);
        for value in headers.get_all(name) {
            merged.append(name.clone(), value.clone());
        }
    }
    entry.headers = merged.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    entry.stored_at_ms = now_ms(exchange.response_time);
    match storage(config, entry.status, &merged, exchange) {
        Some(timing) => {
            entry.ttl_ms = timing.lifetime.as_millis() as u64;
            entry.initial_age_ms = timing.initial_age.as_millis() as u64;
            entry.keep_ms = timing.keep.as_millis() as u64;
        }
        // Served to this client, but no longer stored (the 304 said `no-store`, say).
        None => {
            entry.ttl_ms = 0;
            entry.keep_ms = 0;
        }
    }
    Some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;
    use std::time::{Duration, UNIX_EPOCH};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::try_from(*k).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

    #[test]
    fn conditional_headers_from_the_stored_validators() {
        let stored = headers(&[("etag", "\"v1\""), ("last-modified", MODIFIED)]);
        let v = validators(&stored, &HeaderMap::new());
        assert_eq!(v.len(), 2);
        assert_eq!((&v[0].0, v[0].1.to_str().unwrap()), (&header::IF_NONE_MATCH, "\"v1\""));
        assert_eq!((&v[1].0, v[1].1.to_str().unwrap()), (&header::IF_MODIFIED_SINCE, MODIFIED));
        assert!(validators(&headers(&[("content-type", "text/plain")]), &HeaderMap::new()).is_empty());
        assert!(validators(&stored, &headers(&[("if-match", "\"x\"")])).is_empty(), "the client's own");
    }

    #[test]
    fn client_conditionals_by_weak_etag_then_date() {
        let stored = headers(&[("etag", "W/\"v1\""), ("last-modified", MODIFIED)]);
        assert!(not_modified(&headers(&[("if-none-match", "\"v0\", \"v1\"")]), &stored));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &stored));
        assert!(!not_modified(&headers(&[("if-none-match", "\"v2\"")]), &stored));
        let later = "Thu, 22 Oct 2015 07:28:00 GMT";
        assert!(not_modified(&headers(&[("if-modified-since", later)]), &stored));
        assert!(not_modified(&headers(&[("if-modified-since", MODIFIED)]), &stored));
        assert!(!not_modified(&headers(&[("if-modified-since", "Tue, 20 Oct 2015 07:28:00 GMT")]), &stored));
        assert!(!not_modified(&headers(&[("if-modified-since", "garbage")]), &stored));
        let both = headers(&[("if-none-match", "\"v2\""), ("if-modified-since", later)]);
        assert!(!not_modified(&both, &stored), "If-None-Match decides when present");
        assert!(!not_modified(&HeaderMap::new(), &stored));
    }

    #[test]
    fn a_304_refreshes_headers_and_freshness_but_not_the_length() {
        let config = ProxyCache { cache_control: true, ..Default::default() };
        let entry = Entry {
            status: StatusCode::OK,
            headers: vec![
                (header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
                (header::CONTENT_LENGTH, HeaderValue::from_static("5")),
                (header::CACHE_CONTROL, HeaderValue::from_static("max-age=1")),
                (header::ETAG, HeaderValue::from_static("\"v1\"")),
                (HeaderName::from_static("x-version"), HeaderValue::from_static("1")),
            ],
            body: Bytes::from_static(b"hello"),
            stored_at_ms: 1_000,
            ttl_ms: 1_000,
            initial_age_ms: 500,
            keep_ms: 300_000,
            vary: vec![],
            resource: None,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let exchange = Exchange { request_time: now, response_time: now, authorized: false };
        let not_modified = headers(&[
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("x-version", "2"),
            ("content-length", "0"),
        ]);
        let fresh = refresh(entry.clone(), &not_modified, exchange, &config).unwrap();
        let h = fresh.header_map();
        assert_eq!(h["cache-control"], "max-age=60");
        assert_eq!(h["x-version"], "2");
        assert_eq!(h["content-length"], "5", "RFC 9111 §3.2");
        assert_eq!(h["content-type"], "text/plain", "kept");
        assert_eq!((fresh.ttl_ms, fresh.initial_age_ms, fresh.stored_at_ms), (60_000, 0, 1_000_000));
        assert_eq!(fresh.body, entry.body);
        assert!(fresh.fresh(now + Duration::from_secs(59)));
        let other = headers(&[("etag", "\"v2\"")]);
        assert!(refresh(entry.clone(), &other, exchange, &config).is_none(), "another representation");
        let gone = refresh(entry, &headers(&[("cache-control", "no-store")]), exchange, &config).unwrap();
        assert!(!gone.kept(now), "no longer stored");
    }
}
