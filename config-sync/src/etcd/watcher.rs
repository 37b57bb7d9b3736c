//! The etcd source: one consistent read of the prefix, then one watch from that revision + 1,
//! every change published as a new snapshot.
//!
//! A handle and a worker: [`EtcdSource::spawn`] starts the worker, which owns the connection
//! and the [`KeySpace`]; snapshots and status come out on `watch` channels.
//!
//! What can go wrong, and what happens:
//! - etcd unreachable, or the stream breaks: the last snapshot keeps being served, the status
//!   says `disconnected`, and the worker reconnects with capped exponential back-off and jitter.
//!   On reconnect it watches from the last revision it applied + 1, so nothing is missed.
//! - The revision it needs was compacted (the watch is cancelled with a compact revision), or
//!   etcd came back with a lower revision than the one applied (restarted from scratch or
//!   restored): a full re-read, which builds exactly the snapshot a fresh node would.
//! - The stream goes quiet: every `liveness_interval` the worker asks etcd for a progress
//!   notification; no answer in another interval means the stream is dead, and it reconnects.
//!   The revision never moves forward on a timeout.

use super::backoff::Backoff;
use super::keys::prefix_end;
use super::keyspace::KeySpace;
use super::read::{read_prefix, ReadError};
use crate::snapshot::Snapshot;
use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, KvClient, TlsOptions, WatchClient,
    WatchOptions, WatchResponse,
};
use futures_util::FutureExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Where and how to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Endpoints, such as `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Every config key lives under it (normalized: `/gateway`).
    pub prefix: String,
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Time for one request (reads; not the watch stream).
    pub request_timeout: Duration,
    /// Shortest wait before reconnecting.
    pub retry_min: Duration,
    /// Longest wait before reconnecting.
    pub retry_max: Duration,
    /// How often a quiet watch stream is asked to prove it is alive.
    pub liveness_interval: Duration,
    /// TLS to etcd: used for `https://` endpoints.
    pub tls: EtcdTls,
    /// A user for etcd's auth.
    pub user: Option<EtcdUser>,
}

/// An etcd user and its password (which `Debug` leaves out).
#[derive(Clone)]
pub struct EtcdUser {
    /// The user's name.
    pub name: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for EtcdUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdUser").field("name", &self.name).finish_non_exhaustive()
    }
}

/// How the gateway speaks TLS to etcd (`https://` endpoints).
#[derive(Clone, Default)]
pub struct EtcdTls {
    /// The CA certificates (PEM) etcd's certificate must lead to; none: the system's roots.
    pub ca: Option<String>,
    /// A client certificate chain and its key (PEM), for etcd's `--client-cert-auth`.
    pub identity: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls").field("ca", &self.ca.is_some()).field("identity", &self.identity.is_some()).finish()
    }
}

impl EtcdConfig {
    /// Defaults for everything but where etcd is and the prefix.
    pub fn new(endpoints: Vec<String>, prefix: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: super::keys::normalize_prefix(prefix),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            liveness_interval: Duration::from_secs(5),
            tls: EtcdTls::default(),
            user: None,
        }
    }

    /// Options for a client connection. No request timeout here: it would cut the watch stream;
    /// reads get theirs one by one.
    pub fn connect_options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let https = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if https || self.tls.ca.is_some() || self.tls.identity.is_some() {
            let mut tls = match &self.tls.ca {
                Some(ca) => TlsOptions::new().ca_certificate(Certificate::from_pem(ca)),
                None => TlsOptions::new().with_native_roots(),
            };
            if let Some((cert, key)) = &self.tls.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls);
        }
        if let Some(user) = &self.user {
            options = options.with_user(user.name.clone(), user.password.clone());
        }
        options
    }
}

/// Whether the source is talking to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// Not connected yet.
    Connecting,
    /// Reading or watching.
    Connected,
    /// Lost; retrying.
    Disconnected {
        /// Why.
        error: String,
    },
}

/// What the source reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdStatus {
    /// Whether it is talking to etcd.
    pub connection: Connection,
    /// The last revision applied (0: none yet).
    pub revision: u64,
    /// Full re-reads after the first (compactions, etcd restarts).
    pub resyncs: u64,
}

