//! Envoy's retry budget, counted per upstream on one node: retries in flight may not exceed a
//! share of the requests in flight that are not retrying (or a floor, for low traffic), so a
//! failing upstream is sent at most that share more tries than clients sent it.
//!
//! A request counts as "first try" until it is admitted to retry; from then until it ends it
//! holds one retry slot, whatever number of tries it makes. Counting retrying requests apart
//! (Envoy counts them in both) is what makes the share exact: with every try failing, retries
//! stay within `percent` of first tries.

use config_sync::model::RetryBudget;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// One upstream's counts.
#[derive(Debug)]
pub(crate) struct Budget {
    config: RetryBudget,
    first_tries: AtomicU32,
    retries: AtomicU32,
}

/// Whether `retries` retrying requests fit beside `first_tries` others.
pub(crate) fn fits(config: RetryBudget, first_tries: u32, retries: u32) -> bool {
    let share = u64::from(first_tries) * u64::from(config.percent) / 100;
    u64::from(retries) <= share.max(u64::from(config.min_retries))
}

impl Budget {
    pub(crate) fn new(config: RetryBudget) -> Arc<Budget> {
        Arc::new(Budget { config, first_tries: AtomicU32::new(0), retries: AtomicU32::new(0) })
    }

    /// Counts a request in flight until the returned guard drops.
    pub(crate) fn request(self: &Arc<Self>) -> InFlight {
        self.first_tries.fetch_add(1, Ordering::Relaxed);
        InFlight { budget: self.clone(), retrying: false }
    }
}

/// A request in flight to the upstream.
#[derive(Debug)]
pub(crate) struct InFlight {
    budget: Arc<Budget>,
    retrying: bool,
}

impl InFlight {
    /// Whether this request may retry: true once admitted, until it ends.
    pub(crate) fn admit_retry(&mut self) -> bool {
        if self.retrying {
            return true;
        }
        let b = &self.budget;
        let first = b.first_tries.fetch_sub(1, Ordering::Relaxed) - 1;
        let retries = b.retries.fetch_add(1, Ordering::Relaxed) + 1;
        if fits(b.config, first, retries) {
            self.retrying = true;
            return true;
        }
        b.retries.fetch_sub(1, Ordering::Relaxed);
        b.first_tries.fetch_add(1, Ordering::Relaxed);
        false
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let counter = if self.retrying { &self.budget.retries } else { &self.budget.first_tries };
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(percent: u32, min_retries: u32) -> Arc<Budget> {
        Budget::new(RetryBudget { percent, min_retries })
    }

    #[test]
    fn retries_stay_within_the_share_of_first_tries() {
        let b = budget(20, 0);
        let mut requests: Vec<_> = (0..11).map(|_| b.request()).collect();
        // 10 first tries beside one retry: 20% of 10 allows 2.
        let admitted = requests.iter_mut().filter_map(|r| r.admit_retry().then_some(())).count();
        assert_eq!(admitted, 1, "the second would leave 9 first tries for 2 retries: 20% of 9 is 1");
        assert!(requests[0].admit_retry(), "an admitted request keeps its slot");
        drop(requests);
        assert_eq!((b.first_tries.load(Ordering::Relaxed), b.retries.load(Ordering::Relaxed)), (0, 0));
    }

    #[test]
    fn the_floor_allows_retries_at_low_traffic_and_zero_allows_none() {
        let b = budget(20, 3);
        let mut requests: Vec<_> = (0..4).map(|_| b.request()).collect();
        let admitted: Vec<_> = requests.iter_mut().map(InFlight::admit_retry).collect();
        assert_eq!(admitted, [true, true, true, false]);
        let b = budget(0, 0);
        assert!(!b.request().admit_retry());
        assert!(fits(RetryBudget { percent: 100, min_retries: 0 }, 5, 5));
        assert!(!fits(RetryBudget { percent: 100, min_retries: 0 }, 5, 6));
    }
}
