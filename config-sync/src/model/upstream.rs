//! An upstream (a named, balanced set of targets) and its targets.

use super::{check_name, service::check_host, service::split_host_port, Healthchecks};
use crate::validate::Errors;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How an upstream spreads requests over its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Smooth weighted round-robin (nginx's), the default.
    #[default]
    RoundRobin,
    /// The target with the fewest requests in flight relative to its weight.
    LeastConnections,
    /// A ring of `slots` slots owned by targets in proportion to their weight.
    ConsistentHashing,
    /// Peak-EWMA latency with the power of two random choices.
    Latency,
}

/// What consistent hashing hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// No key: requests spread over the ring's slots.
    #[default]
    None,
    /// The client's IP address.
    Ip,
    /// A request header (`hash_on_header`).
    Header,
    /// A cookie (`hash_on_cookie`).
    Cookie,
    /// The request path.
    Path,
    /// A query argument (`hash_on_query_arg`).
    QueryArg,
}

/// A named set of targets that services balance over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// The upstream's name; services refer to it as the host of their `url`.
    #[serde(default)]
    pub name: String,
    /// The balancing algorithm. Default round-robin.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Slots on the consistent-hashing ring, 10 to 65536. Default 10000.
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// What consistent hashing hashes. Default none.
    #[serde(default)]
    pub hash_on: HashOn,
    /// What to hash when `hash_on` gives nothing (the header, cookie or argument is absent).
    #[serde(default)]
    pub hash_fallback: HashOn,
    /// The header for `hash_on: header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on_header: Option<String>,
    /// The cookie for `hash_on: cookie`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on_cookie: Option<String>,
    /// The query argument for `hash_on: query_arg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on_query_arg: Option<String>,
    /// The header for `hash_fallback: header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_fallback_header: Option<String>,
    /// The cookie for `hash_fallback: cookie`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_fallback_cookie: Option<String>,
    /// The query argument for `hash_fallback: query_arg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_fallback_query_arg: Option<String>,
    /// Active and passive health checks, with Kong's schema and defaults.
    #[serde(default)]
    pub healthchecks: Healthchecks,
    /// Seconds (fractions allowed, 0 to 3600) over which a target that turns healthy again
    /// grows from no share of the traffic to its full share, linearly (Envoy's slow start).
    /// 0 (default): full share at once.
    #[serde(default, with = "super::units::seconds", skip_serializing_if = "Duration::is_zero")]
    pub slow_start: Duration,
    /// How many retries may be in flight to this upstream from one node (Envoy's retry budget).
    #[serde(default, skip_serializing_if = "RetryBudget::is_default")]
    pub retry_budget: RetryBudget,
}

/// Retries in flight to an upstream on a node may not exceed `percent` of the requests in
/// flight to it that are not retrying, or `min_retries` when that is more; a retry past it is
/// not made. `{percent: 0, min_retries: 0}` turns retries to this upstream off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// 0 to 100. Default 20.
    #[serde(default = "default_budget_percent")]
    pub percent: u32,
    /// Retries always allowed in flight, for low traffic. Default 3.
    #[serde(default = "default_min_retries")]
    pub min_retries: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget { percent: default_budget_percent(), min_retries: default_min_retries() }
    }
}

impl RetryBudget {
    fn is_default(&self) -> bool {
        *self == RetryBudget::default()
    }
}

fn default_budget_percent() -> u32 {
    20
}

fn default_min_retries() -> u32 {
    3
}

fn default_slots() -> u32 {
    10_000
}

/// One backend address of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `host:port`; in etcd it is the last key segment and the body may repeat it.
    #[serde(default)]
    pub target: String,
    /// Share of traffic, 0 to 65535; 0 keeps the target present but never chosen. Default 100.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Chosen only while no other (non-backup) target of the upstream is healthy (nginx's
    /// `backup`). Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub backup: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn default_weight() -> u32 {
    100
}

