//! A running node: the listeners, the live config and its reloads, and shutdown.

use crate::admin::Admin;
use crate::proxy::{Pool, Proxy};
use crate::runtime::{Live, Runtime};
use crate::server::{self, Limits};
use crate::settings::Settings;
use anyhow::Context as _;
use config_sync::{Config, FileSource, Snapshot};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Runs a node until SIGTERM or SIGINT, then drains.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let source = settings.config_file.clone().map(FileSource::new);
    let config = match &source {
        Some(source) => source.load()?,
        None => {
            tracing::warn!("no config_file: starting with an empty config");
            Config::default()
        }
    };
    let live = Arc::new(Live::new(Snapshot::new(config, 1, Vec::new()))?);
    log_applied(&live.load());
    live.start_probes();

    let proxy_listener = TcpListener::bind(settings.proxy_listen)
        .await
        .with_context(|| format!("cannot listen on proxy_listen {}", settings.proxy_listen))?;
    let admin_listener = TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("cannot listen on admin_listen {}", settings.admin_listen))?;
    tracing::info!(
        node_id = %settings.node_id,
        proxy = %proxy_listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        "listening"
    );
    if settings.redis_url.is_some() {
        tracing::warn!("redis_url is set, but this build keeps no state in Redis yet");
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let limits = Limits {
        header_read_timeout: settings.header_read_timeout(),
        max_header_bytes: settings.max_header_bytes,
        shutdown_grace: settings.shutdown_grace(),
        max_connections: settings.max_connections,
    };
    let pool = Pool::new(settings.upstream_keepalive_max, settings.upstream_keepalive_idle());
    tokio::spawn(reap_idle_connections(pool.clone(), stopped()));
    let proxy = Arc::new(Proxy::new(live.clone(), pool, &settings.node_id));
    let tunnels = proxy.tunnels().clone();
    let admin = Arc::new(Admin::new(live.clone(), &settings));

    let proxy_server = tokio::spawn(server::serve(
        proxy_listener,
        move |request, client| {
            let proxy = proxy.clone();
            async move { proxy.handle(request, client).await }
        },
        limits,
        stopped(),
    ));
    let admin_server = tokio::spawn(server::serve(
        admin_listener,
        move |request, _client| std::future::ready(admin.handle(&request)),
        limits,
        stopped(),
    ));
    if let Some(source) = source {
        tokio::spawn(reload_on_sighup(source, live.clone(), stopped()));
    }

    wait_for_stop_signal().await?;
    let deadline = tokio::time::Instant::now() + settings.shutdown_grace();
    let _ = stop_tx.send(true);
    let _ = tokio::join!(proxy_server, admin_server);
    if tokio::time::timeout_at(deadline, tunnels.closed()).await.is_err() {
        tracing::warn!(open = tunnels.count(), "grace period over; cutting upgraded connections");
    }
    live.health().shutdown();
    tracing::info!("stopped");
    Ok(())
}

/// Re-reads the file on every SIGHUP; a file that does not load leaves the running config as
/// it is.
async fn reload_on_sighup(source: FileSource, live: Arc<Live>, stopped: impl std::future::Future<Output = ()>) {
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reloads are off");
            return;
        }
    };
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
        match live.apply(Snapshot::new(config, version, Vec::new())) {
            Ok(runtime) => log_applied(&runtime),
            Err(e) => tracing::error!(file = %path, error = %e, "reload refused; still serving the previous config"),
        }
    }
}

async fn reap_idle_connections(pool: Pool, stopped: impl std::future::Future<Output = ()>) {
    let mut every = tokio::time::interval(pool.reap_interval());
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = every.tick() => pool.reap(),
        }
    }
}

fn log_applied(runtime: &Runtime) {
    let s = &runtime.snapshot;
    tracing::info!(
        version = s.version,
        hash = %s.hash,
        services = s.config.services.len(),
        routes = s.config.routes.len(),
        upstreams = s.config.upstreams.len(),
        "config applied"
    );
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
    Ok(())
}
