//! The metrics read from the node's state at each scrape, so they cannot go stale: config
//! version, hash and errors, target health, etcd, Redis and the rate-limit fallback, members,
//! client connections and bytes, gossip and trace counts. Registered on the node's
//! [`Metrics`](crate::telemetry::Metrics) by the node.

use crate::health::State;
use crate::runtime::Live;
use crate::server::Traffic;
use crate::telemetry::traces;
use cluster::{ClusterHandle, MemberState};
use config_sync::etcd::{Connection, EtcdStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::Arc;
use tokio::sync::watch;

/// What the state gauges read at scrape time.
pub struct Sources {
    /// The live runtime and health.
    pub live: Arc<Live>,
    /// etcd's status, when config comes from etcd.
    pub etcd: Option<watch::Receiver<EtcdStatus>>,
    /// Gossip, when on.
    pub cluster: Option<Arc<ClusterHandle>>,
    /// Whether Redis answers (none without Redis).
    pub redis: Box<dyn Fn() -> Option<bool> + Send + Sync>,
    /// The proxy listeners' connections and bytes.
    pub traffic: Arc<Traffic>,
}

/// Gauges and counters read from the live state at each scrape.
#[derive(Debug)]
pub struct StateCollector(pub Sources);

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
        let mut info = encoder.encode_descriptor(
            "gateway_config_info",
            "1, labelled with the hash and version of the config served (nodes serving the same config share the hash)",
            None,
            MetricType::Gauge,
        )?;
        let version = snapshot.version.to_string();
        let labels = [("hash", snapshot.hash.as_str()), ("version", version.as_str())];
        ConstGauge::new(1).encode(info.encode_family(&labels)?)?;
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
        let mut ejections = encoder.encode_descriptor(
            "gateway_upstream_ejections",
            "Times passive checks made each target unhealthy on this node",
            None,
            MetricType::Counter,
        )?;
        for (name, upstream) in &runtime.upstreams {
            for (target, state) in upstream.targets.iter().zip(&upstream.health) {
                let labels = [("upstream", name.as_str()), ("target", &*target.authority)];
                ConstCounter::new(state.ejections()).encode(ejections.encode_family(&labels)?)?;
            }
        }

        let certificates = self.0.live.certificates().load();
        if !certificates.is_empty() {
            let mut expiry = encoder.encode_descriptor(
                "gateway_certificate_expiry_timestamp_seconds",
                "When each TLS certificate served expires (Unix time, seconds)",
                None,
                MetricType::Gauge,
            )?;
            for (name, not_after) in certificates.expiries() {
                let seconds = not_after.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
                ConstGauge::new(seconds).encode(expiry.encode_family(&[("certificate", name)])?)?;
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
        let redis = (self.0.redis)();
        if let Some(up) = redis {
            gauge(&mut encoder, "gateway_redis_connected", "1 while Redis answers", i64::from(up))?;
        }
        gauge(
            &mut encoder,
            "gateway_ratelimit_fallback_active",
            "1 while Redis-backed rate limits are decided by this node's fallback counters (Redis is out)",
            i64::from(redis == Some(false)),
        )?;
        let traffic = &self.0.traffic;
        gauge(
            &mut encoder,
            "gateway_client_connections",
            "Client connections open on the proxy listeners",
            traffic.open(),
        )?;
        let mut bytes = encoder.encode_descriptor(
            "gateway_client_bytes",
            "Bytes received from and sent to clients on the proxy listeners (HTTP, after TLS), by direction",
            None,
            MetricType::Counter,
        )?;
        for (direction, count) in [("received", traffic.received()), ("sent", traffic.sent())] {
            ConstCounter::new(count).encode(bytes.encode_family(&[("direction", direction)])?)?;
        }
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
