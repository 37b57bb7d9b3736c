//! This node's part in the cluster: the gossip handle, and what other nodes send: health resets
//! made elsewhere applied here, and cache purges that clear this node's memory cache.

use crate::health::{Source, State};
use crate::plugins::cache::Caches;
use crate::runtime::{Live, Runtime};
use crate::settings::Settings;
use crate::telemetry::traces;
use cluster::{ClusterConfig, ClusterError, ClusterHandle, Delivered, Message};
use std::future::Future;
use std::sync::Arc;

/// Starts gossip with the node's settings.
pub async fn start(settings: &Settings) -> Result<ClusterHandle, ClusterError> {
    let gossip = &settings.cluster;
    let mut config = ClusterConfig::new(&settings.node.node_id, gossip.bind);
    config.advertise = gossip.advertise.clone().filter(|a| !a.is_empty());
    config.seeds = gossip.seeds.clone();
    config.keys = gossip.keys.clone();
    if let Some(period) = gossip.probe_period {
        config.probe_period = period;
    }
    if let Some(timeout) = gossip.suspect_timeout {
        config.suspect_timeout = timeout;
    }
    ClusterHandle::spawn(config).await
}

/// Applies what other nodes send until `stopped`: health resets set the target's state here
/// (a target this node does not have is ignored).
pub async fn receive(
    cluster: Arc<ClusterHandle>,
    live: Arc<Live>,
    caches: Arc<Caches>,
    stopped: impl Future<Output = ()>,
) {
    let mut messages = cluster.messages();
    tokio::pin!(stopped);
    loop {
        let delivered = tokio::select! {
            () = &mut stopped => return,
            message = messages.recv() => match message {
                Some(delivered) => delivered,
                None => return,
            },
        };
        apply(&live.load(), &caches, &delivered);
    }
}

fn apply(runtime: &Runtime, caches: &Caches, delivered: &Delivered) {
    match &delivered.message {
        Message::TargetHealth { upstream, target, healthy } => {
            let span = tracing::info_span!(
                target: traces::TARGET,
                "gossip reset",
                origin = %delivered.origin,
                upstream = %upstream,
                target = %target,
                healthy = healthy,
            );
            let _entered = span.enter();
            let found = runtime
                .upstreams
                .get(upstream)
                .and_then(|u| u.targets.iter().position(|t| &*t.authority == target).map(|i| &u.health[i]));
            match found {
                Some(health) => {
                    health.set(if *healthy { State::Healthy } else { State::Unhealthy }, Source::Gossip);
                    tracing::info!(origin = %delivered.origin, %upstream, %target, healthy, "health reset received");
                }
                None => {
                    tracing::debug!(origin = %delivered.origin, %upstream, %target, "health reset for a target not served here")
                }
            }
        }
        Message::CachePurge { key } => {
            caches.purge_memory(key.as_deref());
            tracing::info!(origin = %delivered.origin, key = key.as_deref().unwrap_or("*"), "cache purge received");
        }
    }
}
