//! The `proxy-cache` plugin: whole responses kept for a while and served again, in Redis (shared
//! by the cluster) or in this node's memory.
//!
//! - [`key`]: the cache key of a request.
//! - [`policy`]: what may be served from and stored in the cache.
//! - [`entry`]: a cached response and its encoding.
//! - [`memory`]: the in-memory store; [`store`]: memory or Redis, and one fill per key.
//! - [`tee`]: a response body copied into the cache as it streams to the client.
//! - [`step`]: the cache on the request path: before forwarding, and after.
//! - `plugin`: both steps as the pipeline runs them.

pub mod entry;
pub mod key;
pub mod memory;
mod plugin;
pub mod policy;
pub mod step;
pub mod store;
pub mod tee;

pub(crate) use plugin::CachePlugin;
pub use store::{Caches, Lookup};
