//! What may be served from the cache and what may be stored in it, as Kong's proxy-cache says,
//! with `Cache-Control` and `Vary` honoured when `cache_control` is on.

use config_sync::model::ProxyCache;
use http::{header, HeaderMap, Method, StatusCode};
use std::time::Duration;

/// What to do with a request, before looking anything up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestRule {
    /// Look it up; on a miss, fetch and maybe store.
    Lookup,
    /// Do not look it up, but store the fresh response (`Cache-Control: no-cache`).
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
        let directives = directives(headers);
        if directives.iter().any(|(d, _)| d == "no-store") {
            return RequestRule::Bypass;
        }
        if directives.iter().any(|(d, _)| d == "no-cache") {
            return RequestRule::Refresh;
        }
    }
    RequestRule::Lookup
}

/// How long a response may be kept, or None when it may not be: its status and content type
/// must be listed; with `cache_control`, `private`, `no-store`, `no-cache` and `Vary: *` forbid
/// it, and `s-maxage` or `max-age` set its life (0: not kept).
pub fn response_ttl(config: &ProxyCache, status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if !config.response_code.contains(&status.as_u16()) {
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
        return Some(config.cache_ttl);
    }
    if vary(headers).iter().any(|h| h == "*") {
        return None;
    }
    let directives = directives(headers);
    if directives.iter().any(|(d, _)| matches!(d.as_str(), "private" | "no-store" | "no-cache")) {
        return None;
    }
    let age =
        |name: &str| directives.iter().find(|(d, _)| d == name).and_then(|(_, v)| v.as_deref()?.parse::<u64>().ok());
    match age("s-maxage").or_else(|| age("max-age")) {
        Some(0) => None,
        Some(seconds) => Some(Duration::from_secs(seconds)),
        None => Some(config.cache_ttl),
    }
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

/// `Cache-Control` directives, lower-cased, with their values.
fn directives(headers: &HeaderMap) -> Vec<(String, Option<String>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            Some(match d.split_once('=') {
                Some((name, value)) => {
                    (name.trim().to_ascii_lowercase(), Some(value.trim().trim_matches('"').to_owned()))
                }
                None => (d.to_ascii_lowercase(), None),
            })
        })
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

    #[test]
    fn responses_by_status_type_and_directives() {
        let mut c = ProxyCache::default();
        let json = headers(&[("content-type", "application/json; charset=utf-8")]);
        assert_eq!(response_ttl(&c, StatusCode::OK, &json), Some(Duration::from_secs(300)));
        assert_eq!(response_ttl(&c, StatusCode::CREATED, &json), None, "201 is not listed");
        assert_eq!(response_ttl(&c, StatusCode::OK, &headers(&[("content-type", "image/png")])), None);
        let private = headers(&[("content-type", "text/plain"), ("cache-control", "private, max-age=60")]);
        assert_eq!(
            response_ttl(&c, StatusCode::OK, &private),
            Some(Duration::from_secs(300)),
            "ignored without cache_control"
        );
        c.cache_control = true;
        assert_eq!(response_ttl(&c, StatusCode::OK, &private), None);
        let aged = headers(&[("content-type", "text/plain"), ("cache-control", "public, max-age=60, s-maxage=30")]);
        assert_eq!(response_ttl(&c, StatusCode::OK, &aged), Some(Duration::from_secs(30)));
        let zero = headers(&[("content-type", "text/plain"), ("cache-control", "max-age=0")]);
        assert_eq!(response_ttl(&c, StatusCode::OK, &zero), None);
        let star = headers(&[("content-type", "text/plain"), ("vary", "*")]);
        assert_eq!(response_ttl(&c, StatusCode::OK, &star), None);
        let varied = headers(&[("vary", "Accept-Encoding, X-Tenant")]);
        assert_eq!(vary_on(&c, &varied), ["accept-encoding", "x-tenant"]);
    }
}
