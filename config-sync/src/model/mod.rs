//! The entities an operator configures, with serde and the defaults of the product contract.
//!
//! Every entity deserializes from one JSON object (an etcd value, or one item of the declarative
//! file) and rejects unknown fields, so a typo is an error rather than a silently ignored key.
//! `validate` on each entity checks what serde cannot (ranges, formats, cross-field rules) and
//! pushes every problem it finds, with its path, instead of stopping at the first.

mod certificate;
mod consumer;
mod healthchecks;
mod plugins;
mod route;
mod service;
pub(crate) mod units;
mod upstream;

pub use certificate::{CaCertificate, Certificate, Loaded as LoadedCertificate};
pub use consumer::{
    BasicAuthCredential, Consumer, Credential, CredentialKind, Credentials, JwtAlgorithm, JwtSecret, KeyAuthCredential,
    Password, MAX_KEY_LEN, REDACTED,
};
pub use healthchecks::{
    ActiveCheck, ActiveHealthy, ActiveUnhealthy, CheckType, Healthchecks, PassiveCheck, PassiveHealthy,
    PassiveUnhealthy, MAX_EJECTION_TIME,
};
pub use plugins::{
    exact_origin, parse_ip_or_cidr, redact_secrets, Acl, BasicAuth, CacheStrategy, Claim, CorrelationId, Cors,
    Endpoint, HttpLog, IdGenerator, IpRestriction, Jwt, KeyAuth, LimitBy, LogMethod, LogQueue, PluginConfig, Plugins,
    ProxyCache, RateLimitPolicy, RateLimitWindow, RateLimiting, RequestSizeLimiting, SizeUnit, SplitMatch, SplitRule,
    TrafficSplit, WeightedUpstream, DEFAULT_CORS_METHODS,
};
pub use plugins::{
    has_template, parse_template, split_entry, JsonType, RequestEntries, RequestReplace, RequestTransformer,
    ResponseEntries, ResponseNames, ResponseTransformer, TemplatePiece,
};
pub use route::{Protocol, Route};
pub use service::{Backoff, Service, ServiceUrl};
pub use upstream::{Algorithm, HashOn, RetryBudget, Target, Upstream};

use crate::validate::Errors;

/// The longest entity name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Checks an entity name: `[A-Za-z0-9._~-]`, 1 to 128 bytes (it is the last segment of an etcd key).
pub fn check_name(name: &str, path: &str, errors: &mut Errors) {
    if name.is_empty() {
        errors.push(path, "is required");
    } else if name.len() > MAX_NAME_LEN {
        errors.push(path, format!("must be at most {MAX_NAME_LEN} bytes long"));
    } else if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "._~-".contains(*c))) {
        errors.push(path, format!("name {name:?} has {bad:?}; allowed are A-Z a-z 0-9 . _ ~ -"));
    }
}
