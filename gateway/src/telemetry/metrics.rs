//! Prometheus metrics, served on the admin listener at `GET /metrics` (OpenMetrics text).
//!
//! Counters and histograms are updated on the request path; gauges that describe state (config
//! version and errors, target health, etcd, members) are read from the live state at each
//! scrape, so they cannot go stale (`crate::state_metrics`, registered by the node).

use super::process;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latency buckets, milliseconds: fine below a millisecond, where a proxy lives, up to 10 s.
const LATENCY_BUCKETS_MS: [f64; 19] = [
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
    10000.0,
];

/// A label value shared with the runtime instead of copied per request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// `gateway_http_requests_total` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    service: Name,
    route: Name,
    code: u16,
}

/// `gateway_request_latency_ms` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    service: Name,
    route: Name,
}

/// `gateway_upstream_latency_ms` labels: the upstream the request went to (empty for a service
/// whose url names one address).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    service: Name,
    route: Name,
    upstream: Name,
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_latency: Family<RouteLabels, Histogram>,
    upstream_latency: Family<UpstreamLabels, Histogram>,
    rate_limits: Family<RateLimitLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    splits: Family<SplitLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
}

/// `gateway_upstream_retries_total` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RetryLabels {
    service: Name,
    reason: &'static str,
    outcome: &'static str,
}

/// `gateway_traffic_split_total` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SplitLabels {
    route: Name,
    upstream: Name,
}

/// The `upstream` label of the requests `traffic-split` left to the service's own destination.
const SERVICE_DESTINATION: &str = "(service)";

/// `gateway_plugin_refusals_total` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    route: Name,
    plugin: &'static str,
    code: u16,
}

/// `gateway_cache_total` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabels {
    status: &'static str,
}

/// `gateway_ratelimit_total` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RateLimitLabels {
    route: Name,
    outcome: &'static str,
    store: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric updated on the request path; [`Metrics::register`] adds those
    /// read from the node's state at each scrape.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("gateway_http_requests", "Proxied requests by service, route and status", requests.clone());
        let histogram = || Histogram::new(LATENCY_BUCKETS_MS);
        let request_latency = Family::<RouteLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "gateway_request_latency_ms",
            "Time from receiving a request to sending its response head, ms",
            request_latency.clone(),
        );
        let upstream_latency =
            Family::<UpstreamLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "gateway_upstream_latency_ms",
            "Time from sending a request upstream to its response head, ms",
            upstream_latency.clone(),
        );
        let rate_limits = Family::<RateLimitLabels, Counter>::default();
        registry.register(
            "gateway_ratelimit",
            "Rate-limit decisions by route, outcome (allowed, limited, unavailable) and store (shared, local, fallback)",
            rate_limits.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register("gateway_cache", "Proxy-cache outcomes by X-Cache-Status", cache.clone());
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "gateway_plugin_refusals",
            "Requests a plugin refused (401, 403, 413, 429, ...) by route, plugin and status code",
            refusals.clone(),
        );
        let splits = Family::<SplitLabels, Counter>::default();
        registry.register(
            "gateway_traffic_split",
            "Requests traffic-split sent, by route and upstream ((service): the service's own destination)",
            splits.clone(),
        );
        let retries = Family::<RetryLabels, Counter>::default();
        registry.register(
            "gateway_upstream_retries",
            "Upstream retries by service, reason (connect, reset, per_try_timeout, status) and outcome (retried; \
             budget_exhausted: refused by the upstream's retry_budget)",
            retries.clone(),
        );
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        Metrics { registry, requests, request_latency, upstream_latency, rate_limits, cache, refusals, splits, retries }
    }

    /// Adds metrics read at each scrape.
    pub fn register(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// The handles of the requests to one route, for [`RouteMetrics`]; `service` and `route`
    /// are empty for the requests no route matched.
    pub fn route(&self, service: &Name, route: &Name) -> RouteMetrics {
        let labels = RouteLabels { service: service.clone(), route: route.clone() };
        RouteMetrics {
            service: service.clone(),
            route: route.clone(),
            requests: Few::new(&self.requests),
            request_latency: self.request_latency.get_or_create(&labels).clone(),
            upstream_latency: Few::new(&self.upstream_latency),
            rate_limits: Few::new(&self.rate_limits),
            cache: self.cache.clone(),
            refusals: Few::new(&self.refusals),
            splits: Few::new(&self.splits),
            retries: Few::new(&self.retries),
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(8192);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            let _ = writeln!(text, "# encoding failed: {e}");
        }
        text
    }

    /// Every metric in Prometheus's older text format (0.0.4), for clients that do not accept
    /// OpenMetrics (`promtool check metrics`, scripts reading `/metrics`).
    pub fn render_prometheus_text(&self) -> String {
        prometheus_text(&self.render())
    }
}

/// OpenMetrics text in Prometheus's 0.0.4 format: a counter family's `HELP` and `TYPE` name its
/// samples (`x_total`), `unknown` is `untyped`, and there is no `# EOF` or `# UNIT`. What this
/// registry writes has no exemplars and no `_created` samples, the rest of the difference.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut text = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "].into_iter().find_map(|p| Some((p, line.strip_prefix(p)?)));
        match comment {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) { "_total" } else { "" };
                let tail = if prefix == "# TYPE " && tail == "unknown" { "untyped" } else { tail };
                let _ = writeln!(text, "{prefix}{name}{suffix} {tail}");
            }
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