impl Upstream {
    /// Pushes every problem with this upstream onto `errors`, under `path` (`upstreams/<name>`).
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        check_name(&self.name, &format!("{path}.name"), errors);
        if self.name.bytes().any(|b| b.is_ascii_uppercase()) {
            // Services name an upstream as the host of their url, and hosts have no case.
            errors.push(format!("{path}.name"), "must be lower case: services refer to it as a host name");
        }
        if !(10..=65_536).contains(&self.slots) {
            errors.push(format!("{path}.slots"), "must be 10 to 65536");
        }
        if self.slow_start > Duration::from_secs(3600) {
            errors.push(format!("{path}.slow_start"), "must be 0 to 3600 s");
        }
        if self.retry_budget.percent > 100 {
            errors.push(format!("{path}.retry_budget.percent"), "must be 0 to 100");
        }
        let needs = |on: HashOn,
                     prefix: &str,
                     header: &Option<String>,
                     cookie: &Option<String>,
                     arg: &Option<String>,
                     errors: &mut Errors| {
            let (field, value) = match on {
                HashOn::Header => ("header", header),
                HashOn::Cookie => ("cookie", cookie),
                HashOn::QueryArg => ("query_arg", arg),
                _ => return,
            };
            if value.as_deref().is_none_or(str::is_empty) {
                errors.push(format!("{path}.{prefix}_{field}"), format!("is required when {prefix} is {field}"));
            }
        };
        needs(self.hash_on, "hash_on", &self.hash_on_header, &self.hash_on_cookie, &self.hash_on_query_arg, errors);
        needs(
            self.hash_fallback,
            "hash_fallback",
            &self.hash_fallback_header,
            &self.hash_fallback_cookie,
            &self.hash_fallback_query_arg,
            errors,
        );
        if self.hash_on == HashOn::None && self.hash_fallback != HashOn::None {
            errors.push(format!("{path}.hash_fallback"), "needs hash_on to be set");
        }
        if self.hash_on != HashOn::None && self.hash_on == self.hash_fallback && self.hash_on != HashOn::Header {
            errors.push(format!("{path}.hash_fallback"), "must differ from hash_on");
        }
        if self.hash_on != HashOn::None && self.algorithm != Algorithm::ConsistentHashing {
            errors.push(format!("{path}.hash_on"), "only applies to algorithm consistent-hashing");
        }
        self.healthchecks.validate(&format!("{path}.healthchecks"), errors);
    }
}

impl Target {
    /// Pushes every problem with this target onto `errors`, under `path`
    /// (`upstreams/<upstream>/targets/<host:port>`).
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        match split_host_port(&self.target) {
            Ok((host, Some(_))) => {
                if let Err(e) = check_host(&host) {
                    errors.push(format!("{path}.target"), e);
                }
            }
            Ok((_, None)) => errors.push(format!("{path}.target"), "must be host:port"),
            Err(e) => errors.push(format!("{path}.target"), e),
        }
        if self.weight > 65_535 {
            errors.push(format!("{path}.weight"), "must be 0 to 65535");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let u: Upstream = serde_json::from_str(r#"{"name":"u"}"#).unwrap();
        assert_eq!((u.algorithm, u.slots, u.hash_on), (Algorithm::RoundRobin, 10_000, HashOn::None));
        let t: Target = serde_json::from_str(r#"{"target":"a:1"}"#).unwrap();
        assert_eq!(t.weight, 100);
    }

    #[test]
    fn hashing_fields_are_checked() {
        let u: Upstream = serde_json::from_str(
            r#"{"name":"U","algorithm":"consistent-hashing","hash_on":"header","hash_fallback":"cookie","slots":5}"#,
        )
        .unwrap();
        let mut errors = Errors::default();
        u.validate("upstreams/u", &mut errors);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["upstreams/u.name", "upstreams/u.slots", "upstreams/u.hash_on_header", "upstreams/u.hash_fallback_cookie"]
        );
    }

    #[test]
    fn targets_need_host_and_port() {
        for (target, ok) in [("a:1", true), ("[::1]:80", true), ("a", false), ("a:0", false), ("a b:1", false)] {
            let mut errors = Errors::default();
            Target { target: target.into(), weight: 1, backup: false }.validate("t", &mut errors);
            assert_eq!(errors.is_empty(), ok, "{target}");
        }
    }
}
