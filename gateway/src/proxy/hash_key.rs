//! The key consistent hashing hashes: `hash_on`, else `hash_fallback`, from the request.

use crate::exchange::ClientInfo;
use config_sync::model::{HashOn, Upstream};
use http::request::Parts;
use xxhash_rust::xxh3::xxh3_64;

/// The request's hashed key for `upstream`, or None when neither `hash_on` nor `hash_fallback`
/// yields one (the ring then spreads by slot).
pub fn hash_key(upstream: &Upstream, request: &Parts, client: &ClientInfo) -> Option<u64> {
    let primary = (
        upstream.hash_on,
        upstream.hash_on_header.as_deref(),
        upstream.hash_on_cookie.as_deref(),
        upstream.hash_on_query_arg.as_deref(),
    );
    let fallback = (
        upstream.hash_fallback,
        upstream.hash_fallback_header.as_deref(),
        upstream.hash_fallback_cookie.as_deref(),
        upstream.hash_fallback_query_arg.as_deref(),
    );
    [primary, fallback].into_iter().find_map(|(on, header, cookie, arg)| match on {
        HashOn::None => None,
        HashOn::Ip => Some(match client.peer.ip().to_canonical() {
            std::net::IpAddr::V4(v4) => xxh3_64(&v4.octets()),
            std::net::IpAddr::V6(v6) => xxh3_64(&v6.octets()),
        }),
        HashOn::Header => request.headers.get(header?).map(|v| xxh3_64(v.as_bytes())),
        HashOn::Cookie => cookie_value(request, cookie?).map(|v| xxh3_64(v.as_bytes())),
        HashOn::Path => Some(xxh3_64(request.uri.path().as_bytes())),
        HashOn::QueryArg => query_value(request.uri.query()?, arg?).map(|v| xxh3_64(v.as_bytes())),
    })
}

fn cookie_value<'a>(request: &'a Parts, name: &str) -> Option<&'a str> {
    request
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(json: serde_json::Value) -> Upstream {
        serde_json::from_value(json).unwrap()
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    static CLIENT: std::sync::LazyLock<ClientInfo> =
        std::sync::LazyLock::new(|| ClientInfo::new(([10, 1, 2, 3], 999).into(), 8000));

    #[test]
    fn falls_back_when_the_primary_is_absent() {
        let u = upstream(serde_json::json!({
            "name": "u", "algorithm": "consistent-hashing", "hash_on": "header", "hash_on_header": "x-user",
            "hash_fallback": "query_arg", "hash_fallback_query_arg": "id"
        }));
        let by_header = hash_key(&u, &parts("/?id=7", &[("x-user", "ann")]), &CLIENT);
        let by_arg = hash_key(&u, &parts("/?a=1&id=7", &[]), &CLIENT);
        assert_eq!(by_header, Some(xxh3_64(b"ann")));
        assert_eq!(by_arg, Some(xxh3_64(b"7")));
        assert_eq!(hash_key(&u, &parts("/", &[]), &CLIENT), None);
    }

    #[test]
    fn cookies_ip_and_path() {
        let u = upstream(
            serde_json::json!({"name": "u", "algorithm": "consistent-hashing", "hash_on": "cookie", "hash_on_cookie": "sid", "hash_fallback": "ip"}),
        );
        assert_eq!(hash_key(&u, &parts("/", &[("cookie", "a=1; sid=xyz")]), &CLIENT), Some(xxh3_64(b"xyz")));
        assert_eq!(hash_key(&u, &parts("/", &[]), &CLIENT), Some(xxh3_64(&[10, 1, 2, 3])));
        let p = upstream(serde_json::json!({"name": "u", "algorithm": "consistent-hashing", "hash_on": "path"}));
        assert_eq!(hash_key(&p, &parts("/a/b?q", &[]), &CLIENT), Some(xxh3_64(b"/a/b")));
    }
}
