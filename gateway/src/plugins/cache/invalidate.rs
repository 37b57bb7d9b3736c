//! Invalidation (RFC 9111 §4.4): a successful unsafe request drops the entries of its target
//! URI and of the same-origin URIs in its response's `Location` and `Content-Location`, in
//! Redis and in the memory of every node (the cluster-wide purge).

use super::key::{cache_key, Request};
use super::store::Caches;
use config_sync::model::ProxyCache;
use http::{header, HeaderMap, Method, Uri};
use std::sync::Arc;

/// What an unsafe request may invalidate, taken before it is forwarded.
pub(crate) struct Target {
    route: String,
    uri: Uri,
    headers: HeaderMap,
    host: String,
    path: String,
    consumer: Option<String>,
}

impl Target {
    pub(crate) fn new(route: &str, request: Request<'_>, host: &str, path: &str, consumer: Option<&str>) -> Target {
        Target {
            route: route.to_owned(),
            uri: request.uri.clone(),
            headers: request.headers.clone(),
            host: host.to_owned(),
            path: path.to_owned(),
            consumer: consumer.map(str::to_owned),
        }
    }

    /// The keys a success with response headers `response` invalidates: a GET and a HEAD of
    /// each URI.
    pub(crate) fn keys(&self, config: &ProxyCache, response: &HeaderMap) -> Vec<String> {
        let mut uris = vec![(self.uri.clone(), self.path.clone())];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(uri) = response.get(&name).and_then(|v| v.to_str().ok()?.parse::<Uri>().ok()) else { continue };
            if self.same_origin(&uri) && uri.path().starts_with('/') {
                let path = uri.path().to_owned();
                uris.push((uri, path));
            }
        }
        let mut keys = Vec::new();
        for (uri, path) in &uris {
            for method in [Method::GET, Method::HEAD] {
                let request = Request { method: &method, uri, headers: &self.headers };
                keys.push(cache_key(&self.route, config, request, (&self.host, path), self.consumer.as_deref()));
            }
        }
        keys.dedup();
        keys
    }

    /// A relative reference, or an absolute one to the request's host (the port aside, as in
    /// the cache key).
    fn same_origin(&self, uri: &Uri) -> bool {
        match uri.host() {
            None => uri.scheme().is_none(),
            Some(host) => {
                let own = self.host.rsplit_once(':').map_or(self.host.as_str(), |(name, _)| name);
                host.eq_ignore_ascii_case(own)
            }
        }
    }

    /// Drops the keys, in the background: the response is not held up.
    pub(crate) fn invalidate(self, caches: &Arc<Caches>, config: &ProxyCache, response: &HeaderMap) {
        let keys = self.keys(config, response);
        let caches = caches.clone();
        tokio::spawn(async move {
            for key in keys {
                if let Err(e) = caches.invalidate(&key).await {
                    tracing::debug!(error = %e, "cache invalidation not done in redis");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Target {
        let uri: Uri = uri.parse().unwrap();
        let headers = HeaderMap::new();
        let path = uri.path().to_owned();
        let request = Request { method: &Method::PUT, uri: &uri, headers: &headers };
        Target::new("r", request, "api.example.com:8000", &path, None)
    }

    fn key(uri: &str, method: Method) -> String {
        let uri: Uri = uri.parse().unwrap();
        let headers = HeaderMap::new();
        let path = uri.path().to_owned();
        let request = Request { method: &method, uri: &uri, headers: &headers };
        cache_key("r", &ProxyCache::default(), request, ("api.example.com", &path), None)
    }

    #[test]
    fn the_target_and_same_origin_locations() {
        let config = ProxyCache::default();
        let mut response = HeaderMap::new();
        response.insert(header::LOCATION, "/items/7".parse().unwrap());
        response.insert(header::CONTENT_LOCATION, "http://API.example.com/items/7?v=2".parse().unwrap());
        let keys = target("/items?x=1").keys(&config, &response);
        for (uri, method) in [
            ("/items?x=1", Method::GET),
            ("/items?x=1", Method::HEAD),
            ("/items/7", Method::GET),
            ("/items/7?v=2", Method::HEAD),
        ] {
            assert!(keys.contains(&key(uri, method.clone())), "{method} {uri}");
        }
        assert_eq!(keys.len(), 6);
        response.insert(header::LOCATION, "https://elsewhere.example/items/7".parse().unwrap());
        response.remove(header::CONTENT_LOCATION);
        assert_eq!(target("/items").keys(&config, &response).len(), 2, "another origin is not touched");
    }
}
