//! Rate limiting for gateway nodes.
//!
//! This crate will own the sans-IO rate-limit algorithms (fixed and sliding windows) and their
//! stores: Redis, shared by the whole cluster, and in memory, the local fallback. It is filled
//! by the "Cluster-wide rate limiting and response cache in Redis" issue.
