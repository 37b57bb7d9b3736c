//! Prometheus metrics, served on the admin listener at `GET /metrics` (OpenMetrics text).
//!
//! Counters and histograms are updated on the request path; gauges that describe state (config
//! version and errors, target health, etcd, members) are read from the live state at each
//! scrape, so they cannot go stale.

use super::process;
use super::traces;
use crate::health::State;
use crate::plugins::rate_limit::{Limiters, Path};
use crate::runtime::Live;
use cluster::{ClusterHandle, MemberState};
use config_sync::etcd::{Connection, EtcdStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

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

/// `service` label of the latency histograms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServiceLabel {
    service: Name,
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_latency: Family<ServiceLabel, Histogram>,
    upstream_latency: Family<ServiceLabel, Histogram>,
    rate_limits: Family<RateLimitLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
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

/// What the state gauges read at scrape time.
pub struct Sources {
    /// The live runtime and health.
    pub live: Arc<Live>,
    /// etcd's status, when config comes from etcd.
    pub etcd: Option<watch::Receiver<EtcdStatus>>,
    /// Gossip, when on.
    pub cluster: Option<Arc<ClusterHandle>>,
    /// Rate-limit stores, for whether Redis answers.
    pub limiters: Arc<Limiters>,
}

impl Metrics {
    /// Registers every metric; the gauges read `sources` at each scrape.
    pub fn new(sources: Sources) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("gateway_http_requests", "Proxied requests by service, route and status", requests.clone());
        let histogram = || Histogram::new(LATENCY_BUCKETS_MS);
        let request_latency = Family::<ServiceLabel, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "gateway_request_latency_ms",
            "Time from receiving a request to sending its response head, ms",
            request_latency.clone(),
        );
        let upstream_latency = Family::<ServiceLabel, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
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
        registry.register_collector(Box::new(StateCollector(sources)));
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        Metrics { registry, requests, request_latency, upstream_latency, rate_limits, cache }
    }

    /// The handles of the requests to one route, for [`RouteMetrics`]; `service` and `route`
    /// are empty for the requests no route matched.
    pub fn route(&self, service: &Name, route: &Name) -> RouteMetrics {
        let label = ServiceLabel { service: service.clone() };
        RouteMetrics {
            service: service.clone(),
            route: route.clone(),
            requests: Few::new(&self.requests),
            request_latency: self.request_latency.get_or_create(&label).clone(),
            upstream_latency: self.upstream_latency.get_or_create(&label).clone(),
            rate_limits: Few::new(&self.rate_limits),
        }
    }

    /// Counts a proxy-cache outcome (`Hit`, `Miss`, `Refresh`, `Bypass`).
    pub fn cache(&self, status: &'static str) {
        self.cache.get_or_create(&CacheLabels { status }).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(8192);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            let _ = writeln!(text, "# encoding failed: {e}");
        }
        text
    }
}

/// The metrics of one route's requests (`gateway_http_requests_total`, the latency histograms
/// of its service, its rate-limit decisions), held by the route so that a request costs no
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
    upstream_latency: Histogram,
    /// By outcome and store.
    rate_limits: Few<(&'static str, Path), RateLimitLabels>,
}

impl RouteMetrics {
    /// Counts a request to this route: its status code, its time from receipt to response head,
    /// and the upstream's time to the response head when it went upstream.
    pub fn request(&self, code: u16, total: Duration, upstream: Option<Duration>) {
        let labels = || RequestLabels { service: self.service.clone(), route: self.route.clone(), code };
        self.requests.get(code, labels).inc();
        self.request_latency.observe(ms(total));
        if let Some(upstream) = upstream {
            self.upstream_latency.observe(ms(upstream));
        }
    }

    /// Counts a rate-limit decision on this route.
    pub fn rate_limit(&self, outcome: &'static str, store: Path) {
        let labels = || RateLimitLabels { route: self.route.clone(), outcome, store: store.as_str() };
        self.rate_limits.get((outcome, store), labels).inc();
    }
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics").field("service", &self.service).field("route", &self.route).finish()
    }
}