/// The handle of a running source.
pub struct EtcdSource {
    /// The latest snapshot (None until the first read).
    pub snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    /// The latest status.
    pub status: watch::Receiver<EtcdStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl EtcdSource {
    /// Starts the worker.
    pub fn spawn(config: EtcdConfig) -> EtcdSource {
        let (snapshots_tx, snapshots) = watch::channel(None);
        let initial = EtcdStatus { connection: Connection::Connecting, revision: 0, resyncs: 0 };
        let (status_tx, status) = watch::channel(initial);
        let (stop, stopped) = oneshot::channel();
        let worker = Worker {
            backoff: Backoff::new(config.retry_min, config.retry_max),
            watch_prefix: format!("{}/", config.prefix),
            config,
            keyspace: KeySpace::new(),
            revision: 0,
            reads: 0,
            published: u64::MAX,
            snapshots: snapshots_tx,
            status: status_tx,
        };
        let task = tokio::spawn(worker.run(stopped));
        EtcdSource { snapshots, status, stop: Some(stop), task }
    }

    /// Stops the worker and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for EtcdSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The largest message read from etcd: a watcher catching up gets up to 1,000 revisions in one
/// response, more than the client's 4 MiB default (Go's clientv3 allows `i32::MAX`).
pub(crate) const MAX_MESSAGE: usize = 64 << 20;

/// The clients of one connection.
struct Clients {
    kv: KvClient,
    watch: WatchClient,
}

/// Why a session with etcd ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the watch stream closed")]
    Closed,
    #[error("the watch stream went quiet: no progress notification within {0:?}")]
    Quiet(Duration),
}

impl From<ReadError> for SessionError {
    fn from(e: ReadError) -> SessionError {
        match e {
            ReadError::Etcd(e) => SessionError::Etcd(e),
            ReadError::Timeout(limit) => SessionError::Timeout(limit),
        }
    }
}

/// Why a watch ended without an error: a full re-read is needed.
enum Resync {
    Compacted(i64),
    Cancelled(String),
}

/// How many earlier versions of a bad key a full read looks at for a good one, at most.
const HISTORY_DEPTH: usize = 16;

/// What etcd's history told of a bad key's last good value.
#[derive(Debug, PartialEq, Eq)]
enum History {
    /// Found, and served.
    Served,
    /// There was none since the key was (last) created.
    NeverGood,
    /// Compacted, or further back than [`HISTORY_DEPTH`].
    Unknown,
}

struct Worker {
    config: EtcdConfig,
    /// `<prefix>/`: every key watched starts with it.
    watch_prefix: String,
    keyspace: KeySpace,
    /// The last revision applied; 0 before the first read.
    revision: u64,
    /// Full reads done.
    reads: u64,
    /// The version of the last snapshot published.
    published: u64,
    backoff: Backoff,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    status: watch::Sender<EtcdStatus>,
}

impl Worker {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        loop {
            let error = tokio::select! {
                _ = &mut stop => return,
                error = self.session() => error,
            };
            tracing::warn!(error = %error, revision = self.revision, "etcd: disconnected; serving the last config");
            self.set_connection(Connection::Disconnected { error: error.to_string() });
            let wait = self.backoff.next(fastrand::f64());
            tokio::select! {
                _ = &mut stop => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One connection: sync, then watch, until something breaks.
    async fn session(&mut self) -> SessionError {
        let client = match Client::connect(&self.config.endpoints, Some(self.config.connect_options())).await {
            Ok(client) => client,
            Err(e) => return e.into(),
        };
        let mut clients = Clients {
            kv: client.kv_client().max_decoding_message_size(MAX_MESSAGE),
            watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
        };
        loop {
            if let Err(e) = self.sync(&mut clients.kv).await {
                return e;
            }
            // What was applied before a break and not yet published goes out now.
            if self.published != self.revision {
                self.publish();
            }
            match self.watch(&mut clients.watch).await {
                Ok(Resync::Compacted(at)) => {
                    tracing::warn!(compacted = at, revision = self.revision, "etcd: revision compacted; re-reading");
                    self.revision = 0;
                }
                Ok(Resync::Cancelled(reason)) => {
                    tracing::warn!(%reason, "etcd: watch cancelled; re-reading");
                    self.revision = 0;
                }
                Err(e) => return e,
            }
        }
    }

    /// Reads the whole prefix when nothing was applied yet, or when etcd no longer holds what
    /// was applied: its revision is behind ours (it restarted empty, or was restored), or the
    /// keys it holds at our revision are not the ones we applied (it was wiped and written back
    /// up to our revision).
    async fn sync(&mut self, kv: &mut KvClient) -> Result<(), SessionError> {
        if self.revision == 0 {
            return self.full_read(kv).await;
        }
        let count = GetOptions::new().with_prefix().with_count_only();
        let probe = self.timed(kv.get(self.watch_prefix.as_str(), Some(count))).await?;
        let current = probe.header().map_or(0, |h| h.revision().max(0) as u64);
        if current < self.revision {
            tracing::warn!(applied = self.revision, etcd = current, "etcd: its revision is behind ours; re-reading");
            return self.full_read(kv).await;
        }
        let at_ours = GetOptions::new()
            .with_range(prefix_end(&self.watch_prefix))
            .with_keys_only()
            .with_revision(self.revision as i64);
        let same = match self.timed(kv.get(self.watch_prefix.as_str(), Some(at_ours))).await {
            Ok(page) => self.keyspace.holds_exactly(
                page.kvs()
                    .iter()
                    .filter_map(|kv| Some((std::str::from_utf8(kv.key()).ok()?, kv.mod_revision().max(0) as u64))),
            ),
            Err(SessionError::Etcd(e)) if e.to_string().contains("compacted") => {
                tracing::warn!(revision = self.revision, "etcd: our revision was compacted; re-reading");
                return self.full_read(kv).await;
            }
            Err(e) => return Err(e),
        };
        if !same {
            tracing::warn!(revision = self.revision, "etcd: its keys differ from what was applied; re-reading");
            return self.full_read(kv).await;
        }
        Ok(())
    }

    /// One consistent read of the prefix, page by page at one revision.
    async fn full_read(&mut self, kv: &mut KvClient) -> Result<(), SessionError> {
        let (kvs, at) = read_prefix(kv, &self.watch_prefix, self.config.request_timeout).await?;
        let mut keyspace = KeySpace::new();
        for kv in &kvs {
            if let Some((key, relative)) = self.relative(kv.key()) {
                keyspace.put(key, relative, kv.value(), kv.mod_revision().max(0) as u64);
            }
        }
        // A bad value read whole has no last good value of this read's own. Nodes that watched
        // the key serve the good value before it: find that one in etcd's history, or failing
        // that (compacted) keep what this node served before the re-read.
        for (key, revision) in keyspace.unserved() {
            let Some((_, relative)) = self.relative(key.as_bytes()) else { continue };
            if self.serve_from_history(kv, &mut keyspace, &key, relative, revision).await? == History::Unknown {
                keyspace.keep_from(&self.keyspace, &key, relative);
            }
        }
        self.keyspace = keyspace;
        self.revision = at.max(0) as u64;
        self.reads += 1;
        self.publish();
        Ok(())
    }

    /// Looks back through the versions of the bad `key` before `revision` (at most
    /// [`HISTORY_DEPTH`]) for a good one, and serves it.
    async fn serve_from_history(
        &self,
        kv: &mut KvClient,
        keyspace: &mut KeySpace,
        key: &str,
        relative: &str,
        mut revision: u64,
    ) -> Result<History, SessionError> {
        for _ in 0..HISTORY_DEPTH {
            // Revision 0 would mean the latest.
            let Some(before) = revision.checked_sub(1).filter(|&r| r > 0) else { return Ok(History::NeverGood) };
            let options = GetOptions::new().with_revision(before as i64);
            let page = match self.timed(kv.get(key, Some(options))).await {
                Ok(page) => page,
                Err(SessionError::Etcd(e)) if e.to_string().contains("compacted") => return Ok(History::Unknown),
                Err(e) => return Err(e),
            };
            // None: the key did not exist then (it was created, or re-created, bad).
            let Some(earlier) = page.kvs().first() else { return Ok(History::NeverGood) };
            if keyspace.serve_earlier(key, relative, earlier.value()) {
                return Ok(History::Served);
            }
            revision = earlier.mod_revision().max(0) as u64;
        }
        Ok(History::Unknown)
    }

    /// Watches from the revision after the last applied until a re-read is needed or the
    /// stream fails. The source counts as connected once the watch answers.
    async fn watch(&mut self, client: &mut WatchClient) -> Result<Resync, SessionError> {
        let options =
            WatchOptions::new().with_prefix().with_start_revision(self.revision as i64 + 1).with_progress_notify();
        let mut stream = self.timed(client.watch(self.watch_prefix.as_str(), Some(options))).await?;
        let quiet = self.config.liveness_interval;
        let mut asked_at: Option<Instant> = None;
        let mut check = tokio::time::interval_at(Instant::now() + quiet, quiet);
        loop {
            tokio::select! {
                message = stream.message() => {
                    asked_at = None;
                    let mut changed = false;
                    let mut next = Some(message);
                    // Apply what has arrived, then publish once: a burst of writes makes one
                    // snapshot, not one per write. What was applied is published even when the
                    // stream then fails.
                    let mut outcome = None;
                    while let Some(message) = next.take() {
                        let response = match message {
                            Ok(Some(response)) => response,
                            Ok(None) => { outcome = Some(Err(SessionError::Closed)); break }
                            Err(e) => { outcome = Some(Err(e.into())); break }
                        };
                        if let Some(resync) = needs_resync(&response) {
                            outcome = Some(Ok(resync));
                            break;
                        }
                        self.connected();
                        changed |= self.apply(&response);
                        next = stream.message().now_or_never();
                    }
                    if changed {
                        self.publish();
                    }
                    if let Some(outcome) = outcome {
                        return outcome;
                    }
                }
                _ = check.tick() => match asked_at {
                    Some(at) if at.elapsed() >= quiet => return Err(SessionError::Quiet(quiet)),
                    Some(_) => {}
                    None => {
                        stream.request_progress().await?;
                        asked_at = Some(Instant::now());
                    }
                },
            }
        }
    }

    /// The first answer of a watch: talking to etcd again.
    fn connected(&mut self) {
        if self.status.borrow().connection != Connection::Connected {
            tracing::info!(revision = self.revision, "etcd: connected");
            self.set_connection(Connection::Connected);
            self.backoff.reset();
        }
    }

    /// Applies a response's events; whether anything changed.
    fn apply(&mut self, response: &WatchResponse) -> bool {
        let mut changed = false;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Some((key, relative)) = self.relative(kv.key()) else { continue };
            let revision = kv.mod_revision().max(0) as u64;
            match event.event_type() {
                EventType::Put => self.keyspace.put(key, relative, kv.value(), revision),
                EventType::Delete => self.keyspace.delete(key, relative),
            }
            self.revision = self.revision.max(revision);
            changed = true;
        }
        changed
    }

