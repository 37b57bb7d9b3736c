//! Health-check settings, with Kong's schema and defaults (`healthchecks.active`,
//! `healthchecks.passive`, `healthchecks.threshold`). A counter threshold of 0 turns that
//! counter off; an interval of 0 turns that side of active probing off.

use super::units;
use crate::validate::Errors;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Active and passive checks of an upstream's targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Healthchecks {
    /// Probes sent by the node.
    pub active: ActiveCheck,
    /// Judgement from proxied traffic.
    pub passive: PassiveCheck,
    /// The least percentage (0 to 100) of healthy weight under which the whole upstream counts
    /// as unhealthy. Default 0.
    pub threshold: u8,
}

/// How a probe or proxied exchange is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    /// HTTP statuses count; the default.
    #[default]
    Http,
    /// HTTP statuses count, over TLS.
    Https,
    /// Only whether a TCP connection opens.
    Tcp,
    /// Active probes call `grpc.health.v1.Health/Check` (over HTTP/2 in cleartext) and want
    /// SERVING; passive checks count HTTP statuses, and a gRPC service's `grpc-status`.
    Grpc,
}

/// Active probing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveCheck {
    /// `http` (GET `http_path`), `https` (the same over TLS) or `tcp` (connect only). Default
    /// http.
    #[serde(rename = "type")]
    pub check_type: CheckType,
    /// Probe timeout, seconds. Default 1.
    #[serde(with = "units::seconds")]
    pub timeout: Duration,
    /// Probes in flight at once per upstream. Default 10.
    pub concurrency: u32,
    /// Path probed. Default `/`.
    pub http_path: String,
    /// Extra headers sent with each probe.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// `https` probes: the name sent as SNI (and verified); none: the target's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_sni: Option<String>,
    /// `https` probes: verify the target's certificate against the system's roots. Default true.
    pub https_verify_certificate: bool,
    /// When a target counts as healthy again.
    pub healthy: ActiveHealthy,
    /// When a target counts as unhealthy.
    pub unhealthy: ActiveUnhealthy,
}

impl Default for ActiveCheck {
    fn default() -> Self {
        ActiveCheck {
            check_type: CheckType::Http,
            timeout: Duration::from_secs(1),
            concurrency: 10,
            http_path: "/".into(),
            headers: BTreeMap::new(),
            https_sni: None,
            https_verify_certificate: true,
            healthy: ActiveHealthy::default(),
            unhealthy: ActiveUnhealthy::default(),
        }
    }
}

/// Active probing of healthy targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveHealthy {
    /// Seconds between probes of a healthy target; 0: healthy targets are not probed. Default 0.
    #[serde(with = "units::seconds")]
    pub interval: Duration,
    /// Statuses that count as a success. Default [200, 302].
    pub http_statuses: Vec<u16>,
    /// Successes in a row that make a target healthy; 0: off. Default 0.
    pub successes: u32,
}

impl Default for ActiveHealthy {
    fn default() -> Self {
        ActiveHealthy { interval: Duration::ZERO, http_statuses: vec![200, 302], successes: 0 }
    }
}

/// Active probing of unhealthy targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveUnhealthy {
    /// Seconds between probes of an unhealthy target; 0: unhealthy targets are not probed.
    #[serde(with = "units::seconds")]
    pub interval: Duration,
    /// Statuses that count as an HTTP failure. Default [429, 404, 500, 501, 502, 503, 504, 505].
    pub http_statuses: Vec<u16>,
    /// TCP failures in a row that make a target unhealthy; 0: off.
    pub tcp_failures: u32,
    /// Timeouts in a row that make a target unhealthy; 0: off.
    pub timeouts: u32,
    /// HTTP failures in a row that make a target unhealthy; 0: off.
    pub http_failures: u32,
}

impl Default for ActiveUnhealthy {
    fn default() -> Self {
        ActiveUnhealthy {
            interval: Duration::ZERO,
            http_statuses: vec![429, 404, 500, 501, 502, 503, 504, 505],
            tcp_failures: 0,
            timeouts: 0,
            http_failures: 0,
        }
    }
}

/// Passive checks, from proxied traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveCheck {
    /// `http` (statuses count) or `tcp` (only connection failures and timeouts). Default http.
    #[serde(rename = "type")]
    pub check_type: CheckType,
    /// When proxied traffic counts as healthy.
    pub healthy: PassiveHealthy,
    /// When proxied traffic counts as unhealthy.
    pub unhealthy: PassiveUnhealthy,
}

/// Passive successes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealthy {
    /// Statuses that count as a success. Default 200-208, 226, 300-308.
    pub http_statuses: Vec<u16>,
    /// Successes in a row that make a target healthy; 0: off. Default 0.
    pub successes: u32,
}

impl Default for PassiveHealthy {
    fn default() -> Self {
        let mut http_statuses: Vec<u16> = (200..=208).collect();
        http_statuses.push(226);
        http_statuses.extend(300..=308);
        PassiveHealthy { http_statuses, successes: 0 }
    }
}

/// Passive failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveUnhealthy {
    /// Statuses that count as an HTTP failure. Default [429, 500, 503].
    pub http_statuses: Vec<u16>,
    /// TCP failures in a row that make a target unhealthy; 0: off.
    pub tcp_failures: u32,
    /// Timeouts in a row that make a target unhealthy; 0: off.
    pub timeouts: u32,
    /// HTTP failures in a row that make a target unhealthy; 0: off.
    pub http_failures: u32,
    /// Seconds (fractions allowed, 0 to 300) a target these counters made unhealthy stays out
    /// before it is healthy again; doubled on each ejection that follows its return, up to
    /// 300 s (Envoy's outlier detection). 0 (default): Kong's rule, back only through an active
    /// probe or an operator.
    #[serde(with = "units::seconds", skip_serializing_if = "Duration::is_zero")]
    pub ejection_time: Duration,
}

