//! What may be served from the cache and what may be stored in it, as Kong's proxy-cache says,
//! with `Cache-Control` and `Vary` honoured when `cache_control` is on.

use super::freshness::{self, Exchange, Timing};
use config_sync::model::ProxyCache;
use http::{header, HeaderMap, Method, StatusCode};
use std::time::Duration;

/// What to do with a request, before looking anything up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestRule {
    /// Look it up; on a miss, fetch and maybe store.
    Lookup,
    /// The client asked for a validated answer (`Cache-Control: no-cache`): without
    /// `cache_control` never looked up; with it, served only when fresh and `immutable`, else
    /// revalidated or fetched; the response may be stored.
    Refresh,
    /// Neither look up nor store.
    Bypass,
}

/// How the cache treats `method` with `headers`.
pub fn request_rule(config: &ProxyCache, method: &Method, headers: &HeaderMap) -> RequestRule {
    if !config.request_method.iter().any(|m| m == method.as_str()) {
        return RequestRule::Bypass;
    }
    if config.cache_control {
        let directives = freshness::Directives::of(headers, &header::CACHE_CONTROL);
        if directives.no_store {
            return RequestRule::Bypass;
        }
        if directives.no_cache {
            return RequestRule::Refresh;
        }
    }
    RequestRule::Lookup
}

/// How a response may be stored, or None when it may not: its status and content type must be
/// listed; without `cache_control` it lives `cache_ttl` (Kong); with it, RFC 9111 decides
/// ([`freshness::timing`]), `cache_ttl` capping heuristic freshness and keeping stale entries
/// that have a validator for revalidation.
pub(crate) fn storage(
    config: &ProxyCache,
    status: StatusCode,
    headers: &HeaderMap,
    exchange: Exchange,
) -> Option<Timing> {
    // A part is never stored: it would be served as the whole.
    if !config.response_code.contains(&status.as_u16()) || status == StatusCode::PARTIAL_CONTENT {
        return None;
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !config
        .content_type
        .iter()
        .any(|t| t.eq_ignore_ascii_case(media_type) || t.eq_ignore_ascii_case(content_type.trim()))
    {
        return None;
    }
    if !config.cache_control {
        return Some(Timing { lifetime: config.cache_ttl, initial_age: Duration::ZERO, keep: Duration::ZERO });
    }
    freshness::timing(status, headers, exchange, (config.cache_ttl, config.cache_ttl), config.cdn_cache_control)
}

/// The request headers a response varies on (lower case), from its `Vary` (only with
/// `cache_control`: without it `Vary` is not honoured, as Kong).
pub fn vary_on(config: &ProxyCache, headers: &HeaderMap) -> Vec<String> {
    if config.cache_control {
        vary(headers)
    } else {
        Vec::new()
    }
}

fn vary(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::try_from(*k).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn methods_and_request_directives() {
        let mut c = ProxyCache::default();
        assert_eq!(request_rule(&c, &Method::GET, &HeaderMap::new()), RequestRule::Lookup);
        assert_eq!(request_rule(&c, &Method::POST, &HeaderMap::new()), RequestRule::Bypass);
        let no_cache = headers(&[("cache-control", "no-cache")]);
        assert_eq!(request_rule(&c, &Method::GET, &no_cache), RequestRule::Lookup, "ignored without cache_control");
        c.cache_control = true;
        assert_eq!(request_rule(&c, &Method::GET, &no_cache), RequestRule::Refresh);
        assert_eq!(request_rule(&c, &Method::GET, &headers(&[("cache-control", "no-store")])), RequestRule::Bypass);
    }

    fn ttl(c: &ProxyCache, status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
        let now = std::time::SystemTime::now();
        let exchange = Exchange { request_time: now, response_time: now, authorized: false };
        storage(c, status, headers, exchange).map(|t| t.lifetime)
    }

    #[test]
    fn responses_by_status_type_and_directives() {
        let mut c = ProxyCache::default();
        let json = headers(&[("content-type", "application/json; charset=utf-8")]);
        assert_eq!(ttl(&c, StatusCode::OK, &json), Some(Duration::from_secs(300)));
        assert_eq!(ttl(&c, StatusCode::CREATED, &json), None, "201 is not listed");
        let parts = ProxyCache { response_code: vec![200, 206], ..Default::default() };
        assert_eq!(ttl(&parts, StatusCode::PARTIAL_CONTENT, &json), None, "206 never, even listed");
        assert_eq!(ttl(&c, StatusCode::OK, &headers(&[("content-type", "image/png")])), None);
        let private = headers(&[("content-type", "text/plain"), ("cache-control", "private, max-age=60")]);
        assert_eq!(ttl(&c, StatusCode::OK, &private), Some(Duration::from_secs(300)), "ignored without cache_control");
        c.cache_control = true;
        assert_eq!(ttl(&c, StatusCode::OK, &private), None);
        let aged = headers(&[("content-type", "text/plain"), ("cache-control", "public, max-age=60, s-maxage=30")]);
        assert_eq!(ttl(&c, StatusCode::OK, &aged), Some(Duration::from_secs(30)));
        let zero = headers(&[("content-type", "text/plain"), ("cache-control", "max-age=0")]);
        assert_eq!(ttl(&c, StatusCode::OK, &zero), None, "stale at once and nothing to revalidate with");
        let plain = headers(&[("content-type", "text/plain")]);
        assert_eq!(ttl(&c, StatusCode::OK, &plain), None, "no explicit nor heuristic freshness");
        let star = headers(&[("content-type", "text/plain"), ("vary", "*")]);
        assert_eq!(ttl(&c, StatusCode::OK, &star), None);
        let varied = headers(&[("vary", "Accept-Encoding, X-Tenant")]);
        assert_eq!(vary_on(&c, &varied), ["accept-encoding", "x-tenant"]);
    }
}
