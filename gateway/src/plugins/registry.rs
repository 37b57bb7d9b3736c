//! The registry: every plugin's place in the order, and how its config becomes a running plugin.
//!
//! The order is the contract's, Kong's where Kong has the plugin: identification first, then
//! what may refuse the request, then what changes it, then the cache, then logging. Config is
//! checked by `config_sync` before it gets here ([`PluginConfig`] holds only valid configs), so
//! building a plugin cannot fail.

use super::auth::{Acl, BasicAuth, Consumers, Jwt, KeyAuth};
use super::cache::{CachePlugin, Caches};
use super::correlation_id::CorrelationId;
use super::cors::Cors;
use super::http_log::{HttpLogPlugin, HttpLogs};
use super::ip_restriction::IpRestriction;
use super::pipeline::{Chain, Link, Plugin};
use super::rate_limit::{Limiters, Members, RateLimit};
use super::request_size_limiting::RequestSizeLimiting;
use super::traffic_split::TrafficSplit;
use super::transformer::{RequestTransformer, ResponseTransformer};
use config_sync::model::{PluginConfig, Plugins};
use std::sync::Arc;

/// Every plugin name in the order plugins run, with its priority (higher runs first, as
/// Kong's). Names not yet built are listed so that the order is fixed once for all.
pub(crate) const ORDER: [(&str, u32); 14] = [
    ("correlation-id", 100_001),
    ("ip-restriction", 3_000),
    ("cors", 2_000),
    ("jwt", 1_450),
    ("key-auth", 1_250),
    ("basic-auth", 1_100),
    ("acl", 950),
    ("rate-limiting", 910),
    ("request-size-limiting", 905),
    ("request-transformer", 801),
    ("traffic-split", 800),
    ("proxy-cache", 100),
    ("response-transformer", 90),
    ("http-log", 12),
];

/// A plugin's position in [`ORDER`].
pub(crate) fn position(name: &str) -> u8 {
    let found = ORDER.iter().position(|(n, _)| *n == name);
    // Every name config_sync accepts is listed; a test checks it.
    found.expect("every known plugin has a place in the order") as u8
}

/// What plugins share across snapshots: the stores they count and cache in, and the cluster.
pub struct Shared {
    /// Rate-limit stores.
    pub limiters: Arc<Limiters>,
    /// Cache stores.
    pub caches: Arc<Caches>,
    /// The cluster's members, once gossip has started.
    pub members: Arc<Members>,
    /// `http-log` queues, one per config in use.
    pub http_logs: Arc<HttpLogs>,
}

impl Shared {
    /// Plugins' shared parts, before gossip has started; `http-log` queues count what they
    /// send and drop in a set of counters of their own ([`HttpLogs::counters`]).
    pub fn new(limiters: Arc<Limiters>, caches: Arc<Caches>) -> Shared {
        let http_logs = Arc::new(HttpLogs::new(Arc::default()));
        Shared { limiters, caches, members: Arc::default(), http_logs }
    }

    /// Stores in this node's memory alone, as on a node without Redis.
    #[cfg(test)]
    pub(crate) fn in_memory() -> Arc<Shared> {
        let caches = Caches::new(1 << 20, 0, None, std::time::Duration::from_secs(1));
        Arc::new(Shared::new(Arc::new(Limiters::new(None)), Arc::new(caches)))
    }
}

/// Where a config was set: it decides whose counters a rate limit uses.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope<'a> {
    Consumer(&'a str),
    Route(&'a str),
    Service(&'a str),
    Global,
}

impl std::fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Consumer(name) => write!(f, "consumer:{name}"),
            Scope::Route(name) => write!(f, "route:{name}"),
            Scope::Service(name) => write!(f, "service:{name}"),
            Scope::Global => f.write_str("global"),
        }
    }
}

/// Builds plugins for one snapshot.
pub(crate) struct Builder<'a> {
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) consumers: &'a Arc<Consumers>,
}

impl Builder<'_> {
    /// The running plugin for `config`, set at `scope`.
    pub(crate) fn build(&self, config: &PluginConfig, scope: Scope<'_>) -> Arc<dyn Plugin> {
        let consumers = || self.consumers.clone();
        match config {
            PluginConfig::KeyAuth(c) => Arc::new(KeyAuth::new(c, consumers())),
            PluginConfig::BasicAuth(c) => Arc::new(BasicAuth::new(c, consumers())),
            PluginConfig::Jwt(c) => Arc::new(Jwt::new(c, consumers())),
            PluginConfig::Acl(c) => Arc::new(Acl::new(c)),
            PluginConfig::RateLimiting(c) => {
                let shared = self.shared.clone();
                Arc::new(RateLimit::new(c, &scope.to_string(), shared.limiters.clone(), shared.members.clone()))
            }
            PluginConfig::ProxyCache(c) => {
                Arc::new(CachePlugin::new(c, self.shared.caches.clone(), self.shared.limiters.clone()))
            }
            PluginConfig::Cors(c) => Arc::new(Cors::new(c)),
            PluginConfig::IpRestriction(c) => Arc::new(IpRestriction::new(c)),
            PluginConfig::CorrelationId(c) => Arc::new(CorrelationId::new(c)),
            PluginConfig::RequestSizeLimiting(c) => Arc::new(RequestSizeLimiting::new(c)),
            PluginConfig::HttpLog(c) => Arc::new(HttpLogPlugin::new(c, &self.shared.http_logs)),
            PluginConfig::TrafficSplit(c) => Arc::new(TrafficSplit::new(c)),
            PluginConfig::RequestTransformer(c) => Arc::new(RequestTransformer::new(c)),
            PluginConfig::ResponseTransformer(c) => Arc::new(ResponseTransformer::new(c)),
        }
    }

    /// The chain of a route: for each plugin name, the route's config, else its service's,
    /// else the global one.
    pub(crate) fn route_chain(&self, route: (&str, &Plugins), service: (&str, &Plugins), global: &Plugins) -> Chain {
        let mut links = Vec::new();
        for name in PluginConfig::NAMES {
            let set =
                [(route.1, Scope::Route(route.0)), (service.1, Scope::Service(service.0)), (global, Scope::Global)];
            if let Some((config, scope)) = set.into_iter().find_map(|(p, scope)| Some((p.get(name)?, scope))) {
                links.push(Link { position: position(name), name: config.name(), plugin: self.build(config, scope) });
            }
        }
        Chain::new(links)
    }

    /// The chain of a consumer's own configs.
    pub(crate) fn consumer_chain(&self, username: &str, plugins: &Plugins) -> Chain {
        let link = |c: &PluginConfig| Link {
            position: position(c.name()),
            name: c.name(),
            plugin: self.build(c, Scope::Consumer(username)),
        };
        let links = plugins.iter().map(link).collect();
        Chain::new(links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_plugin_has_a_place_and_the_order_is_by_priority() {
        for name in PluginConfig::NAMES {
            position(name);
        }
        assert!(ORDER.windows(2).all(|pair| pair[0].1 > pair[1].1), "priorities fall along the order");
    }
}
