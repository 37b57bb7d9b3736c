//! Rate limiting for gateway nodes: the algorithms, and the stores that keep their counters.
//!
//! How the parts fit:
//! - `window`: [`Window`] (second, minute, hour, day, on calendar boundaries like Kong's) and
//!   [`Algorithm`] (fixed windows, or the two-counter sliding estimate of APISIX).
//! - `algorithm`: the sans-IO core. [`decide`] turns the windows' counters and `now` into a
//!   [`Decision`]; [`Counters`] is one key's state machine. A request is allowed only if every
//!   window allows it; a refusal increments nothing, an allowance increments every window.
//! - `decision`: [`Decision`] and [`WindowDecision`]: allowed, and per window the limit, what
//!   remains and when it resets, plus `retry_after` for a refusal — what the headers need.
//! - `key`: [`counter_key`], the counter key from the plugin's identity and the `limit_by` value,
//!   never from the node, with a Redis Cluster hash tag that neither can break.
//! - `store`: the [`Store`] trait and [`StoreError`].
//! - `memory`: [`MemoryStore`], node-local counters (the `local` policy and the fallback).
//! - `connection`: [`RedisConnection`], a multiplexed, self-reconnecting connection to a
//!   [`RedisTarget`]: one server, or a Redis Cluster (the gateway's response cache uses one too).
//! - `redis`: [`RedisStore`], counters shared by the cluster: one atomic Lua script per call,
//!   called by SHA over a [`RedisConnection`], every call bounded by a timeout.
//! - `coalesce`: concurrent checks of one key joined into the next call, decided in order.
//! - `refusals`: a key Redis refused, refused here with no call for as long as that is known to
//!   hold (until its retry-after, or its shortest window's end).
//! - `limiter`: [`Limiter`], what the gateway calls per request.
//!
//! Cargo features: `tls` (off by default) lets [`RedisConnection`] use `rediss://` URLs, with rustls and
//! its `ring` provider (installed as the process default unless one is already installed) and the
//! system's root certificates (`SSL_CERT_FILE` is honoured).
//!
//! The fallback policy (Redis down: limit locally with [`per_member`] limits, or answer 503) is the
//! gateway's; this crate makes both paths one call.
//!
//! ```
//! # async fn example() -> Result<(), ratelimit::StoreError> {
//! use std::time::SystemTime;
//! use ratelimit::{Algorithm, Limiter, MemoryStore, Window};
//!
//! let limiter = Limiter::new(MemoryStore::new());
//! let limits = [(Window::Second, 10), (Window::Minute, 100)];
//! let decision = limiter.check("route:orders:3f2a", "10.0.0.7", &limits, Algorithm::Sliding, SystemTime::now()).await?;
//! if !decision.allowed {
//!     println!("429, Retry-After: {}", decision.retry_after.unwrap_or_default().as_millis().div_ceil(1000));
//! }
//! # Ok(()) }
//! ```

mod algorithm;
mod coalesce;
mod connection;
mod decision;
mod key;
mod limiter;
mod memory;
mod redis;
mod refusals;
mod store;
mod window;

pub use self::algorithm::{decide, per_member, Counters, WindowCounts};
pub use self::connection::{Primary, RedisConfig, RedisConnection, RedisTarget};
pub use self::decision::{Decision, WindowDecision};
pub use self::key::{counter_key, window_key};
pub use self::limiter::Limiter;
pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;
pub use self::store::{Store, StoreError};
pub use self::window::{Algorithm, Window};
