//! The `proxy-cache` plugin: whole responses kept for a while and served again, in Redis (shared
//! by the cluster) or in this node's memory.
//!
//! - [`key`]: the cache key of a request.
//! - [`policy`]: what may be served from and stored in the cache.
//! - [`freshness`]: RFC 9111's freshness, age and the use of stale responses, without I/O.
//! - [`revalidate`]: conditional requests, and a 304's refresh of a stored response.
//! - [`invalidate`]: what a successful unsafe method drops.
//! - `range`: the part of a stored response a `Range` asks for.
//! - [`entry`]: a cached response and its encoding.
//! - [`memory`]: the in-memory store; [`store`]: memory, or Redis with a memory level in front,
//!   and one fill per key across the cluster.
//! - [`tee`]: a response body copied into the cache as it streams to the client.
//! - [`step`]: the cache on the request path: before forwarding, and after.
//! - `plugin`: both steps as the pipeline runs them.

pub mod entry;
pub(crate) mod freshness;
pub(crate) mod invalidate;
pub mod key;
pub mod memory;
mod plugin;
pub mod policy;
mod range;
pub(crate) mod revalidate;
pub mod step;
pub mod store;
pub mod tee;

pub(crate) use plugin::CachePlugin;
pub use store::{Caches, Lookup};
