//! Plugin configs: `rate-limiting` and `proxy-cache`, with the defaults of the product contract.
//!
//! A plugin is set on a route, on a service, or globally; the most specific one wins. This module
//! only holds and checks the configs; the gateway runs them.

use super::units;
use crate::validate::Errors;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The plugins set on one entity (or globally), by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Plugins {
    /// `rate-limiting`.
    #[serde(rename = "rate-limiting", default, skip_serializing_if = "Option::is_none")]
    pub rate_limiting: Option<RateLimiting>,
    /// `proxy-cache`.
    #[serde(rename = "proxy-cache", default, skip_serializing_if = "Option::is_none")]
    pub proxy_cache: Option<ProxyCache>,
}

impl Plugins {
    /// The plugin names this build knows, as written in config.
    pub const NAMES: [&'static str; 2] = ["rate-limiting", "proxy-cache"];

    /// Whether no plugin is set.
    pub fn is_empty(&self) -> bool {
        self.rate_limiting.is_none() && self.proxy_cache.is_none()
    }

    /// Each plugin of `self`, or else of `fallback`: a route's plugins over its service's.
    pub fn or(&self, fallback: &Plugins) -> Plugins {
        Plugins {
            rate_limiting: self.rate_limiting.clone().or_else(|| fallback.rate_limiting.clone()),
            proxy_cache: self.proxy_cache.clone().or_else(|| fallback.proxy_cache.clone()),
        }
    }

    /// Pushes every problem onto `errors`, under `path` (`routes/<name>.plugins`).
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        if let Some(rl) = &self.rate_limiting {
            rl.validate(&format!("{path}.rate-limiting"), errors);
        }
        if let Some(pc) = &self.proxy_cache {
            pc.validate(&format!("{path}.proxy-cache"), errors);
        }
    }
}

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

/// Where cached responses live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStrategy {
    /// In Redis, shared by every node.
    Redis,
    /// In this node's memory.
    Memory,
}

/// The `proxy-cache` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyCache {
    /// Upstream statuses that may be cached. Default [200, 301, 404].
    pub response_code: Vec<u16>,
    /// Request methods that may be served from cache. Default [GET, HEAD].
    pub request_method: Vec<String>,
    /// Response content types that may be cached. Default [text/plain, application/json].
    pub content_type: Vec<String>,
    /// How long an entry lives, seconds. Default 300.
    #[serde(with = "units::seconds")]
    pub cache_ttl: Duration,
    /// Where entries live; unset: redis when the node has `redis_url`, memory otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<CacheStrategy>,
    /// Honour `Cache-Control` and `Vary`. Default false.
    pub cache_control: bool,
    /// Request headers that are part of the cache key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vary_headers: Vec<String>,
    /// Query parameters that are part of the cache key (none listed: all of them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vary_query_params: Vec<String>,
    /// Responses with a larger body stream through uncached. Default 1 MiB.
    pub max_body_bytes: u64,
}

impl Default for ProxyCache {
    fn default() -> Self {
        ProxyCache {
            response_code: vec![200, 301, 404],
            request_method: vec!["GET".into(), "HEAD".into()],
            content_type: vec!["text/plain".into(), "application/json".into()],
            cache_ttl: Duration::from_secs(300),
            strategy: None,
            cache_control: false,
            vary_headers: Vec::new(),
            vary_query_params: Vec::new(),
            max_body_bytes: 1 << 20,
        }
    }
}

impl ProxyCache {
    /// Pushes every problem onto `errors`, under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        for (i, code) in self.response_code.iter().enumerate() {
            if !(100..=599).contains(code) {
                errors.push(format!("{path}.response_code[{i}]"), "must be an HTTP status, 100 to 599");
            }
        }
        for (i, m) in self.request_method.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                errors.push(format!("{path}.request_method[{i}]"), format!("{m:?} is not an upper-case HTTP method"));
            }
        }
        if self.cache_ttl.is_zero() {
            errors.push(format!("{path}.cache_ttl"), "must be more than 0 s");
        }
        if self.max_body_bytes == 0 {
            errors.push(format!("{path}.max_body_bytes"), "must be at least 1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_plugins_are_refused() {
        let e = serde_json::from_str::<Plugins>(r#"{"rate-limit":{}}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `rate-limit`"), "{e}");
    }

    #[test]
    fn rate_limiting_rules() {
        let rl: RateLimiting = serde_json::from_str(r#"{"second":10,"minute":5,"limit_by":"header"}"#).unwrap();
        assert_eq!(rl.window, RateLimitWindow::Sliding);
        assert!(rl.fault_tolerant);
        let mut errors = Errors::default();
        rl.validate("p", &mut errors);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["p.minute", "p.header_name"]);
        let mut errors = Errors::default();
        serde_json::from_str::<RateLimiting>("{}").unwrap().validate("p", &mut errors);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn proxy_cache_defaults() {
        let pc: ProxyCache = serde_json::from_str(r#"{"cache_ttl":30}"#).unwrap();
        assert_eq!(pc.cache_ttl, Duration::from_secs(30));
        assert_eq!(pc.response_code, [200, 301, 404]);
        assert_eq!(pc.max_body_bytes, 1 << 20);
    }

    #[test]
    fn route_plugins_win_over_service_plugins() {
        let route: Plugins = serde_json::from_str(r#"{"rate-limiting":{"minute":1}}"#).unwrap();
        let service: Plugins = serde_json::from_str(r#"{"rate-limiting":{"minute":9},"proxy-cache":{}}"#).unwrap();
        let merged = route.or(&service);
        assert_eq!(merged.rate_limiting.unwrap().minute, Some(1));
        assert!(merged.proxy_cache.is_some());
    }
}
