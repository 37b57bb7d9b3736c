//! Where a node's config comes from, and how changes reach the live runtime: the declarative
//! file (re-read on SIGHUP) or etcd (every change, as it happens).

use crate::runtime::{Live, Runtime};
use crate::telemetry::traces;
use config_sync::etcd::EtcdSource;
use config_sync::{FileSource, Snapshot};
use std::future::Future;
use std::sync::Arc;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Takes SIGHUP over (from then on it no longer kills the process); none, with the error
/// logged, if it cannot.
pub fn hangups() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reloads are off");
            None
        }
    }
}

/// Re-reads the file on every SIGHUP ([`hangups`]); a file that does not load leaves the running
/// config as it is.
pub async fn reload_on_sighup(
    source: FileSource,
    mut hangups: Signal,
    live: Arc<Live>,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            received = hangups.recv() => if received.is_none() { return },
        }
        let path = source.path().display().to_string();
        let config = match source.load() {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(file = %path, error = %e, "reload refused; still serving the previous config");
                continue;
            }
        };
        let version = live.load().snapshot.version + 1;
        match live.apply(Arc::new(Snapshot::new(config, version, Vec::new()))) {
            Ok(runtime) => log_applied(&runtime),
            Err(e) => tracing::error!(file = %path, error = %e, "reload refused; still serving the previous config"),
        }
    }
}

/// Applies every snapshot the etcd source publishes, the latest first: a burst of changes that
/// arrives while one is being applied is applied once.
pub async fn follow_etcd(source: &EtcdSource, live: Arc<Live>, stopped: impl Future<Output = ()>) {
    let mut snapshots = source.snapshots.clone();
    tokio::pin!(stopped);
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            for error in &snapshot.errors {
                tracing::warn!(key = %error.key, revision = ?error.revision, message = %error.message, "config key not applied");
            }
            match live.apply(snapshot) {
                Ok(runtime) => log_applied(&runtime),
                Err(e) => tracing::error!(error = %e, "config from etcd refused; still serving the previous config"),
            }
        }
        tokio::select! {
            () = &mut stopped => return,
            changed = snapshots.changed() => if changed.is_err() { return },
        }
    }
}

/// Logs the config now in force (inside a span, so that traces show config applies too).
pub fn log_applied(runtime: &Runtime) {
    let s = &runtime.snapshot;
    let span =
        tracing::info_span!(target: traces::TARGET, "config apply", config.version = s.version, config.hash = %s.hash);
    let _entered = span.enter();
    tracing::info!(
        version = s.version,
        hash = %s.hash,
        services = s.config.services.len(),
        routes = s.config.routes.len(),
        upstreams = s.config.upstreams.len(),
        errors = s.errors.len(),
        "config applied"
    );
}
