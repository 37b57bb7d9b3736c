//! Invalidation (RFC 9111 §4.4): a successful unsafe request drops the entries of its target
//! URI and of the same-origin URIs in its response's `Location` and `Content-Location`, whatever
//! their method, consumer or varied headers (every key is stored under its resource), in Redis
//! and in the memory of every node (by gossip).

use super::key::resource_key;
use super::store::Caches;
use config_sync::model::ProxyCache;
use http::{header, HeaderMap, Uri};
use std::sync::Arc;

/// What an unsafe request may invalidate, taken before it is forwarded.
pub(crate) struct Target {
    route: String,
    uri: Uri,
    host: String,
    path: String,
}

impl Target {
    pub(crate) fn new(route: &str, uri: &Uri, host: &str, path: &str) -> Target {
        Target { route: route.to_owned(), uri: uri.clone(), host: host.to_owned(), path: path.to_owned() }
    }

    /// The resources a success with response headers `response` invalidates.
    pub(crate) fn resources(&self, config: &ProxyCache, response: &HeaderMap) -> Vec<String> {
        let mut resources = vec![resource_key(&self.route, config, &self.uri, (&self.host, &self.path))];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(uri) = response.get(&name).and_then(|v| v.to_str().ok()?.parse::<Uri>().ok()) else { continue };
            if self.same_origin(&uri) && uri.path().starts_with('/') {
                resources.push(resource_key(&self.route, config, &uri, (&self.host, uri.path())));
            }
        }
        resources.dedup();
        resources
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

    /// Drops the resources, in the background: the response is not held up.
    pub(crate) fn invalidate(self, caches: &Arc<Caches>, config: &ProxyCache, response: &HeaderMap) {
        let resources = self.resources(config, response);
        let caches = caches.clone();
        tokio::spawn(async move {
            for resource in resources {
                if let Err(e) = caches.invalidate(&resource).await {
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
        let path = uri.path().to_owned();
        Target::new("r", &uri, "api.example.com:8000", &path)
    }

    fn resource(uri: &str) -> String {
        let uri: Uri = uri.parse().unwrap();
        let path = uri.path().to_owned();
        resource_key("r", &ProxyCache::default(), &uri, ("api.example.com", &path))
    }

    #[test]
    fn the_target_and_same_origin_locations() {
        let config = ProxyCache::default();
        let mut response = HeaderMap::new();
        response.insert(header::LOCATION, "/items/7".parse().unwrap());
        response.insert(header::CONTENT_LOCATION, "http://API.example.com/items/7?v=2".parse().unwrap());
        let resources = target("/items?x=1").resources(&config, &response);
        assert_eq!(resources, [resource("/items?x=1"), resource("/items/7"), resource("/items/7?v=2")]);
        response.insert(header::LOCATION, "https://elsewhere.example/items/7".parse().unwrap());
        response.remove(header::CONTENT_LOCATION);
        assert_eq!(target("/items").resources(&config, &response).len(), 1, "another origin is not touched");
    }
}
