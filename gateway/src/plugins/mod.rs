//! Plugins that run on the request path: `proxy-cache` ([`cache`]).

pub mod cache;
