//! Where counters live: the [`Store`] trait both stores implement, and the errors a store returns.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::{Algorithm, Decision, Window};

/// A place that keeps counters and decides requests against them, with the semantics of
/// [`crate::decide`]: allowed only if every window allows; when allowed, every window's counter is
/// incremented by one; when refused, none is. Deciding and incrementing are one atomic step.
pub trait Store: Send + Sync {
    /// Decides one request counted under `key_base` (from [`crate::counter_key`]) at `now`.
    ///
    /// `limits` may come in any order; a window given twice counts once, with the smaller limit.
    /// The decision lists the windows shortest first.
    fn check(
        &self,
        key_base: &str,
        limits: &[(Window, u64)],
        algorithm: Algorithm,
        now: SystemTime,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send;

    /// Whether the store answers: for the gateway's background probe and `/status`.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl<S: Store> Store for Arc<S> {
    fn check(
        &self,
        key_base: &str,
        limits: &[(Window, u64)],
        algorithm: Algorithm,
        now: SystemTime,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send {
        S::check(self, key_base, limits, algorithm, now)
    }

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        S::ping(self)
    }
}

/// Why a store could not decide. Every kind means the same to the caller: there is no decision,
/// nothing was counted for sure (a timed-out call may still have been counted), fall back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No answer within the store's timeout (Redis slow, unreachable, or reconnecting).
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or could not be made (refused, reset, DNS, TLS, auth, cluster down).
    #[error("redis connection failed: {0}")]
    Connection(String),
    /// Redis answered with an error to the script, or with something the script never returns
    /// (e.g. `OOM`, `READONLY`, `BUSY`).
    #[error("redis script failed: {0}")]
    Script(String),
    /// The Redis URL cannot be used (syntax, unknown scheme, `rediss://` in a build without TLS).
    #[error("invalid redis url: {0}")]
    InvalidUrl(String),
}
