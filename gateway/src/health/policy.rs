//! An upstream's `healthchecks` config, compiled: thresholds for each source, status sets for
//! judging responses, and the probe settings.

use super::counters::{Outcome, Thresholds};
use config_sync::model::{CheckType, Healthchecks};
use http::{HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::Duration;

/// HTTP statuses 0 to 1023 as a bit set, so judging a status costs one load.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusSet([u64; 16]);

impl StatusSet {
    /// The set of `statuses` (those above 1023 are ignored; validation allows 100 to 999).
    pub fn new(statuses: &[u16]) -> StatusSet {
        let mut bits = [0u64; 16];
        for &s in statuses.iter().filter(|s| **s < 1024) {
            bits[usize::from(s / 64)] |= 1 << (s % 64);
        }
        StatusSet(bits)
    }

    /// Whether `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        status < 1024 && self.0[usize::from(status / 64)] & (1 << (status % 64)) != 0
    }
}

/// What active probes do and how their answers count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivePolicy {
    /// HTTP GET or a bare TCP connect.
    pub check_type: CheckType,
    /// The whole probe's time limit.
    pub timeout: Duration,
    /// Probes in flight at once for the upstream.
    pub concurrency: u32,
    /// The path probed.
    pub http_path: String,
    /// Extra probe headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `https` probes: the name sent and verified (none: the target's host).
    pub https_sni: Option<String>,
    /// `https` probes: whether the target's certificate is verified.
    pub https_verify: bool,
    /// Between probes of a healthy target; zero: not probed.
    pub healthy_interval: Duration,
    /// Between probes of an unhealthy target; zero: not probed.
    pub unhealthy_interval: Duration,
    /// Statuses that count as a success.
    pub healthy_statuses: StatusSet,
    /// Statuses that count as an HTTP failure.
    pub unhealthy_statuses: StatusSet,
    /// When the state flips.
    pub thresholds: Thresholds,
}

impl ActivePolicy {
    /// Whether any target is probed at all.
    pub fn enabled(&self) -> bool {
        !(self.healthy_interval.is_zero() && self.unhealthy_interval.is_zero())
    }

    /// What a probe's status says: healthy statuses first, as Kong; a status in neither list
    /// says nothing.
    pub fn classify(&self, status: u16) -> Option<Outcome> {
        classify(&self.healthy_statuses, &self.unhealthy_statuses, status)
    }
}

/// How proxied traffic counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassivePolicy {
    /// `tcp`: every response is a success; only connection failures and timeouts count against.
    pub check_type: CheckType,
    /// Statuses that count as a success.
    pub healthy_statuses: StatusSet,
    /// Statuses that count as an HTTP failure.
    pub unhealthy_statuses: StatusSet,
    /// When the state flips.
    pub thresholds: Thresholds,
    /// How long an ejection lasts before the target is healthy again (doubling); zero: until
    /// a probe or an operator brings it back.
    pub ejection_time: Duration,
}

impl PassivePolicy {
    /// What a proxied response's status says.
    pub fn classify(&self, status: u16) -> Option<Outcome> {
        match self.check_type {
            CheckType::Tcp => Some(Outcome::Success),
            CheckType::Http | CheckType::Https | CheckType::Grpc => {
                classify(&self.healthy_statuses, &self.unhealthy_statuses, status)
            }
        }
    }
}

fn classify(healthy: &StatusSet, unhealthy: &StatusSet, status: u16) -> Option<Outcome> {
    if healthy.contains(status) {
        Some(Outcome::Success)
    } else if unhealthy.contains(status) {
        Some(Outcome::HttpFailure)
    } else {
        None
    }
}

/// An upstream's compiled `healthchecks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Probes; shared with the probe tasks.
    pub active: Arc<ActivePolicy>,
    /// Proxied traffic.
    pub passive: PassivePolicy,
    /// The least percentage of healthy weight for the upstream to take traffic at all.
    pub threshold: u8,
}

