//! [`Limiter`]: what the gateway calls per request, a store plus the key scheme.

use std::time::SystemTime;

use crate::{counter_key, Algorithm, Decision, Store, StoreError, Window};

/// Checks requests against a [`Store`], building the counter key from what is limited.
///
/// The fallback (Redis down: limit locally with each limit divided by the live members, see
/// [`crate::per_member`]; or answer 503) is the gateway's to choose; it holds a
/// `Limiter<RedisStore>` and a `Limiter<MemoryStore>` and calls the same `check` on either.
#[derive(Debug, Clone, Default)]
pub struct Limiter<S> {
    store: S,
}

impl<S: Store> Limiter<S> {
    /// A limiter over `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Decides one request at `now`: `identity` says which limit this is (e.g.
    /// `route:orders:<digest of the plugin's config>`, the same on every node, never the node's
    /// own name) and `value` whose requests are counted (the `limit_by` value: an IP, a header, …).
    pub async fn check(
        &self,
        identity: &str,
        value: &str,
        limits: &[(Window, u64)],
        algorithm: Algorithm,
        now: SystemTime,
    ) -> Result<Decision, StoreError> {
        self.store.check(&counter_key(identity, value), limits, algorithm, now).await
    }

    /// Whether the store answers (for a background probe and `/status`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::{per_member, MemoryStore};

    #[tokio::test]
    async fn counts_per_identity_and_value() {
        let limiter = Limiter::new(MemoryStore::new());
        let now = UNIX_EPOCH + Duration::from_secs(1_704_067_200);
        let limits = [(Window::Minute, 1)];
        assert!(limiter.check("route:a", "1.2.3.4", &limits, Algorithm::Fixed, now).await.unwrap().allowed);
        assert!(!limiter.check("route:a", "1.2.3.4", &limits, Algorithm::Fixed, now).await.unwrap().allowed);
        assert!(limiter.check("route:a", "5.6.7.8", &limits, Algorithm::Fixed, now).await.unwrap().allowed);
        assert!(limiter.check("route:b", "1.2.3.4", &limits, Algorithm::Fixed, now).await.unwrap().allowed);
        assert_eq!(limiter.ping().await, Ok(()));
    }

    #[tokio::test]
    async fn the_fallback_runs_the_same_check_with_divided_limits() {
        let fallback = Limiter::new(MemoryStore::new());
        let now = UNIX_EPOCH + Duration::from_secs(1_704_067_200);
        let local = per_member(&[(Window::Minute, 10)], 3);
        let mut allowed = 0;
        for _ in 0..10 {
            allowed +=
                u32::from(fallback.check("route:a", "ip", &local, Algorithm::Sliding, now).await.unwrap().allowed);
        }
        assert_eq!(allowed, 4, "ceil(10 / 3)");
    }
}
