//! The log phase: once a request's response has been sent (its body finished, or the client went
//! away), one record of it goes to whoever wants it: the `http-log` plugins its route runs, and
//! the node's `access_log`.
//!
//! - [`record`]: the record (Kong's log serializer's fields, and `node`) and the redaction of
//!   secrets; `json`: its JSON.
//! - [`access_log`]: the `access_log` setting's writer task, reopened on SIGUSR1.
//! - [`counters`]: entries dropped and batches sent, for `/metrics`.
//! - The `http-log` plugin itself is in `crate::plugins::http_log`; the proxy makes the records
//!   (`crate::proxy::log`).
//!
//! This module is beneath the plugins and the proxy: it knows neither.

pub mod access_log;
pub mod counters;
mod json;
pub mod record;

pub use access_log::AccessLog;
pub use counters::{LogCollector, LogCounters};
pub use record::Record;
