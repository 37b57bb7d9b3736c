//! What a node serves: a config snapshot compiled for the request path (the router, each
//! route's service and plugins, each upstream's balancer), and the cell that holds it.
//!
//! A new `Runtime` is built aside from a snapshot and swapped in whole; a request loads one
//! `Arc<Runtime>` and uses it to its end, so it never sees half of two configs. Balancer state
//! (in-flight counts, latency estimates) carries over to the next runtime for every upstream
//! whose config and targets did not change.

use crate::balance::tiers::Tiers;
use crate::balance::TargetSpec;
use crate::health::{Outcome, Policy, Registry, State, TargetHealth, Watched};
use crate::plugins::auth::Consumers;
use crate::plugins::pipeline::Chain;
use crate::plugins::registry::{Builder, Shared};
use crate::router::{RouteSpec, Router, Schemes};
use crate::telemetry::{Name, RouteMetrics};
use crate::tls::{Certificates, UpstreamTls};
use arc_swap::ArcSwap;
use config_sync::model::{Protocol, Route, Service, Upstream};
use config_sync::{EntityRef, Snapshot};
use http::{HeaderName, HeaderValue, Method};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// A snapshot compiled for serving.
pub struct Runtime {
    /// The snapshot this was compiled from.
    pub snapshot: Arc<Snapshot>,
    /// When it was swapped in.
    pub applied_at: SystemTime,
    /// Matches requests to [`Runtime::routes`] indexes.
    pub router: Router,
    /// Routes by the index the router reports.
    pub routes: Vec<RouteEntry>,
    /// Upstreams by name.
    pub upstreams: HashMap<String, Arc<UpstreamState>>,
}

/// A route with everything the proxy needs to serve it.
pub struct RouteEntry {
    /// The route as configured.
    pub route: Route,
    /// Its service.
    pub service: Arc<ServiceEntry>,
    /// The plugins it runs: for each name, the route's config, else its service's, else the
    /// global one.
    pub(crate) plugins: Chain,
    /// The route's name, as metrics and traces label it.
    pub name: Name,
    /// Its service's name, likewise.
    pub service_name: Name,
    /// Its metric handles, made by its first request.
    pub metrics: OnceLock<Arc<RouteMetrics>>,
}

/// A service with its destination resolved.
pub struct ServiceEntry {
    /// The service as configured.
    pub service: Service,
    /// Where its requests go.
    pub destination: Destination,
    /// Its `fallback_upstream`: where they go while the destination's upstream has no healthy
    /// target.
    pub fallback: Option<Arc<UpstreamState>>,
    /// The url's path, prepended to upstream request paths (no trailing `/`).
    pub path: String,
    /// How its connections speak TLS (`https://` services).
    pub tls: Option<Arc<UpstreamTls>>,
    /// Whether its targets are spoken to over HTTP/2.
    pub http2: Http2,
}

/// Which HTTP a service speaks to its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http2 {
    /// HTTP/1.1.
    No,
    /// HTTP/2 (`http2: true`), for any client.
    Yes,
    /// HTTP/2 to a gRPC service (`grpc(s)://`): HTTP/1 clients are refused.
    Grpc,
}

/// Where a service's requests go.
pub enum Destination {
    /// Balanced over an upstream's targets.
    Upstream(Arc<UpstreamState>),
    /// One literal `host:port`.
    Address(TargetEntry),
}

/// An upstream's targets and balancer.
pub struct UpstreamState {
    /// The upstream as configured.
    pub upstream: Upstream,
    /// Its targets, the primary ones then the backups, each in `host:port` order; balancer
    /// indexes point into it.
    pub targets: Vec<TargetEntry>,
    /// The balancers of its primary and backup targets, shared by every request to it.
    pub(crate) balancer: Mutex<Tiers>,
    /// Each target's health on this node, by the same index as `targets`.
    pub health: Vec<Arc<TargetHealth>>,
    /// The compiled `healthchecks`.
    pub policy: Policy,
    /// Its requests and retries in flight on this node, against its `retry_budget`.
    pub(crate) budget: Arc<crate::balance::budget::Budget>,
    /// What the balancer was built from, to tell whether the next snapshot changed it.
    fingerprint: String,
}