    /// The full key and the part after `<prefix>/`, for a key under the prefix.
    fn relative<'k>(&self, key: &'k [u8]) -> Option<(&'k str, &'k str)> {
        let key = std::str::from_utf8(key).ok()?;
        Some((key, key.strip_prefix(self.watch_prefix.as_str())?))
    }

    fn publish(&mut self) {
        self.published = self.revision;
        let snapshot = self.keyspace.snapshot(self.revision);
        tracing::debug!(version = snapshot.version, hash = %snapshot.hash, errors = snapshot.errors.len(), "etcd: snapshot");
        self.snapshots.send_replace(Some(Arc::new(snapshot)));
        let resyncs = self.reads.saturating_sub(1);
        let revision = self.revision;
        self.status.send_modify(|s| {
            s.revision = revision;
            s.resyncs = resyncs;
        });
    }

    fn set_connection(&self, connection: Connection) {
        self.status.send_if_modified(|s| {
            let changed = s.connection != connection;
            s.connection = connection;
            changed
        });
    }

    async fn timed<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, SessionError> {
        let limit = self.config.request_timeout;
        tokio::time::timeout(limit, request).await.map_err(|_| SessionError::Timeout(limit))?.map_err(Into::into)
    }
}

/// A watch response that ends the watch: compacted, or cancelled by etcd.
fn needs_resync(response: &WatchResponse) -> Option<Resync> {
    if response.compact_revision() > 0 {
        return Some(Resync::Compacted(response.compact_revision()));
    }
    response.canceled().then(|| Resync::Cancelled(response.cancel_reason().to_owned()))
}