impl Policy {
    /// Compiles `config`. Header names and values were validated; any that still do not parse
    /// are left out.
    pub fn new(config: &Healthchecks) -> Policy {
        let a = &config.active;
        let p = &config.passive;
        Policy {
            active: Arc::new(ActivePolicy {
                check_type: a.check_type,
                timeout: a.timeout,
                concurrency: a.concurrency.max(1),
                http_path: a.http_path.clone(),
                headers: a
                    .headers
                    .iter()
                    .flat_map(|(name, values)| values.iter().map(move |v| (name, v)))
                    .filter_map(|(n, v)| Some((HeaderName::try_from(n).ok()?, HeaderValue::try_from(v).ok()?)))
                    .collect(),
                https_sni: a.https_sni.clone(),
                https_verify: a.https_verify_certificate,
                healthy_interval: a.healthy.interval,
                unhealthy_interval: a.unhealthy.interval,
                healthy_statuses: StatusSet::new(&a.healthy.http_statuses),
                unhealthy_statuses: StatusSet::new(&a.unhealthy.http_statuses),
                thresholds: Thresholds {
                    successes: a.healthy.successes,
                    tcp_failures: a.unhealthy.tcp_failures,
                    timeouts: a.unhealthy.timeouts,
                    http_failures: a.unhealthy.http_failures,
                },
            }),
            passive: PassivePolicy {
                check_type: p.check_type,
                healthy_statuses: StatusSet::new(&p.healthy.http_statuses),
                unhealthy_statuses: StatusSet::new(&p.unhealthy.http_statuses),
                thresholds: Thresholds {
                    successes: p.healthy.successes,
                    tcp_failures: p.unhealthy.tcp_failures,
                    timeouts: p.unhealthy.timeouts,
                    http_failures: p.unhealthy.http_failures,
                },
                ejection_time: p.unhealthy.ejection_time,
            },
            threshold: config.threshold,
        }
    }

    /// Whether no check can ever change a target's state (only an operator can): Kong's
    /// `HEALTHCHECKS_OFF`.
    pub fn checks_off(&self) -> bool {
        !self.active.enabled() && self.passive.thresholds.all_off()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets() {
        let s = StatusSet::new(&[200, 302, 999, 2000]);
        assert!(s.contains(200) && s.contains(302) && s.contains(999));
        assert!(!s.contains(201) && !s.contains(2000) && !s.contains(0));
    }

    #[test]
    fn kong_defaults_turn_every_check_off() {
        let policy = Policy::new(&Healthchecks::default());
        assert!(policy.checks_off());
        assert_eq!(policy.passive.classify(200), Some(Outcome::Success));
        assert_eq!(policy.passive.classify(503), Some(Outcome::HttpFailure));
        assert_eq!(policy.passive.classify(404), None, "404 is in neither passive list");
        assert_eq!(policy.active.classify(404), Some(Outcome::HttpFailure));
    }

    #[test]
    fn config_maps_to_thresholds() {
        let config: Healthchecks = serde_json::from_value(serde_json::json!({
            "active": { "healthy": { "interval": 0.5, "successes": 2 }, "unhealthy": { "tcp_failures": 1 },
                        "headers": { "x-probe": ["1", "2"] } },
            "passive": { "type": "tcp", "unhealthy": { "timeouts": 4 } },
            "threshold": 50
        }))
        .unwrap();
        let p = Policy::new(&config);
        assert!(p.active.enabled() && !p.checks_off());
        assert_eq!(p.active.thresholds, Thresholds { successes: 2, tcp_failures: 1, timeouts: 0, http_failures: 0 });
        assert_eq!(p.passive.thresholds.timeouts, 4);
        assert_eq!(p.passive.classify(500), Some(Outcome::Success), "tcp checks do not judge statuses");
        assert_eq!(p.active.headers.len(), 2);
        assert_eq!(p.threshold, 50);
    }
}