impl UpstreamState {
    /// This node's view of the upstream's targets: state and counters (Kong's
    /// `/upstreams/{u}/health`, without the node's name).
    pub fn health_view(&self) -> serde_json::Value {
        let checks_off = self.policy.checks_off();
        let targets: Vec<serde_json::Value> = self
            .targets
            .iter()
            .zip(&self.health)
            .map(|(target, health)| {
                let c = health.counters();
                let state = match c.state {
                    State::Healthy if checks_off => "HEALTHCHECKS_OFF",
                    State::Healthy => "HEALTHY",
                    State::Unhealthy => "UNHEALTHY",
                };
                let mut view = serde_json::json!({
                    "target": &*target.authority,
                    "weight": target.weight,
                    "health": state,
                    "counters": {
                        "successes": c.successes,
                        "tcp_failures": c.tcp_failures,
                        "timeouts": c.timeouts,
                        "http_failures": c.http_failures,
                    },
                });
                if target.backup {
                    view["backup"] = true.into();
                }
                view
            })
            .collect();
        let usable = self.above_threshold()
            && self.targets.iter().zip(&self.health).any(|(t, h)| t.weight > 0 && h.is_healthy());
        serde_json::json!({
            "upstream": self.upstream.name,
            "health": if usable { "HEALTHY" } else { "UNHEALTHY" },
            "data": targets,
        })
    }
}

/// One target of an upstream, or a service's literal address.
#[derive(Clone)]
pub struct TargetEntry {
    /// `host:port`, also the connection pool's key.
    pub authority: Arc<str>,
    /// The `Host` header for it: `host:port`, or `host` alone for port 80.
    pub host_header: HeaderValue,
    /// Its weight.
    pub weight: u32,
    /// Chosen only while no primary target is healthy.
    pub backup: bool,
}

impl TargetEntry {
    fn new(authority: &str, weight: u32, backup: bool) -> TargetEntry {
        let host = authority.strip_suffix(":80").unwrap_or(authority);
        TargetEntry {
            authority: Arc::from(authority),
            // Validation allows only host name, IP and port characters, all valid in a header.
            host_header: HeaderValue::from_str(host).unwrap_or(HeaderValue::from_static("localhost")),
            weight,
            backup,
        }
    }
}

impl UpstreamState {
    /// The balancer, locked. A panic while it was held cannot leave it inconsistent in a way
    /// that matters more than serving, so a poisoned lock is taken as it is.
    pub(crate) fn balancer(&self) -> MutexGuard<'_, Tiers> {
        self.balancer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a proxied exchange's outcome against target `index` (passive checks). An
    /// ejection with an `ejection_time` sets one timer, which brings the target back when due.
    pub fn report(&self, index: usize, outcome: Outcome) {
        let Some(health) = self.health.get(index) else { return };
        if let Some(due) = health.record_passive(outcome, &self.policy.passive, Instant::now()) {
            let health = health.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(due.into()).await;
                health.return_from_ejection(due);
            });
        }
    }

    /// Whether enough of the upstream's weight is healthy to take traffic: `healthchecks.threshold`
    /// percent of the total weight (0: any healthy target will do).
    pub fn above_threshold(&self) -> bool {
        let threshold = u64::from(self.policy.threshold);
        if threshold == 0 {
            return true;
        }
        let (mut healthy, mut total) = (0u64, 0u64);
        for (target, health) in self.targets.iter().zip(&self.health) {
            total += u64::from(target.weight);
            if health.is_healthy() {
                healthy += u64::from(target.weight);
            }
        }
        healthy * 100 >= threshold * total
    }

    /// Ends a request started by a pick of `index`; `latency` is the time to the response head,
    /// None when the attempt failed.
    pub fn finish(&self, index: usize, latency: Option<Duration>) {
        self.balancer().finish(index, latency, Instant::now());
    }
}

