//! Concurrent checks of one counter key, joined into one call of the store.
//!
//! Under load, many requests of one route or client are decided at the same moment. Sent one by
//! one, each costs Redis a script run and the node a round trip, and on a small machine Redis's
//! CPU becomes the limit. Instead, while one call for a key is in flight, later checks of that key
//! queue here; when the call returns, the whole queue goes out as the next call, which decides its
//! `n` requests in order as if they had come one after another. Each call is still one atomic step
//! on the server, so counts stay exact across nodes; a request waits at most for the call in
//! flight and then its own.
//!
//! [`Queues`] holds only the bookkeeping (sans-IO): who waits for which key, and whether a driver
//! is draining that key. An entry exists exactly while a driver for its key runs; [`Drain`] is
//! that driver's hold on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tokio::sync::oneshot;

use crate::{Algorithm, Decision, StoreError, Window};

/// Where one waiting check gets its decision.
pub(crate) type Reply = oneshot::Sender<Result<Decision, StoreError>>;

/// The checks of one key that go out in one call.
#[derive(Debug)]
pub(crate) struct Batch {
    pub limits: Vec<(Window, u64)>,
    pub algorithm: Algorithm,
    /// The latest `now` among the batch's checks: the call decides them all at that moment.
    pub now: SystemTime,
    /// In arrival order; the first ones are the ones allowed when not all fit.
    pub waiters: Vec<Reply>,
}

/// What [`Queues::enqueue`] did with a check.
#[derive(Debug)]
pub(crate) enum Enqueued {
    /// No call for the key was in flight: the caller must start a driver for it.
    Lead,
    /// It joined the queue of a running driver.
    Joined,
    /// A check of the key with other limits or algorithm is queued (a config change in flight):
    /// the caller decides this one alone.
    Alone,
}

/// The waiting checks, per key.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    pending: Mutex<HashMap<String, Batch>>,
}

impl Queues {
    /// Queues one check of `key`.
    pub fn enqueue(
        &self,
        key: &str,
        limits: &[(Window, u64)],
        algorithm: Algorithm,
        now: SystemTime,
        reply: Reply,
    ) -> Enqueued {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        match pending.get_mut(key) {
            Some(batch) if batch.algorithm == algorithm && batch.limits == limits => {
                batch.now = batch.now.max(now);
                batch.waiters.push(reply);
                Enqueued::Joined
            }
            // An idle entry (its driver between calls) takes the new shape.
            Some(batch) if batch.waiters.is_empty() => {
                *batch = Batch { limits: limits.to_vec(), algorithm, now, waiters: vec![reply] };
                Enqueued::Joined
            }
            Some(_) => Enqueued::Alone,
            None => {
                let batch = Batch { limits: limits.to_vec(), algorithm, now, waiters: vec![reply] };
                pending.insert(key.to_owned(), batch);
                Enqueued::Lead
            }
        }
    }

    /// For the driver of `key`: the checks queued since its last call, or `None` (and the key's
    /// entry removed, so the next check leads) when there are none.
    pub fn take(&self, key: &str) -> Option<Batch> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let batch = pending.get_mut(key)?;
        if batch.waiters.is_empty() {
            pending.remove(key);
            return None;
        }
        let waiters = std::mem::take(&mut batch.waiters);
        let now = std::mem::replace(&mut batch.now, SystemTime::UNIX_EPOCH);
        Some(Batch { limits: batch.limits.clone(), algorithm: batch.algorithm, now, waiters })
    }
}

/// The duty to drain one key's queue, held by its driver from [`Enqueued::Lead`] until the queue
/// is empty. A driver dropped before that (a panic, the runtime shutting down) removes the key's
/// entry, so its waiters hear at once that no answer is coming and the next check leads afresh.
#[derive(Debug)]
pub(crate) struct Drain {
    queues: Arc<Queues>,
    key: String,
    done: bool,
}

impl Drain {
    /// For the check that was told [`Enqueued::Lead`] for `key`.
    pub fn new(queues: Arc<Queues>, key: &str) -> Drain {
        Drain { queues, key: key.to_owned(), done: false }
    }

