//! Plugins that run on the request path: `rate-limiting` ([`rate_limit`]) and `proxy-cache`
//! ([`cache`]).

pub mod cache;
pub mod rate_limit;
