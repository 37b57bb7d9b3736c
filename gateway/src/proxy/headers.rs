//! Header rewriting between client and upstream: hop-by-hop headers removed (RFC 9110 §7.6.1,
//! and whatever `Connection` names), `X-Forwarded-*` and `Via` set.

use crate::exchange::ClientInfo;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

/// Headers that describe one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those `Connection` lists. `Upgrade` is removed too
/// unless `keep_upgrade`, in which case `Connection: upgrade` is put back.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One look at each name finds the few to remove, where removing every hop-by-hop name
    // blindly would hash and probe ten times per message. Kept on the stack: nearly every
    // response has some (`Connection: keep-alive`), and an allocation would cost more.
    let mut doomed: SmallVec<[HeaderName; 4]> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name) || (!keep_upgrade && name == &header::UPGRADE))
        .cloned()
        .collect();
    if doomed.contains(&header::CONNECTION) {
        let listed = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .filter(|name| !(keep_upgrade && name == header::UPGRADE));
        doomed.extend(listed);
    }
    // A message with both has its length from Transfer-Encoding, which is about to go: its
    // Content-Length is wrong and must not be passed on (RFC 9112 §6.3).
    if doomed.contains(&header::TRANSFER_ENCODING) {
        doomed.push(header::CONTENT_LENGTH);
    }
    for name in &doomed {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether the client says it takes trailers (`TE: trailers`).
pub fn takes_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// Whether the client asks to switch protocols (WebSocket and the like) over HTTP/1.1.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PATH: HeaderName = HeaderName::from_static("x-forwarded-path");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Sets `X-Forwarded-For` (the address that connected appended to what it sent, else the
/// client, as Kong), `-Proto`, `-Host` (without its port, as Kong), `-Port` (the port the client
/// connected to) and `X-Real-IP` (the client, found behind trusted proxies).
pub fn set_forwarded(headers: &mut HeaderMap, client: &ClientInfo, original_host: Option<&str>) {
    // Room for these and the few set after them, so the map grows once at most.
    headers.reserve(10);
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => {
            let connected = client.connected_value().to_str().expect("made from an IP address");
            HeaderValue::try_from(format!("{prior}, {connected}")).ok()
        }
        _ => Some(client.ip_value().clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_REAL_IP.clone(), client.ip_value().clone());
    headers.insert(X_FORWARDED_PROTO.clone(), client.scheme_value());
    match original_host.map(without_port).and_then(|h| HeaderValue::from_str(h).ok()) {
        Some(v) => headers.insert(X_FORWARDED_HOST.clone(), v),
        None => headers.remove(&X_FORWARDED_HOST),
    };
    headers.insert(X_FORWARDED_PORT.clone(), client.port_value().clone());
}

/// `X-Forwarded-Path` (the request's path) and, when the route stripped part of it,
/// `X-Forwarded-Prefix` (the part stripped), so upstreams can build links that work through the
/// gateway.
pub struct ForwardedPath {
    path: Option<HeaderValue>,
    prefix: Option<HeaderValue>,
}

impl ForwardedPath {
    /// The headers for a request to `path` of which the route stripped `stripped`.
    pub fn new(path: &str, stripped: &str) -> ForwardedPath {
        ForwardedPath {
            path: HeaderValue::from_str(path).ok(),
            prefix: Some(stripped.trim_end_matches('/'))
                .filter(|s| !s.is_empty())
                .and_then(|s| HeaderValue::from_str(s).ok()),
        }
    }

    /// Sets them, replacing whatever the client sent.
    pub fn apply(self, headers: &mut HeaderMap) {
        match self.path {
            Some(v) => headers.insert(X_FORWARDED_PATH.clone(), v),
            None => headers.remove(&X_FORWARDED_PATH),
        };
        match self.prefix {
            Some(v) => headers.insert(X_FORWARDED_PREFIX.clone(), v),
            None => headers.remove(&X_FORWARDED_PREFIX),
        };
    }
}

/// Joins the `cookie` fields an HTTP/2 client sends one per cookie into the single field
/// HTTP/1.1 servers expect (RFC 9113 §8.2.3).
pub fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
    if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, v);
    }
}

/// `host` without a `:port` (IPv6 literals keep their brackets).
pub(crate) fn without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

/// Appends this node to `Via` (`1.1 <via>`), keeping what earlier proxies wrote.
pub fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    match headers.get(header::VIA).map(|v| v.as_bytes()) {
        Some(prior) if !prior.is_empty() => {
            let mut joined = Vec::with_capacity(prior.len() + 2 + via.len());
            joined.extend_from_slice(prior);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(via.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                headers.insert(header::VIA, v);
            }
        }
        _ => {
            headers.insert(header::VIA, via.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn transfer_encoding_wins_over_content_length() {
        let mut h = HeaderMap::new();
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        remove_hop_by_hop(&mut h, false);
        assert!(h.is_empty());
    }

    #[test]
    fn h2_cookies_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2"]);
    }

    #[test]
    fn forwarded_path_and_prefix() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-prefix", HeaderValue::from_static("/forged"));
        ForwardedPath::new("/orders/1", "/orders").apply(&mut h);
        assert_eq!(h["x-forwarded-path"], "/orders/1");
        assert_eq!(h["x-forwarded-prefix"], "/orders");
        ForwardedPath::new("/orders/", "/orders/").apply(&mut h);
        assert_eq!(h["x-forwarded-prefix"], "/orders");
        ForwardedPath::new("/keep", "/").apply(&mut h);
        assert!(!h.contains_key("x-forwarded-prefix"));
    }

    #[test]
    fn upgrades_keep_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn forwarded_headers_append_the_client() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        let client = ClientInfo::new("[::ffff:10.0.0.9]:5555".parse().unwrap(), 8000);
        set_forwarded(&mut h, &client, Some("api.example.com"));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4, 10.0.0.9"));
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-real-ip"], "10.0.0.9");
        set_forwarded(&mut h, &client, Some("[::1]:8443"));
        assert_eq!(h["x-forwarded-host"], "[::1]");
        set_forwarded(&mut h, &client, Some("example.com:8000"));
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["x-forwarded-port"], "8000");
        let via = HeaderValue::from_static("1.1 gw");
        h.insert(header::VIA, HeaderValue::from_static("1.0 edge"));
        append_via(&mut h, &via);
        assert_eq!(h[header::VIA], "1.0 edge, 1.1 gw");
    }

    #[test]
    fn behind_a_trusted_proxy_xff_appends_the_proxy_and_x_real_ip_is_the_client() {
        let proxy = ClientInfo::new("10.0.0.2:5555".parse().unwrap(), 8000);
        let client = proxy.behind_proxy("203.0.113.7:0".parse().unwrap());
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        set_forwarded(&mut h, &client, None);
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.0.0.2");
        assert_eq!(h["x-real-ip"], "203.0.113.7");
        assert_eq!(h["x-forwarded-port"], "8000");
        // Named by another header (`real_ip_header`), with no X-Forwarded-For: the client.
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &client, None);
        assert_eq!(h["x-forwarded-for"], "203.0.113.7");
    }
}
