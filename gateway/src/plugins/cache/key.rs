//! Cache keys, Kong-like: the route, the method, the host (without its port), the path, the
//! chosen query arguments and request headers, hashed. The same request through any node gives the same key, so an
//! entry cached through one node is a hit on the others.

use config_sync::model::ProxyCache;
use http::{HeaderMap, Method, Uri};

/// The parts of a request a key is made of.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// Its method.
    pub method: &'a Method,
    /// Its URI (the query).
    pub uri: &'a Uri,
    /// Its headers.
    pub headers: &'a HeaderMap,
}
use sha2::{Digest, Sha256};

/// The cache key of a request to `route` (hex SHA-256, 64 characters), by `consumer` when an
/// auth plugin identified one: one consumer's responses are never another's.
pub fn cache_key(
    route: &str,
    config: &ProxyCache,
    request: Request<'_>,
    (host, path): (&str, &str),
    consumer: Option<&str>,
) -> String {
    let mut hash = Sha256::new();
    for part in [route, request.method.as_str(), &without_port(host).to_ascii_lowercase(), path] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    if let Some(consumer) = consumer {
        hash.update([3]);
        hash.update(consumer.as_bytes());
        hash.update([0]);
    }
    hash_arguments(&mut hash, config, request.uri);
    let mut headers: Vec<&String> = config.vary_headers.iter().collect();
    headers.sort_unstable();
    for name in headers {
        hash.update(name.to_ascii_lowercase().as_bytes());
        hash.update([1]);
        for value in request.headers.get_all(name.as_str()) {
            hash.update(value.as_bytes());
            hash.update([2]);
        }
        hash.update([0]);
    }
    hex(&hash.finalize())
}

/// What every key of one resource shares, whatever the method, consumer and varied headers:
/// the route, the host, the path and the chosen query arguments (hex SHA-256). An invalidation
/// drops every entry stored under it.
pub(crate) fn resource_key(route: &str, config: &ProxyCache, uri: &Uri, (host, path): (&str, &str)) -> String {
    let mut hash = Sha256::new();
    hash.update(b"resource\0");
    for part in [route, &without_port(host).to_ascii_lowercase(), path] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash_arguments(&mut hash, config, uri);
    hex(&hash.finalize())
}

/// The host without its port: nodes behind a balancer may each be reached on their own port.
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => name,
        _ => host,
    }
}

/// Query arguments: the ones listed in `vary_query_params`, or all of them; sorted, so that
/// their order in the URL does not matter.
fn hash_arguments(hash: &mut Sha256, config: &ProxyCache, uri: &Uri) {
    let mut args: Vec<(&str, &str)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .filter(|(name, _)| config.vary_query_params.is_empty() || config.vary_query_params.iter().any(|v| v == name))
        .collect();
    args.sort_unstable();
    for (name, value) in args {
        hash.update(name.as_bytes());
        hash.update([1]);
        hash.update(value.as_bytes());
        hash.update([0]);
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn key(config: &ProxyCache, uri: &str, headers: &[(&str, &str)]) -> String {
        key_of(config, uri, headers, None)
    }

    fn key_of(config: &ProxyCache, uri: &str, headers: &[(&str, &str)], consumer: Option<&str>) -> String {
        let p = parts(uri, headers);
        let path = p.uri.path().to_owned();
        let request = Request { method: &p.method, uri: &p.uri, headers: &p.headers };
        cache_key("r", config, request, ("API.example.com", &path), consumer)
    }

    #[test]
    fn each_consumer_has_its_own_keys() {
        let c = ProxyCache::default();
        let (ann, bob) = (key_of(&c, "/a", &[], Some("ann")), key_of(&c, "/a", &[], Some("bob")));
        assert_ne!(ann, bob);
        assert_ne!(ann, key(&c, "/a", &[]));
        assert_eq!(ann, key_of(&c, "/a", &[], Some("ann")));
    }

    #[test]
    fn argument_order_does_not_matter_but_values_do() {
        let c = ProxyCache::default();
        assert_eq!(key(&c, "/a?x=1&y=2", &[]), key(&c, "/a?y=2&x=1", &[]));
        assert_ne!(key(&c, "/a?x=1", &[]), key(&c, "/a?x=2", &[]));
        assert_ne!(key(&c, "/a", &[]), key(&c, "/b", &[]));
        assert_eq!(key(&c, "/a", &[]).len(), 64);
    }

    #[test]
    fn only_listed_arguments_and_headers_count() {
        let c = ProxyCache {
            vary_query_params: vec!["page".into()],
            vary_headers: vec!["Accept-Language".into()],
            ..Default::default()
        };
        assert_eq!(key(&c, "/a?page=1&utm=x", &[]), key(&c, "/a?page=1&utm=y", &[]));
        assert_ne!(key(&c, "/a?page=1", &[]), key(&c, "/a?page=2", &[]));
        assert_ne!(key(&c, "/a", &[("accept-language", "fr")]), key(&c, "/a", &[("accept-language", "de")]));
        assert_eq!(key(&c, "/a", &[("x-other", "1")]), key(&c, "/a", &[("x-other", "2")]));
    }

    #[test]
    fn a_resource_is_the_same_for_every_method_consumer_and_varied_header() {
        let c = ProxyCache { vary_headers: vec!["accept-language".into()], ..Default::default() };
        let resource = |uri: &str, host: &str| {
            let uri: Uri = uri.parse().unwrap();
            let path = uri.path().to_owned();
            resource_key("r", &c, &uri, (host, &path))
        };
        assert_eq!(resource("/a?x=1&y=2", "api.example.com"), resource("/a?y=2&x=1", "API.example.com:8000"));
        assert_ne!(resource("/a?x=1", "api.example.com"), resource("/a?x=2", "api.example.com"));
        assert_ne!(resource("/a", "api.example.com"), key(&c, "/a", &[]), "not a cache key");
    }
}
