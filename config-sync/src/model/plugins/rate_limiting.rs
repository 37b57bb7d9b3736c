//! The `rate-limiting` plugin's config.

use crate::validate::Errors;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a rate limit counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitBy {
    /// The client's IP address (the default).
    #[default]
    Ip,
    /// The value of `header_name`.
    Header,
    /// The service: one counter for everyone.
    Service,
    /// The route: one counter for everyone.
    Route,
    /// The request path.
    Path,
    /// The authenticated consumer (the client's address when no one is authenticated).
    Consumer,
    /// The credential the consumer authenticated with (likewise).
    Credential,
}

/// Where rate-limit counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitPolicy {
    /// In Redis, shared by every node of the cluster.
    Redis,
    /// In this node's memory.
    Local,
}

/// How a rate-limit window counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitWindow {
    /// Windows on calendar boundaries, like Kong's.
    Fixed,
    /// Two fixed windows weighted by the time into the current one, like APISIX's (the default).
    #[default]
    Sliding,
}

/// The `rate-limiting` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiting {
    /// Requests allowed per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second: Option<u64>,
    /// Requests allowed per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minute: Option<u64>,
    /// Requests allowed per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<u64>,
    /// Requests allowed per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<u64>,
    /// What requests are counted by. Default ip.
    #[serde(default)]
    pub limit_by: LimitBy,
    /// The header for `limit_by: header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
    /// Where counters live; unset: redis when the node has `redis_url`, local otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RateLimitPolicy>,
    /// Fixed or sliding windows. Default sliding.
    #[serde(default)]
    pub window: RateLimitWindow,
    /// Redis unreachable: true keeps limiting locally (limit divided by live members); false
    /// answers 503. Default true.
    #[serde(default = "yes")]
    pub fault_tolerant: bool,
    /// Leave the rate-limit headers off responses. Default false.
    #[serde(default)]
    pub hide_client_headers: bool,
}

fn yes() -> bool {
    true
}

impl RateLimiting {
    /// The limits that are set, smallest window first, with the window's name and length.
    pub fn limits(&self) -> impl Iterator<Item = (&'static str, Duration, u64)> + '_ {
        [
            ("second", Duration::from_secs(1), self.second),
            ("minute", Duration::from_secs(60), self.minute),
            ("hour", Duration::from_secs(3_600), self.hour),
            ("day", Duration::from_secs(86_400), self.day),
        ]
        .into_iter()
        .filter_map(|(name, len, limit)| limit.map(|l| (name, len, l)))
    }

    /// Pushes every problem onto `errors`, under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        let limits: Vec<_> = self.limits().collect();
        if limits.is_empty() {
            errors.push(path, "needs at least one of second, minute, hour, day");
        }
        for (name, _, limit) in &limits {
            if *limit == 0 {
                errors.push(format!("{path}.{name}"), "must be at least 1");
            }
        }
        // Kong's rule: a longer window may not allow fewer requests than a shorter one.
        for pair in limits.windows(2) {
            let ((short, _, a), (long, _, b)) = (pair[0], pair[1]);
            if b < a {
                errors.push(
                    format!("{path}.{long}"),
                    format!("the limit for {long} ({b}) is lower than for {short} ({a})"),
                );
            }
        }
        if self.limit_by == LimitBy::Header && self.header_name.as_deref().is_none_or(str::is_empty) {
            errors.push(format!("{path}.header_name"), "is required when limit_by is header");
        }
    }
}
