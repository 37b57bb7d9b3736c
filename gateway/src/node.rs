//! A running node: the config source, the listeners, and shutdown.

use crate::admin::{self, Admin, EtcdLink};
use crate::client_address::Addressing;
use crate::cluster_link;
use crate::plugins::cache::Caches;
use crate::plugins::rate_limit::Limiters;
use crate::plugins::Shared;
use crate::proxy::{self, Pool, Proxy};
use crate::request_log::{self, AccessLog};
use crate::runtime::Live;
use crate::server::{self, Limits};
use crate::settings::{ConfigSource, Settings};
use crate::sources;
use crate::state_metrics;
use crate::telemetry::Metrics;
use crate::tls;
use anyhow::Context as _;
use config_sync::etcd::{EtcdConfig, EtcdSource, EtcdUser, EtcdWriter};
use config_sync::{Config, FileSource, Snapshot};
use ratelimit::{RedisConfig, RedisConnection, RedisStore};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Runs a node until SIGTERM or SIGINT, then drains.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    // Signals are taken over before the node says it is listening: one that comes at once must
    // stop or reload it, not kill it with the default action.
    let stop_signal = stop_signal()?;
    let file = match settings.config.source {
        ConfigSource::File => settings.config.file.clone().map(FileSource::new),
        ConfigSource::Etcd => None,
    };
    let hangups = file.as_ref().and_then(|_| sources::hangups());
    let config = match &file {
        Some(source) => source.load()?,
        None if settings.config.source == ConfigSource::File => {
            tracing::warn!("no config_file: starting with an empty config");
            Config::default()
        }
        None => Config::default(),
    };
    let redis_config = RedisConfig {
        timeout: settings.redis.timeout,
        connect_timeout: settings.redis.connect_timeout,
        ..RedisConfig::default()
    };
    let redis_target = settings.redis.target()?;
    // Two connections, so that a large cached body never queues ahead of a rate-limit decision.
    let connect_redis = || {
        let open = |target| RedisConnection::open(target, &redis_config).context("redis_url");
        redis_target.as_ref().map(open).transpose()
    };
    let limiters = Arc::new(Limiters::new(connect_redis()?.map(|redis| RedisStore::new(redis, redis_config))));
    let caches = Arc::new(Caches::new(
        settings.cache.memory_bytes,
        settings.cache.level_bytes,
        connect_redis()?,
        redis_config.timeout,
    ));
    let plugins = Arc::new(Shared::new(limiters.clone(), caches.clone()));
    // Before the listeners, as the other signals: SIGUSR1 (reopen) must never kill the node.
    let log_counters = plugins.http_logs.counters().clone();
    let (access_log, access_writer) =
        match AccessLog::start(&settings.request_logs.access_log, log_counters.clone()).await.context("access_log")? {
            Some((log, writer)) => (Some(log), Some(writer)),
            None => (None, None),
        };
    let initial_version = if settings.config.source == ConfigSource::File { 1 } else { 0 };
    let snapshot = Arc::new(Snapshot::new(config, initial_version, Vec::new()));
    let live = Arc::new(Live::new(snapshot, plugins.clone())?);
    if settings.config.source == ConfigSource::File {
        sources::log_applied(&live.load());
    }
    live.start_probes();

    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let mut etcd = None;
    if settings.config.source == ConfigSource::Etcd {
        let config = etcd_config(&settings)?;
        tracing::info!(endpoints = ?config.endpoints, prefix = %config.prefix, "config from etcd");
        let writer = EtcdWriter::connect(&config).await.context("etcd_endpoints")?;
        let source = EtcdSource::spawn(config);
        let link = EtcdLink { status: source.status.clone(), writer };
        etcd = Some((source, link));
    }

    let cluster = Arc::new(cluster_link::start(&settings).await.context("cannot start gossip (cluster_bind)")?);
    // An invalidation by a request here drops the resource's entries from every node's memory too.
    let gossip = cluster.clone();
    caches.tell_peers(move |resource| {
        let gossip = gossip.clone();
        tokio::spawn(async move {
            let purge = cluster_link::Broadcast::CacheInvalidate { resource };
            if let Err(e) = gossip.broadcast(purge.message()).await {
                tracing::warn!(error = %e, "could not broadcast a cache invalidation");
            }
        });
    });

    let serving = &settings.serving;
    let proxy_listener = TcpListener::bind(serving.proxy_listen)
        .await
        .with_context(|| format!("cannot listen on proxy_listen {}", serving.proxy_listen))?;
    let admin_listener = TcpListener::bind(settings.admin.listen)
        .await
        .with_context(|| format!("cannot listen on admin_listen {}", settings.admin.listen))?;
    let tls_listener = match serving.proxy_listen_tls {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.with_context(|| format!("cannot listen on proxy_listen_tls {addr}"))?)
        }
        None => None,
    };
    let tls_addr = tls_listener.as_ref().map(TcpListener::local_addr).transpose()?;
    tracing::info!(
        proxy = %proxy_listener.local_addr()?,
        proxy_tls = tls_addr.map(tracing::field::display),
        admin = %admin_listener.local_addr()?,
        gossip = %cluster.local_addr(),
        "listening"
    );

    let limits = Limits {
        header_read_timeout: serving.header_read_timeout,
        client_send_timeout: serving.client_send_timeout,
        max_header_bytes: serving.max_header_bytes,
        preserve_header_case: serving.preserve_header_case,
        shutdown_grace: serving.shutdown_grace,
        max_connections: serving.max_connections,
    };
    tokio::spawn(limiters.clone().probe(stopped()));
    let keepalive = &settings.upstream_keepalive;
    let pool = Pool::new(keepalive.max, keepalive.idle, serving.preserve_header_case);
    tokio::spawn(reap_idle_connections(pool.clone(), stopped()));
    plugins.members.follow(cluster.members());
    let redis_limiters = limiters.clone();
    // The proxy listeners' clients; the admin listener's (Prometheus among them) are not counted.
    let traffic = Arc::new(server::Traffic::default());
    let sources = state_metrics::Sources {
        live: live.clone(),
        etcd: etcd.as_ref().map(|(source, _)| source.status.clone()),
        cluster: Some(cluster.clone()),
        redis: Box::new(move || redis_limiters.redis_state()),
        traffic: traffic.clone(),
    };
    let mut metrics = Metrics::new();
    metrics.register(Box::new(state_metrics::StateCollector(sources)));
    metrics.register(Box::new(request_log::LogCollector(log_counters)));
    let metrics = Arc::new(metrics);
    let proxy = Arc::new(Proxy::new(proxy::Parts {
        live: live.clone(),
        pool,
        metrics: metrics.clone(),
        node_id: settings.node.node_id.clone(),
        logs: crate::proxy::Logs::new(&settings.node.node_id, access_log),
    }));
    let tunnels = proxy.tunnels().clone();
    let etcd_link = etcd.as_ref().map(|(_, link)| link.clone());
    let admin = Arc::new(Admin::new(
        admin::Parts {
            live: live.clone(),
            etcd: etcd_link,
            metrics,
            cluster: Some(cluster.clone()),
            limiters: limiters.clone(),
            caches: caches.clone(),
            draining: drain_rx,
        },
        &settings,
    ));
    let receiver = tokio::spawn(cluster_link::receive(cluster.clone(), live.clone(), caches.clone(), stopped()));

    let addressing = settings.clients.addressing()?;
    // Boxed once here, the request's future (kilobytes) is not copied again each time hyper
    // moves it.
    let proxy_handler = move |request, client| Box::pin(proxy.clone().handle(request, client));
    let tls_server = match tls_listener {
        Some(listener) => {
            let config = tls::server_config(live.certificates().clone()).context("TLS server config")?;
            if let Some(name) = &serving.proxy_tls_self_signed {
                live.certificates()
                    .fall_back_to_self_signed(name)
                    .map_err(|e| anyhow::anyhow!("proxy_tls_self_signed: {e}"))?;
                tracing::info!(name = %name, "serving a self-signed certificate to clients the config has none for");
            } else if live.certificates().load().is_empty() {
                tracing::warn!("proxy_listen_tls is set but the config has no certificate: every handshake fails");
            }
            let (handler, addressing, traffic) = (proxy_handler.clone(), addressing.clone(), traffic.clone());
            Some(tokio::spawn(server::serve(listener, handler, limits, addressing, Some(config), traffic, stopped())))
        }
        None => None,
    };
    let proxy_server =
        tokio::spawn(server::serve(proxy_listener, proxy_handler, limits, addressing, None, traffic, stopped()));
    let admin_server = tokio::spawn(server::serve(
        admin_listener,
        move |request, _client| {
            let admin = admin.clone();
            async move { admin.handle(request).await }
        },
        limits,
        Addressing::default(),
        None,
        Arc::new(server::Traffic::default()),
        stopped(),
    ));
    if let Some((file, hangups)) = file.zip(hangups) {
        tokio::spawn(sources::reload_on_sighup(file, hangups, live.clone(), stopped()));
    }
    let follower = etcd.map(|(source, _)| {
        let live = live.clone();
        let stopped = stopped();
        tokio::spawn(async move {
            sources::follow_etcd(&source, live, stopped).await;
            source.shutdown().await;
        })
    });

    stop_signal.await;
    let _ = drain_tx.send(true);
    if !serving.shutdown_drain.is_zero() {
        // Serving on, not ready, for as long as load balancers need to take the node out.
        tracing::info!(drain = ?serving.shutdown_drain, "shutting down: not ready; serving on while load balancers notice");
        tokio::time::sleep(serving.shutdown_drain).await;
    }
    let deadline = tokio::time::Instant::now() + serving.shutdown_grace;
    let _ = stop_tx.send(true);
    let _ = tokio::join!(proxy_server, admin_server);
    if let Some(tls_server) = tls_server {
        let _ = tls_server.await;
    }
    if tokio::time::timeout_at(deadline, tunnels.closed()).await.is_err() {
        tracing::warn!(open = tunnels.count(), "grace period over; cutting upgraded connections");
    }
    if let Some(follower) = follower {
        let _ = follower.await;
    }
    let _ = receiver.await;
    if let Some(writer) = access_writer {
        // The proxy's handle went with the servers; what is queued is written, briefly.
        if tokio::time::timeout(std::time::Duration::from_secs(2), writer).await.is_err() {
            tracing::warn!("access_log: lines still queued at shutdown were not all written");
        }
    }
    live.health().shutdown();
    // Leave the cluster once nothing else holds the handle.
    match Arc::into_inner(cluster) {
        Some(cluster) => cluster.shutdown().await,
        None => tracing::warn!("gossip still in use at shutdown; leaving without a goodbye"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// The etcd settings of a node (and of `gateway apply` and `dump`).
/// The files it names are read here: an error names the setting and the file.
pub fn etcd_config(settings: &Settings) -> anyhow::Result<EtcdConfig> {
    let etcd = &settings.etcd;
    let mut config = EtcdConfig::new(etcd.endpoints.clone(), &etcd.prefix);
    config.liveness_interval = etcd.liveness_interval;
    let secured = etcd.ca_file.is_some() || etcd.cert_file.is_some();
    if let Some(plain) = config.endpoints.iter().find(|e| !e.starts_with("https://")).filter(|_| secured) {
        anyhow::bail!("etcd_endpoints: {plain} is not https://, so etcd_ca_file and etcd_cert_file would not be used");
    }
    if let Some(plain) = config.endpoints.iter().find(|e| !e.starts_with("https://")) {
        if etcd.username.is_some() {
            tracing::warn!(endpoint = %plain, "etcd_password goes to etcd in clear text: use https:// endpoints");
        }
    }
    let read = |setting: &str, path: &std::path::Path| {
        std::fs::read_to_string(path).with_context(|| format!("{setting}: cannot read {}", path.display()))
    };
    if let Some(path) = &etcd.ca_file {
        config.tls.ca = Some(read("etcd_ca_file", path)?);
    }
    if let (Some(cert), Some(key)) = (&etcd.cert_file, &etcd.key_file) {
        config.tls.identity = Some((read("etcd_cert_file", cert)?, read("etcd_key_file", key)?));
    }
    if let (Some(name), Some(password)) = (&etcd.username, &etcd.password) {
        config.user = Some(EtcdUser { name: name.clone(), password: password.clone() });
    }
    Ok(config)
}

async fn reap_idle_connections(pool: Pool, stopped: impl Future<Output = ()>) {
    let mut every = tokio::time::interval(pool.reap_interval());
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = every.tick() => pool.reap(),
        }
    }
}

/// Completes on SIGTERM or SIGINT; both are taken over when this is called.
fn stop_signal() -> anyhow::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
    })
}
