//! The `access_log` setting: one JSON line per request, on standard output or appended to a file.
//!
//! Request tasks never touch the disk: a finished request's record goes into a bounded queue
//! ([`QUEUE`] lines) with a non-blocking push. One writer task wakes at the first record, lets
//! more gather for [`GATHER`], then turns them into lines and writes them in one go, on the
//! blocking pool (`spawn_blocking`), never on a worker thread: under load, one write and one
//! trip to the pool carry many lines (as nginx's `access_log ... buffer= flush=`),
//! and a line reaches the file about [`GATHER`] after its request ended. A record that finds
//! the queue full is dropped and counted (`gateway_log_entries_dropped_total{plugin="access_log"}`).
//!
//! A file is reopened on SIGUSR1, as nginx does: logrotate moves the file away, then signals,
//! and the next lines go to a new file at the configured path (no `copytruncate`, so no line
//! is lost or cut). SIGUSR1 is taken over whatever the setting, so that a rotation script run
//! against a node without a file does not kill it.

use super::counters::{Dropper, LogCounters};
use super::record::Record;
use crate::settings::AccessLog as Setting;
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Lines that may wait for the writer: with [`GATHER`], far more than a node serves in it.
pub const QUEUE: usize = 10_000;

/// How long lines gather before they are written: long enough that one write carries many
/// under load, short enough that the burst of turning them into JSON does not hold up requests
/// on the same core (50 ms raised the median latency at a fixed rate from 1.2 to 5.8 ms).
const GATHER: Duration = Duration::from_millis(5);

/// The queue to the writer task; cloned by every request that is logged.
#[derive(Clone)]
pub struct AccessLog {
    queue: mpsc::Sender<Arc<Record>>,
    counters: Arc<LogCounters>,
}

impl AccessLog {
    /// Opens what `setting` names and starts its writer; takes over SIGUSR1 in every case.
    /// None when the setting is off. The writer ends once every [`AccessLog`] is dropped and
    /// what was queued is written: await its handle at shutdown.
    pub async fn start(
        setting: &Setting,
        counters: Arc<LogCounters>,
    ) -> std::io::Result<Option<(AccessLog, JoinHandle<()>)>> {
        let usr1 = match signal(SignalKind::user_defined1()) {
            Ok(usr1) => Some(usr1),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGUSR1; the access log will not be reopened");
                None
            }
        };
        let out = match setting {
            Setting::Off => {
                if let Some(usr1) = usr1 {
                    tokio::spawn(ignore(usr1));
                }
                return Ok(None);
            }
            Setting::Stdout => Out::Stdout,
            Setting::File(path) => Out::File(open(path.clone()).await?, path.clone()),
        };
        let (queue, lines) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write(lines, out, usr1, counters.clone()));
        Ok(Some((AccessLog { queue, counters }, writer)))
    }

    /// Queues `record`'s line; never waits: when the queue is full it is dropped and counted.
    pub(crate) fn push(&self, record: Arc<Record>) {
        if self.queue.try_send(record).is_err() {
            self.counters.dropped(Dropper::AccessLog, 1);
        }
    }
}

/// Where lines go.
enum Out {
    Stdout,
    File(File, PathBuf),
}

impl Out {
    /// Writes `buffer` whole (blocking).
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Stdout => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(buffer)?;
                stdout.flush()
            }
            Out::File(file, _) => file.write_all(buffer),
        }
    }
}

/// Opens `path` for appending, created if missing, on the blocking pool.
async fn open(path: PathBuf) -> std::io::Result<File> {
    let opening =
        tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot open {} for appending: {e}", path.display()))
            })
        });
    opening.await.map_err(std::io::Error::other)?
}

/// The writer: lines as they come, a reopen at each SIGUSR1.
async fn write(
    mut lines: mpsc::Receiver<Arc<Record>>,
    mut out: Out,
    mut usr1: Option<Signal>,
    counters: Arc<LogCounters>,
) {
    let mut records = Vec::with_capacity(QUEUE);
    let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut failing = false;
    loop {
        let reopen = async {
            match usr1.as_mut() {
                Some(usr1) => usr1.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            taken = lines.recv_many(&mut records, QUEUE) => {
                if taken == 0 {
                    break;
                }
            }
            _ = reopen => {
                if let Out::File(file, path) = &mut out {
                    match open(path.clone()).await {
                        Ok(new) => {
                            *file = new;
                            tracing::info!(path = %path.display(), "access_log reopened (SIGUSR1)");
                        }
                        Err(e) => tracing::warn!(error = %e, "access_log not reopened; writing on to the old file"),
                    }
                } else {
                    tracing::info!("SIGUSR1: the access log is not a file; nothing to reopen");
                }
                continue;
            }
        }
        tokio::time::sleep(GATHER).await;
        while records.len() < QUEUE {
            match lines.try_recv() {
                Ok(record) => records.push(record),
                Err(_) => break,
            }
        }
        let writing = tokio::task::spawn_blocking(move || {
            buffer.clear();
            for record in records.drain(..) {
                record.write_json(&mut buffer);
                buffer.push(b'\n');
            }
            let written = out.write(&buffer);
            (out, buffer, records, written)
        });
        let written;
        (out, buffer, records, written) = match writing.await {
            Ok(done) => done,
            // The blocking pool is gone: the runtime is shutting down.
            Err(_) => return,
        };
        match written {
            Ok(()) => failing = false,
            Err(e) => {
                let lost = buffer.iter().filter(|b| **b == b'\n').count() as u64;
                counters.dropped(Dropper::AccessLog, lost);
                if !failing {
                    tracing::warn!(error = %e, "access_log: lines could not be written and are dropped");
                }
                failing = true;
            }
        }
    }
}

/// SIGUSR1 with no file to reopen: noted, and nothing else (its default action would kill
/// the node).
async fn ignore(mut usr1: Signal) {
    while usr1.recv().await.is_some() {
        tracing::info!("SIGUSR1: access_log is off; nothing to reopen");
    }
}