    /// The key drained.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The next batch ([`Queues::take`]); after `None` the duty is over.
    pub fn next(&mut self) -> Option<Batch> {
        let batch = self.queues.take(&self.key);
        self.done = batch.is_none();
        batch
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        if !self.done {
            self.queues.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn reply() -> Reply {
        oneshot::channel().0
    }

    const MINUTE: [(Window, u64); 1] = [(Window::Minute, 10)];

    #[test]
    fn the_first_check_leads_and_later_ones_join_until_the_driver_drains() {
        let queues = Queues::default();
        assert!(matches!(queues.enqueue("k", &MINUTE, Algorithm::Fixed, at(5), reply()), Enqueued::Lead));
        assert!(matches!(queues.enqueue("other", &MINUTE, Algorithm::Fixed, at(5), reply()), Enqueued::Lead));
        let first = queues.take("k").expect("the leader's batch");
        assert_eq!(first.waiters.len(), 1);
        // While that call is in flight, two more join, at different moments.
        assert!(matches!(queues.enqueue("k", &MINUTE, Algorithm::Fixed, at(7), reply()), Enqueued::Joined));
        assert!(matches!(queues.enqueue("k", &MINUTE, Algorithm::Fixed, at(6), reply()), Enqueued::Joined));
        let second = queues.take("k").expect("the queued batch");
        assert_eq!((second.waiters.len(), second.now), (2, at(7)), "decided at the latest moment");
        // Nothing more: the entry goes, and the next check leads again.
        assert!(queues.take("k").is_none());
        assert!(queues.take("k").is_none());
        assert!(matches!(queues.enqueue("k", &MINUTE, Algorithm::Fixed, at(8), reply()), Enqueued::Lead));
    }

    #[test]
    fn a_driver_dropped_midway_frees_its_key_and_its_waiters() {
        let queues = Arc::new(Queues::default());
        assert!(matches!(queues.enqueue("k", &MINUTE, Algorithm::Fixed, at(5), reply()), Enqueued::Lead));
        let mut drain = Drain::new(queues.clone(), "k");
        assert!(drain.next().is_some());
        let (waiter, mut answer) = oneshot::channel();
        assert!(matches!(queues.enqueue("k", &MINUTE, Algorithm::Fixed, at(5), waiter), Enqueued::Joined));
        drop(drain);
        assert!(answer.try_recv().is_err_and(|e| e == oneshot::error::TryRecvError::Closed), "told at once");
        assert!(matches!(queues.enqueue("k", &MINUTE, Algorithm::Fixed, at(6), reply()), Enqueued::Lead));

        // A driver that finished leaves alone the entry of the driver that followed it.
        let mut drain = Drain::new(queues.clone(), "k");
        assert!(drain.next().is_some());
        assert!(drain.next().is_none());
        assert!(matches!(queues.enqueue("k", &MINUTE, Algorithm::Fixed, at(7), reply()), Enqueued::Lead));
        drop(drain);
        assert!(matches!(queues.enqueue("k", &MINUTE, Algorithm::Fixed, at(7), reply()), Enqueued::Joined));
    }

    #[test]
    fn checks_with_other_limits_are_not_joined() {
        let queues = Queues::default();
        assert!(matches!(queues.enqueue("k", &MINUTE, Algorithm::Fixed, at(5), reply()), Enqueued::Lead));
        assert!(matches!(queues.enqueue("k", &MINUTE, Algorithm::Sliding, at(5), reply()), Enqueued::Alone));
        let other = [(Window::Minute, 20)];
        assert!(matches!(queues.enqueue("k", &other, Algorithm::Fixed, at(5), reply()), Enqueued::Alone));
        let batch = queues.take("k").expect("the leader's batch");
        assert_eq!((batch.waiters.len(), batch.limits.as_slice()), (1, &MINUTE[..]));
        // Between calls the entry is idle and takes whatever shape comes next.
        assert!(matches!(queues.enqueue("k", &other, Algorithm::Sliding, at(6), reply()), Enqueued::Joined));
        let batch = queues.take("k").expect("the next batch");
        assert_eq!((batch.algorithm, batch.limits.as_slice()), (Algorithm::Sliding, &other[..]));
    }
}
