//! The plugin pipeline and the plugins that run on it.
//!
//! - [`pipeline`]: the `Plugin` trait, its phases, the request context, and the chain a route
//!   runs.
//! - [`registry`]: the order plugins run in, and how a config becomes a running plugin.
//! - [`auth`]: consumers and `key-auth`, `basic-auth`, `jwt`, `acl`; [`identity`]: who they
//!   found the caller to be.
//! - [`rate_limit`]: `rate-limiting`; [`cache`]: `proxy-cache`; [`http_log`]: `http-log`
//!   (its records are made by `crate::request_log`).
//! - [`cors`], [`ip_restriction`], [`correlation_id`], [`request_size_limiting`],
//!   [`traffic_split`]: the traffic plugins of the same names; [`transformer`]:
//!   `request-transformer` and `response-transformer`.

pub mod auth;
pub mod cache;
pub mod correlation_id;
pub mod cors;
pub mod http_log;
pub mod identity;
pub mod ip_restriction;
pub mod pipeline;
pub mod rate_limit;
pub mod registry;
pub mod request_size_limiting;
#[cfg(test)]
mod testing;
pub mod traffic_split;
pub mod transformer;

pub use registry::Shared;
