//! The `proxy-cache` plugin's config.

use crate::model::units;
use crate::validate::Errors;
use serde::{Deserialize, Serialize};
use std::time::Duration;

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
    /// Honour `Cache-Control` and `Vary` as a shared cache by RFC 9111. Default false.
    pub cache_control: bool,
    /// With `cache_control`: a response's `CDN-Cache-Control` (RFC 9213), when it has one,
    /// decides instead of its `Cache-Control` and `Expires`. Default false.
    pub cdn_cache_control: bool,
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
            cdn_cache_control: false,
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
        if self.cdn_cache_control && !self.cache_control {
            errors.push(
                format!("{path}.cdn_cache_control"),
                "needs cache_control: true (it is read only by RFC 9111 rules)",
            );
        }
        if self.max_body_bytes == 0 {
            errors.push(format!("{path}.max_body_bytes"), "must be at least 1");
        }
    }
}
