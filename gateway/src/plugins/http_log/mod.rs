//! The `http-log` plugin: each request's record, sent as JSON to a collector over HTTP(S), in
//! batches, from a task of its own.
//!
//! The request path only pushes the record into a bounded queue, without waiting
//! ([`HttpLogPlugin::log`]); when the queue is full the record is dropped and counted. A slow,
//! hanging, refusing or failing collector therefore never slows a request, and costs at most
//! `queue.max_entries` records of memory.
//!
//! Each distinct config has one queue and one sender task ([`sender`]), shared by every route
//! that uses that config and kept across config snapshots while some snapshot still uses it
//! ([`HttpLogs`]): a config change elsewhere neither loses queued entries nor opens new
//! connections. When no snapshot uses it any more, its task sends what is queued and ends.

mod sender;

use super::pipeline::Plugin;
use crate::request_log::counters::{Dropper, LogCounters};
use crate::request_log::Record;
use config_sync::model::HttpLog;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use tokio::sync::mpsc;

/// The queues of every `http-log` config in use on this node, by config.
#[derive(Debug)]
pub struct HttpLogs {
    queues: Mutex<HashMap<String, Weak<Queue>>>,
    counters: Arc<LogCounters>,
}

impl HttpLogs {
    /// No queue yet; every queue counts in `counters`.
    pub fn new(counters: Arc<LogCounters>) -> HttpLogs {
        HttpLogs { queues: Mutex::default(), counters }
    }

    /// The counters of every queue (and of the access log).
    pub fn counters(&self) -> &Arc<LogCounters> {
        &self.counters
    }

    /// The queue of `config`: the one a snapshot still uses, or a new one with its sender task.
    fn queue(&self, config: &HttpLog) -> Arc<Queue> {
        let key = serde_json::to_string(config).expect("configs serialize");
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        queues.retain(|_, queue| queue.strong_count() > 0);
        if let Some(queue) = queues.get(&key).and_then(Weak::upgrade) {
            return queue;
        }
        let queue = Arc::new(Queue::start(config, self.counters.clone()));
        queues.insert(key, Arc::downgrade(&queue));
        queue
    }
}

/// One config's queue: what requests push into.
#[derive(Debug)]
struct Queue {
    entries: mpsc::Sender<Arc<Record>>,
    counters: Arc<LogCounters>,
}

impl Queue {
    /// A queue of `config.queue.max_entries`, and the task that sends it. Outside a Tokio
    /// runtime (a unit test building a config) there is no task: the queue fills, then drops.
    fn start(config: &HttpLog, counters: Arc<LogCounters>) -> Queue {
        let (entries, receiver) = mpsc::channel(config.queue.max_entries.max(1) as usize);
        match (tokio::runtime::Handle::try_current(), sender::Collector::new(config)) {
            (Ok(runtime), Ok(collector)) => {
                runtime.spawn(sender::run(receiver, collector, config.queue.clone(), counters.clone()));
            }
            (_, Err(e)) => tracing::error!(error = %e, "http-log: the collector cannot be used; entries are dropped"),
            (Err(_), _) => {}
        }
        Queue { entries, counters }
    }

    fn push(&self, record: &Arc<Record>) {
        if self.entries.try_send(record.clone()).is_err() {
            self.counters.dropped(Dropper::HttpLog, 1);
        }
    }
}

/// A compiled `http-log` config.
pub(crate) struct HttpLogPlugin {
    queue: Arc<Queue>,
}

impl HttpLogPlugin {
    /// The plugin for `config`, on its shared queue.
    pub(crate) fn new(config: &HttpLog, logs: &HttpLogs) -> HttpLogPlugin {
        HttpLogPlugin { queue: logs.queue(config) }
    }
}

impl Plugin for HttpLogPlugin {
    fn logs(&self) -> bool {
        true
    }

    fn log(&self, record: &Arc<Record>) {
        self.queue.push(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> HttpLog {
        serde_json::from_str(json).unwrap()
    }

    #[tokio::test]
    async fn one_queue_per_config_while_in_use() {
        let logs = HttpLogs::new(Arc::default());
        let a = logs.queue(&config(r#"{"http_endpoint":"http://127.0.0.1:9/a"}"#));
        let again = logs.queue(&config(r#"{"http_endpoint":"http://127.0.0.1:9/a"}"#));
        assert!(Arc::ptr_eq(&a, &again), "the same config shares its queue");
        let b = logs.queue(&config(r#"{"http_endpoint":"http://127.0.0.1:9/b"}"#));
        assert!(!Arc::ptr_eq(&a, &b));
        let weak = Arc::downgrade(&a);
        drop((a, again));
        assert!(weak.upgrade().is_none(), "nothing else holds a queue");
        let _fresh = logs.queue(&config(r#"{"http_endpoint":"http://127.0.0.1:9/a"}"#));
        assert_eq!(logs.queues.lock().unwrap().len(), 2, "the dead queue was forgotten");
    }
}