/// The longest ejection, however many times a target was ejected in a row.
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

impl Default for PassiveUnhealthy {
    fn default() -> Self {
        PassiveUnhealthy {
            http_statuses: vec![429, 500, 503],
            tcp_failures: 0,
            timeouts: 0,
            http_failures: 0,
            ejection_time: Duration::ZERO,
        }
    }
}

/// Kong's bound on every counter threshold.
const MAX_COUNTER: u32 = 255;

fn check_statuses(statuses: &[u16], path: &str, errors: &mut Errors) {
    for (i, s) in statuses.iter().enumerate() {
        if !(100..=999).contains(s) {
            errors.push(format!("{path}[{i}]"), "must be an HTTP status, 100 to 999");
        }
    }
}

fn check_counters(counters: &[(&str, u32)], path: &str, errors: &mut Errors) {
    for (name, value) in counters {
        if *value > MAX_COUNTER {
            errors.push(format!("{path}.{name}"), format!("must be 0 to {MAX_COUNTER}"));
        }
    }
}

impl Healthchecks {
    /// Pushes every problem onto `errors`, under `path` (`upstreams/<name>.healthchecks`).
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        if self.threshold > 100 {
            errors.push(format!("{path}.threshold"), "must be 0 to 100");
        }
        let a = &self.active;
        let ap = format!("{path}.active");
        if a.timeout.is_zero() || a.timeout > Duration::from_secs(65_535) {
            errors.push(format!("{ap}.timeout"), "must be more than 0 and at most 65535 s");
        }
        if !(1..=2_147_483_648).contains(&a.concurrency) {
            errors.push(format!("{ap}.concurrency"), "must be at least 1");
        }
        if !a.http_path.starts_with('/') {
            errors.push(format!("{ap}.http_path"), "must start with /");
        }
        if let Some(sni) = &a.https_sni {
            if let Err(e) = super::service::check_host(sni) {
                errors.push(format!("{ap}.https_sni"), e);
            }
        }
        for (name, interval) in [("healthy", a.healthy.interval), ("unhealthy", a.unhealthy.interval)] {
            if interval > Duration::from_secs(65_535) {
                errors.push(format!("{ap}.{name}.interval"), "must be 0 to 65535 s");
            }
        }
        check_statuses(&a.healthy.http_statuses, &format!("{ap}.healthy.http_statuses"), errors);
        check_statuses(&a.unhealthy.http_statuses, &format!("{ap}.unhealthy.http_statuses"), errors);
        check_counters(&[("successes", a.healthy.successes)], &format!("{ap}.healthy"), errors);
        let u = &a.unhealthy;
        check_counters(
            &[("tcp_failures", u.tcp_failures), ("timeouts", u.timeouts), ("http_failures", u.http_failures)],
            &format!("{ap}.unhealthy"),
            errors,
        );
        let p = &self.passive;
        let pp = format!("{path}.passive");
        check_statuses(&p.healthy.http_statuses, &format!("{pp}.healthy.http_statuses"), errors);
        check_statuses(&p.unhealthy.http_statuses, &format!("{pp}.unhealthy.http_statuses"), errors);
        check_counters(&[("successes", p.healthy.successes)], &format!("{pp}.healthy"), errors);
        let u = &p.unhealthy;
        check_counters(
            &[("tcp_failures", u.tcp_failures), ("timeouts", u.timeouts), ("http_failures", u.http_failures)],
            &format!("{pp}.unhealthy"),
            errors,
        );
        if u.ejection_time > MAX_EJECTION_TIME {
            errors.push(format!("{pp}.unhealthy.ejection_time"), "must be 0 to 300 s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kong_defaults() {
        let h: Healthchecks = serde_json::from_str("{}").unwrap();
        assert_eq!(h.active.timeout, Duration::from_secs(1));
        assert_eq!(h.active.concurrency, 10);
        assert_eq!(h.active.healthy.http_statuses, [200, 302]);
        assert_eq!(h.active.unhealthy.http_statuses, [429, 404, 500, 501, 502, 503, 504, 505]);
        assert_eq!(h.passive.unhealthy.http_statuses, [429, 500, 503]);
        assert_eq!(h.passive.healthy.http_statuses.len(), 9 + 1 + 9);
        assert_eq!(h.threshold, 0);
    }

    #[test]
    fn partial_sections_keep_the_other_defaults() {
        let h: Healthchecks = serde_json::from_str(
            r#"{"passive":{"unhealthy":{"tcp_failures":2,"http_failures":3}},"active":{"healthy":{"interval":0.5}}}"#,
        )
        .unwrap();
        assert_eq!(h.passive.unhealthy.tcp_failures, 2);
        assert_eq!(h.passive.unhealthy.http_statuses, [429, 500, 503]);
        assert_eq!(h.active.healthy.interval, Duration::from_millis(500));
        assert_eq!(h.active.healthy.http_statuses, [200, 302]);
    }

    #[test]
    fn bad_values_are_reported() {
        let h: Healthchecks = serde_json::from_str(
            r#"{"threshold":101,"active":{"http_path":"x","unhealthy":{"http_statuses":[42]}},"passive":{"unhealthy":{"timeouts":256}}}"#,
        )
        .unwrap();
        let mut errors = Errors::default();
        h.validate("h", &mut errors);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "h.threshold",
                "h.active.http_path",
                "h.active.unhealthy.http_statuses[0]",
                "h.passive.unhealthy.timeouts"
            ]
        );
        assert!(serde_json::from_str::<Healthchecks>(r#"{"active":{"timeout":-1}}"#).is_err());
    }
}