/// Why a snapshot could not be compiled. Validation catches these first; this is the last line.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// One route does not compile; the rest of the config can be served without it.
    #[error("routes/{name}: {message}")]
    Route {
        /// The route.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The route table did not compile.
    #[error(transparent)]
    Router(#[from] crate::router::RouterError),
    /// One service does not compile (its TLS settings do not load); the rest of the config can
    /// be served without it and its routes.
    #[error("services/{name}: {message}")]
    Service {
        /// The service.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A service's url is invalid.
    #[error("services/{service}.url: {message}")]
    ServiceUrl {
        /// The service.
        service: String,
        /// What is wrong.
        message: String,
    },
}

impl Runtime {
    /// Compiles `snapshot`, keeping the balancer state of `previous` where an upstream did not
    /// change.
    pub fn build(
        snapshot: Arc<Snapshot>,
        previous: Option<&Runtime>,
        health: &Registry,
        shared: &Arc<Shared>,
    ) -> Result<Runtime, CompileError> {
        let config = &snapshot.config;
        // A consumer's own plugins never authenticate (validation refuses them there), so they
        // are built without the consumers they would look up.
        let no_consumers = Arc::new(Consumers::default());
        let consumer_plugins = Builder { shared, consumers: &no_consumers };
        let consumers =
            Arc::new(Consumers::build(config, |name, plugins| consumer_plugins.consumer_chain(name, plugins)));
        let plugins = Builder { shared, consumers: &consumers };
        let mut upstreams = HashMap::with_capacity(config.upstreams.len());
        for (name, upstream) in &config.upstreams {
            // The primary targets first, then the backups: the index space of `Tiers`.
            let (mut targets, backups): (Vec<_>, Vec<_>) = config.targets_of(name).partition(|t| !t.backup);
            let primaries = targets.len();
            targets.extend(backups);
            let fingerprint = serde_json::to_string(&(upstream, &targets)).expect("entities serialize");
            let kept =
                previous.and_then(|p| p.upstreams.get(name)).filter(|old| old.fingerprint == fingerprint).cloned();
            let state = kept.unwrap_or_else(|| {
                let specs: Vec<_> = targets.iter().map(|t| TargetSpec { key: &t.target, weight: t.weight }).collect();
                let (primary, backup) = specs.split_at(primaries);
                let seed = xxhash_rust::xxh3::xxh3_64(name.as_bytes());
                Arc::new(UpstreamState {
                    balancer: Mutex::new(Tiers::new(upstream.algorithm, primary, backup, upstream.slots, seed)),
                    targets: targets.iter().map(|t| TargetEntry::new(&t.target, t.weight, t.backup)).collect(),
                    health: targets.iter().map(|t| health.target(name, &t.target)).collect(),
                    policy: Policy::new(&upstream.healthchecks),
                    budget: crate::balance::budget::Budget::new(upstream.retry_budget),
                    upstream: upstream.clone(),
                    fingerprint,
                })
            });
            upstreams.insert(name.clone(), state);
        }

        let previous_tls: HashMap<u64, Arc<UpstreamTls>> = previous
            .map(|p| p.routes.iter().filter_map(|r| r.service.tls.clone()).map(|tls| (tls.id, tls)).collect())
            .unwrap_or_default();
        let mut services = HashMap::with_capacity(config.services.len());
        for (name, service) in &config.services {
            let url =
                service.parsed_url().map_err(|message| CompileError::ServiceUrl { service: name.clone(), message })?;
            let destination = match upstreams.get(&url.host) {
                Some(state) if url.port.is_none() => Destination::Upstream(state.clone()),
                _ => {
                    let host = if url.host.contains(':') { format!("[{}]", url.host) } else { url.host.clone() };
                    Destination::Address(TargetEntry::new(&format!("{host}:{}", url.port_or_default()), 1, false))
                }
            };
            let tls = match url.tls {
                false => None,
                true => Some(
                    UpstreamTls::new(service, config, |id| previous_tls.get(&id).cloned())
                        .map_err(|message| CompileError::Service { name: name.clone(), message })?,
                ),
            };
            let http2 = if url.grpc {
                Http2::Grpc
            } else if service.http2 {
                Http2::Yes
            } else {
                Http2::No
            };
            // Validation left out a service whose fallback does not exist.
            let fallback = service.fallback_upstream.as_ref().and_then(|name| upstreams.get(name)).cloned();
            let entry = ServiceEntry { service: service.clone(), destination, fallback, path: url.path, tls, http2 };
            services.insert(name.clone(), Arc::new(entry));
        }

        let mut routes = Vec::with_capacity(config.routes.len());
        let mut specs = Vec::with_capacity(config.routes.len());
        for route in config.routes.values() {
            // Snapshot::new leaves out routes whose service is missing.
            let Some(service) = services.get(&route.service) else { continue };
            specs.push(RouteSpec {
                id: routes.len(),
                hosts: route.hosts.clone(),
                paths: route.paths.clone(),
                methods: route.methods.iter().filter_map(|m| Method::from_bytes(m.as_bytes()).ok()).collect(),
                headers: route
                    .headers
                    .iter()
                    .filter_map(|(n, v)| Some((HeaderName::from_bytes(n.as_bytes()).ok()?, v.clone())))
                    .collect(),
                priority: route.priority,
                schemes: Schemes {
                    http: route.protocols.contains(&Protocol::Http),
                    https: route.protocols.contains(&Protocol::Https),
                },
            });
            let plugins = plugins.route_chain(
                (&route.name, &route.plugins),
                (&route.service, &service.service.plugins),
                &config.plugins,
            );
            let (name, service_name) = (Name(Arc::from(route.name.as_str())), Name(Arc::from(route.service.as_str())));
            routes.push(RouteEntry {
                route: route.clone(),
                service: service.clone(),
                plugins,
                name,
                service_name,
                metrics: OnceLock::new(),
            });
        }
        let router = Router::new(&specs).map_err(|e| match e.route() {
            Some(id) => CompileError::Route { name: routes[id].route.name.clone(), message: e.to_string() },
            None => CompileError::Router(e),
        })?;
        Ok(Runtime { snapshot, applied_at: SystemTime::now(), router, routes, upstreams })
    }
}

/// Compiles `snapshot`; a route or service that does not compile is left out and listed, rather
/// than freezing the config.
fn build_leaving_out(
    mut snapshot: Arc<Snapshot>,
    previous: Option<&Runtime>,
    health: &Registry,
    plugins: &Arc<Shared>,
) -> Result<Runtime, CompileError> {
    loop {
        match Runtime::build(snapshot.clone(), previous, health, plugins) {
            Ok(runtime) => return Ok(runtime),
            Err(CompileError::Route { name, message }) => {
                tracing::warn!(route = %name, %message, "route left out: it does not compile");
                snapshot = Arc::new(snapshot.without(&EntityRef::Route(name), message));
            }
            Err(CompileError::Service { name, message }) => {
                tracing::warn!(service = %name, %message, "service left out: it does not compile");
                snapshot = Arc::new(snapshot.without(&EntityRef::Service(name), message));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The upstreams of `runtime`, for the health registry.
fn watched(runtime: &Runtime) -> impl Iterator<Item = Watched<'_>> {
    runtime.upstreams.iter().map(|(name, upstream)| Watched {
        upstream: name,
        active: &upstream.policy.active,
        targets: &upstream.health,
    })
}

/// The runtime a node serves now, swapped whole on every config change, and the health of its
/// targets, which outlives any one runtime.
pub struct Live {
    runtime: ArcSwap<Runtime>,
    health: Arc<Registry>,
    /// What plugins share across runtimes.
    plugins: Arc<Shared>,
    /// The TLS certificates of the runtime in force.
    certificates: Arc<Certificates>,
    /// The version of the runtime in force.
    applied: watch::Sender<u64>,
}

impl Live {
    /// Compiles and starts serving `snapshot`. Active probes start with [`Live::start_probes`].
    pub fn new(snapshot: Arc<Snapshot>, plugins: Arc<Shared>) -> Result<Live, CompileError> {
        let health = Arc::new(Registry::new());
        let version = snapshot.version;
        let runtime = build_leaving_out(snapshot, None, &health, &plugins)?;
        let certificates = Arc::new(Certificates::default());
        certificates.update(&runtime.snapshot.config);
        let runtime = ArcSwap::from_pointee(runtime);
        Ok(Live { runtime, health, plugins, certificates, applied: watch::Sender::new(version) })
    }

    /// The version of the runtime in force, changing with every swap.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Waits until a runtime of `version` or later is in force, at most `limit`; whether it is.
    pub async fn wait_applied(&self, version: u64, limit: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(limit, applied.wait_for(|v| *v >= version)).await.is_ok_and(|r| r.is_ok())
    }

    /// The runtime in force; hold it for the whole request.
    pub fn load(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// What plugins share: the rate-limit and cache stores, the cluster's members.
    pub fn plugins(&self) -> &Arc<Shared> {
        &self.plugins
    }

    /// The TLS certificates in force, for the TLS listener.
    pub fn certificates(&self) -> &Arc<Certificates> {
        &self.certificates
    }

    /// Target health on this node.
    pub fn health(&self) -> &Registry {
        &self.health
    }

    /// Starts the active probes of the runtime in force (they need a Tokio runtime).
    pub fn start_probes(&self) {
        self.health.sync(watched(&self.runtime.load()));
    }

    /// Compiles `snapshot` against the current runtime and swaps it in, then brings the probes
    /// in line. On error the current runtime stays.
    pub fn apply(&self, snapshot: Arc<Snapshot>) -> Result<Arc<Runtime>, CompileError> {
        let current = self.runtime.load();
        let version = snapshot.version;
        let next = Arc::new(build_leaving_out(snapshot, Some(&current), &self.health, &self.plugins)?);
        self.runtime.store(next.clone());
        self.certificates.update(&next.snapshot.config);
        self.health.sync(watched(&next));
        self.applied.send_replace(version);
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(yaml: &str, version: u64) -> Snapshot {
        Snapshot::new(config_sync::declarative::parse(yaml).unwrap(), version, vec![])
    }

    const CONFIG: &str = r#"
services:
  - { name: a, url: "http://up", routes: [{ name: a, paths: [/a] }] }
  - { name: b, url: "http://10.0.0.1:81/x/", routes: [{ name: b, paths: [/b] }] }
upstreams:
  - { name: up, targets: [{ target: "127.0.0.1:1" }, { target: "127.0.0.1:2" }] }
  - { name: other, targets: [{ target: "127.0.0.1:3" }] }
"#;

    #[test]
    fn services_resolve_to_upstreams_or_addresses() {
        let rt = Runtime::build(Arc::new(snapshot(CONFIG, 1)), None, &Registry::new(), &Shared::in_memory()).unwrap();
        let by_name = |n: &str| rt.routes.iter().find(|r| r.route.name == n).unwrap();
        assert!(matches!(by_name("a").service.destination, Destination::Upstream(_)));
        match &by_name("b").service.destination {
            Destination::Address(a) => assert_eq!(&*a.authority, "10.0.0.1:81"),
            Destination::Upstream(_) => panic!("b is a literal address"),
        }
        assert_eq!(by_name("b").service.path, "/x");
    }

    #[test]
    fn unchanged_upstreams_keep_their_balancer() {
        let live = Live::new(Arc::new(snapshot(CONFIG, 1)), Shared::in_memory()).unwrap();
        let before = live.load();
        let changed = CONFIG.replace("127.0.0.1:3", "127.0.0.1:4");
        let after = live.apply(Arc::new(snapshot(&changed, 2))).unwrap();
        assert!(Arc::ptr_eq(&before.upstreams["up"], &after.upstreams["up"]));
        assert!(!Arc::ptr_eq(&before.upstreams["other"], &after.upstreams["other"]));
        assert_eq!(live.load().snapshot.version, 2);
    }

    #[test]
    fn unchanged_https_services_keep_their_tls_and_its_session_cache() {
        let config = r#"
services:
  - { name: a, url: "https://10.0.0.1", routes: [{ name: a, paths: [/a] }] }
  - { name: b, url: "https://10.0.0.2", tls_verify: false, routes: [{ name: b, paths: [/b] }] }
"#;
        let live = Live::new(Arc::new(snapshot(config, 1)), Shared::in_memory()).unwrap();
        let tls = |rt: &Runtime, n: &str| {
            rt.routes.iter().find(|r| r.route.name == n).unwrap().service.tls.clone().expect("an https service")
        };
        let before = live.load();
        let changed = config.replace("tls_verify: false", "tls_server_name: b.internal");
        let after = live.apply(Arc::new(snapshot(&changed, 2))).unwrap();
        assert!(Arc::ptr_eq(&tls(&before, "a"), &tls(&after, "a")));
        assert!(!Arc::ptr_eq(&tls(&before, "b"), &tls(&after, "b")));
        assert_ne!(tls(&before, "b").id, tls(&after, "b").id);
    }
}
