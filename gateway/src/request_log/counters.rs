//! What became of request log entries, for `/metrics`: entries dropped (a full queue, or a batch
//! given up after its retries) by who dropped them, and `http-log` batches by outcome. Plain
//! atomics bumped off the request path's hot part, read by a collector at each scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Who dropped an entry: the `plugin` label of `gateway_log_entries_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropper {
    /// An `http-log` queue was full, or a batch was given up.
    HttpLog,
    /// The access log's queue was full, or its line could not be written.
    AccessLog,
}

/// How one attempt to send an `http-log` batch ended: the `outcome` label of
/// `gateway_log_batches_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// The collector answered 2xx.
    Sent,
    /// The attempt failed (refused, timed out, not 2xx); it is retried while time is left.
    Failed,
    /// The batch was given up after its retries; its entries count as dropped.
    Dropped,
}

/// The counters, shared by the access log and every `http-log` queue of the node.
#[derive(Debug, Default)]
pub struct LogCounters {
    dropped: [AtomicU64; 2],
    batches: [AtomicU64; 3],
}

impl LogCounters {
    /// Counts `n` entries dropped by `by`.
    pub fn dropped(&self, by: Dropper, n: u64) {
        self.dropped[by as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a batch attempt's outcome.
    pub fn batch(&self, outcome: BatchOutcome) {
        self.batches[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Entries dropped by `by` so far.
    pub fn dropped_count(&self, by: Dropper) -> u64 {
        self.dropped[by as usize].load(Ordering::Relaxed)
    }
}

/// Reads [`LogCounters`] at each scrape.
#[derive(Debug)]
pub struct LogCollector(pub Arc<LogCounters>);

impl Collector for LogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = &self.0;
        let mut dropped = encoder.encode_descriptor(
            "gateway_log_entries_dropped",
            "Request log entries dropped (queue full, or given up after retries), by plugin (http-log, access_log)",
            None,
            MetricType::Counter,
        )?;
        for (by, label) in [(Dropper::HttpLog, "http-log"), (Dropper::AccessLog, "access_log")] {
            ConstCounter::new(counters.dropped_count(by)).encode(dropped.encode_family(&[("plugin", label)])?)?;
        }
        let mut batches = encoder.encode_descriptor(
            "gateway_log_batches",
            "http-log batch attempts by outcome (sent, failed; dropped: given up after retries)",
            None,
            MetricType::Counter,
        )?;
        for (outcome, label) in
            [(BatchOutcome::Sent, "sent"), (BatchOutcome::Failed, "failed"), (BatchOutcome::Dropped, "dropped")]
        {
            let count = counters.batches[outcome as usize].load(Ordering::Relaxed);
            ConstCounter::new(count).encode(batches.encode_family(&[("outcome", label)])?)?;
        }
        Ok(())
    }
}