/// The metrics of one route's requests (`gateway_http_requests_total`, its latency histograms,
/// its rate-limit decisions), held by the route so that a request costs no
/// label hashing: each lookup in a family hashes the label strings with SipHash under a lock,
/// three or four times a request.
pub struct RouteMetrics {
    /// The route's service.
    pub service: Name,
    /// The route.
    pub route: Name,
    /// By status code.
    requests: Few<u16, RequestLabels>,
    request_latency: Histogram,
    /// By upstream.
    upstream_latency: Few<Arc<str>, UpstreamLabels, Histogram>,
    /// By outcome and store.
    rate_limits: Few<(&'static str, &'static str), RateLimitLabels>,
    cache: Family<CacheLabels, Counter>,
    /// By plugin and status code.
    refusals: Few<(&'static str, u16), RefusalLabels>,
    /// By the upstream traffic-split chose (None: the service's own destination).
    splits: Few<Option<Arc<str>>, SplitLabels>,
    /// By reason and outcome.
    retries: Few<(&'static str, &'static str), RetryLabels>,
}

impl RouteMetrics {
    /// Counts a request to this route: its status code and its time from receipt to response
    /// head.
    pub fn request(&self, code: u16, total: Duration) {
        let labels = || RequestLabels { service: self.service.clone(), route: self.route.clone(), code };
        self.requests.get(code, labels).inc();
        self.request_latency.observe(ms(total));
    }

    /// Records the time `upstream` (its name; empty for a service whose url names an address)
    /// took to the response head.
    pub fn upstream(&self, name: &str, latency: Duration) {
        let make = || {
            let name: Arc<str> = Arc::from(name);
            let labels = UpstreamLabels {
                service: self.service.clone(),
                route: self.route.clone(),
                upstream: Name(name.clone()),
            };
            (name, labels)
        };
        self.upstream_latency.find(|seen| &**seen == name, make).observe(ms(latency));
    }

    /// Counts a rate-limit decision on this route.
    pub fn rate_limit(&self, outcome: &'static str, store: &'static str) {
        let labels = || RateLimitLabels { route: self.route.clone(), outcome, store };
        self.rate_limits.get((outcome, store), labels).inc();
    }

    /// Counts a request `plugin` refused on this route with `code`.
    pub fn refusal(&self, plugin: &'static str, code: u16) {
        let labels = || RefusalLabels { route: self.route.clone(), plugin, code };
        self.refusals.get((plugin, code), labels).inc();
    }

    /// Counts a request `traffic-split` sent to `upstream` (None: left to the service's own
    /// destination).
    pub fn traffic_split(&self, upstream: Option<&Arc<str>>) {
        let make = || {
            let label = upstream.cloned().unwrap_or_else(|| Arc::from(SERVICE_DESTINATION));
            (upstream.cloned(), SplitLabels { route: self.route.clone(), upstream: Name(label) })
        };
        self.splits.find(|seen| seen.as_deref() == upstream.map(|u| &**u), make).inc();
    }

    /// Counts a retry of this route's service for `reason`, made or refused (`outcome`).
    pub fn retry(&self, reason: &'static str, outcome: &'static str) {
        let labels = || RetryLabels { service: self.service.clone(), reason, outcome };
        self.retries.get((reason, outcome), labels).inc();
    }

    /// Counts a proxy-cache outcome (`Hit`, `Miss`, `Refresh`, `Bypass`).
    pub fn cache(&self, status: &'static str) {
        self.cache.get_or_create(&CacheLabels { status }).inc();
    }
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics").field("service", &self.service).field("route", &self.route).finish()
    }
}

/// The counters (or histograms) of a family for the few label sets one route uses (its status
/// codes, its rate-limit outcomes, its traffic-split destinations, its upstreams), found by a
/// short scan instead of hashing.
struct Few<K, L, M = Counter> {
    family: Family<L, M>,
    seen: Mutex<Vec<(K, M)>>,
}

impl<K, L: Clone + std::hash::Hash + Eq, M: Clone> Few<K, L, M> {
    fn new(family: &Family<L, M>) -> Few<K, L, M> {
        Few { family: family.clone(), seen: Mutex::new(Vec::new()) }
    }

    /// The metric for `key`, whose labels are `labels()`.
    fn get(&self, key: K, labels: impl FnOnce() -> L) -> M
    where
        K: Copy + PartialEq,
    {
        self.find(|seen| *seen == key, || (key, labels()))
    }

    /// The metric of the first key `is` accepts; the first time, of the key and labels `make()`
    /// returns (for keys that are not `Copy`: made only then).
    fn find(&self, is: impl Fn(&K) -> bool, make: impl FnOnce() -> (K, L)) -> M {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, metric)) = seen.iter().find(|(k, _)| is(k)) {
            return metric.clone();
        }
        let (key, labels) = make();
        let metric = self.family.get_or_create(&labels).clone();
        seen.push((key, metric.clone()));
        metric
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_older_text_format_names_counters_by_their_samples() {
        let openmetrics = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{code=\"200\"} 3\n\
                           # HELP b Open.\n# TYPE b gauge\n# UNIT b bytes\nb 1\n# TYPE c unknown\nc 2\n# EOF\n";
        assert_eq!(
            prometheus_text(openmetrics),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{code=\"200\"} 3\n\
             # HELP b Open.\n# TYPE b gauge\nb 1\n# TYPE c untyped\nc 2\n"
        );
    }
}