/// The counters of a family for the few label sets one route uses (its status codes, its
/// rate-limit outcomes), found by a short scan instead of hashing.
struct Few<K, L> {
    family: Family<L, Counter>,
    seen: Mutex<Vec<(K, Counter)>>,
}

impl<K: Copy + PartialEq, L: Clone + std::hash::Hash + Eq> Few<K, L> {
    fn new(family: &Family<L, Counter>) -> Few<K, L> {
        Few { family: family.clone(), seen: Mutex::new(Vec::new()) }
    }

    /// The counter for `key`, whose labels are `labels()`.
    fn get(&self, key: K, labels: impl FnOnce() -> L) -> Counter {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, counter)) = seen.iter().find(|(k, _)| *k == key) {
            return counter.clone();
        }
        let counter = self.family.get_or_create(&labels()).clone();
        seen.push((key, counter.clone()));
        counter
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Gauges and counters read from the live state at each scrape.
#[derive(Debug)]
struct StateCollector(Sources);

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let runtime = self.0.live.load();
        let snapshot = &runtime.snapshot;
        gauge(
            &mut encoder,
            "gateway_config_version",
            "Version of the config served (etcd: its revision)",
            snapshot.version as i64,
        )?;
        gauge(
            &mut encoder,
            "gateway_config_errors",
            "Config keys or entities left out of the config served",
            snapshot.errors.len() as i64,
        )?;

        let mut health = encoder.encode_descriptor(
            "gateway_upstream_target_health",
            "1 for the state each target is in on this node (healthy, unhealthy, healthchecks_off)",
            None,
            MetricType::Gauge,
        )?;
        for (name, upstream) in &runtime.upstreams {
            let off = upstream.policy.checks_off();
            for (target, state) in upstream.targets.iter().zip(&upstream.health) {
                let current = match state.counters().state {
                    State::Healthy if off => "healthchecks_off",
                    State::Healthy => "healthy",
                    State::Unhealthy => "unhealthy",
                };
                for candidate in ["healthy", "unhealthy", "healthchecks_off"] {
                    let labels = [("upstream", name.as_str()), ("target", &*target.authority), ("state", candidate)];
                    ConstGauge::new(i64::from(candidate == current)).encode(health.encode_family(&labels)?)?;
                }
            }
        }

        let etcd = self.0.etcd.as_ref().map(|s| matches!(s.borrow().connection, Connection::Connected));
        if let Some(connected) = etcd {
            gauge(
                &mut encoder,
                "gateway_etcd_connected",
                "1 while the etcd source is connected",
                i64::from(connected),
            )?;
        }
        let redis = self.0.limiters.redis_state().unwrap_or(false);
        gauge(
            &mut encoder,
            "gateway_redis_connected",
            "1 while Redis answers (0 without redis_url)",
            i64::from(redis),
        )?;
        let mut members = encoder.encode_descriptor(
            "gateway_cluster_members",
            "Cluster members by state, as this node sees them",
            None,
            MetricType::Gauge,
        )?;
        let seen = self.0.cluster.as_ref().map(|c| c.members().borrow().clone()).unwrap_or_default();
        for state in [MemberState::Alive, MemberState::Suspect, MemberState::Down] {
            let mut count = seen.iter().filter(|m| m.state == state).count() as i64;
            if self.0.cluster.is_none() && state == MemberState::Alive {
                count = 1;
            }
            ConstGauge::new(count).encode(members.encode_family(&[("state", state.as_str())])?)?;
        }
        let mut rejected = encoder.encode_descriptor(
            "gateway_gossip_rejected",
            "Gossip packets dropped, by reason",
            None,
            MetricType::Counter,
        )?;
        for (reason, count) in self.0.cluster.as_ref().map(|c| c.rejected()).unwrap_or_default() {
            ConstCounter::new(count).encode(rejected.encode_family(&[("reason", reason)])?)?;
        }

        let (exported, dropped) = traces::counts();
        let exported_total = ConstCounter::new(exported);
        exported_total.encode(encoder.encode_descriptor(
            "gateway_trace_spans_exported",
            "Spans sent to the OTLP collector",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(dropped).encode(encoder.encode_descriptor(
            "gateway_trace_spans_dropped",
            "Spans dropped because the collector failed or did not answer",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}
