//! This node's part in the cluster: the gossip handle, and the gateway's meaning of what travels
//! in it. The cluster crate carries bytes; this module says what they are:
//! - an operator's health set is durable state (every node gets it, however long it was away),
//!   under the key [`health_key`] with one byte, 1 healthy or 0 unhealthy;
//! - a cache purge is a message ([`Broadcast`]): a node away for longer than a minute misses it,
//!   and its memory cache holds entries no longer than their TTL anyway;
//! - a [`Question`] is a query every live member answers: each node's view of an upstream's
//!   health, for `GET /cluster/health/{upstream}`.

use crate::health::{Registry, SetOutcome, Source, State};
use crate::plugins::cache::Caches;
use crate::runtime::{Live, Runtime};
use crate::settings::Settings;
use crate::telemetry::traces;
use cluster::{
    ClusterConfig, ClusterError, ClusterHandle, Delivered, IncomingQuery, Message, StateChange, StateUpdate,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
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
    config.push_pull_interval = gossip.push_pull_interval;
    ClusterHandle::spawn(config).await
}

/// What this node broadcasts as a cluster message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Broadcast {
    /// Purge the proxy cache's memory: one key, or everything (`None`).
    CachePurge {
        /// The cache key; none purges all.
        key: Option<String>,
    },
    /// Drop every entry of a resource from the proxy cache's memory: an unsafe method succeeded
    /// on it (a node one version older logs that it cannot read this, and keeps its copies for
    /// their freshness or its memory level's residency).
    CacheInvalidate {
        /// The resource ([`crate::plugins::cache::key::resource_key`]).
        resource: String,
    },
}

impl Broadcast {
    /// As the cluster carries it.
    pub fn message(&self) -> Message {
        Message(serde_json::to_vec(self).expect("a Broadcast is plain data"))
    }
}

/// What this node asks every other with a cluster query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Question {
    /// The node's view of an upstream's targets (its `/upstreams/{u}/health`); JSON `null` from
    /// a node without the upstream.
    UpstreamHealth {
        /// The upstream's name.
        upstream: String,
    },
}

impl Question {
    /// As the cluster carries it.
    pub fn payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Question is plain data")
    }
}

/// This node's answer to `question`, as JSON.
fn answer(runtime: &Runtime, node_id: &str, question: &Question) -> serde_json::Value {
    match question {
        Question::UpstreamHealth { upstream } => upstream_health(runtime, node_id, upstream).unwrap_or_default(),
    }
}

/// The view of `upstream`'s targets of the node `node_id` serving `runtime`; none without the
/// upstream.
pub fn upstream_health(runtime: &Runtime, node_id: &str, upstream: &str) -> Option<serde_json::Value> {
    let mut view = runtime.upstreams.get(upstream)?.health_view();
    view["node_id"] = serde_json::json!(node_id);
    Some(view)
}

const HEALTH: &str = "health/";

/// The durable state key of the operators' word on `target` of `upstream`. Upstream names have
/// no `/`, so the first one after the prefix ends it.
pub fn health_key(upstream: &str, target: &str) -> String {
    format!("{HEALTH}{upstream}/{target}")
}

fn parse_health_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(HEALTH)?.split_once('/')
}

/// The durable state value of a health set.
pub fn health_value(state: State) -> Vec<u8> {
    vec![u8::from(state == State::Healthy)]
}

/// Applies what other nodes send until `stopped`: health sets (kept for targets this node does
/// not serve yet) and cache purges. Tells the cluster which health keys the config still has,
/// at every config change, so that sets of removed targets expire.
pub async fn receive(
    cluster: Arc<ClusterHandle>,
    live: Arc<Live>,
    caches: Arc<Caches>,
    stopped: impl Future<Output = ()>,
) {
    let mut messages = cluster.messages();
    let mut state = cluster.state_updates();
    let mut queries = cluster.queries();
    let mut applied = live.applied();
    applied.mark_changed();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            message = messages.recv() => match message {
                Some(delivered) => apply_message(&caches, &delivered),
                None => return,
            },
            update = state.recv() => match update {
                Some(update) => apply_state(live.health(), update),
                None => return,
            },
            query = queries.recv() => match query {
                Some(query) => answer_query(&cluster, &live.load(), query),
                None => return,
            },
            changed = applied.changed() => match changed {
                Ok(()) => cluster.scope_state(health_keys(&live.load())),
                Err(_) => return,
            },
        }
    }
}

/// The health keys of every target `runtime` serves.
fn health_keys(runtime: &Runtime) -> HashSet<String> {
    let targets = runtime.upstreams.iter().flat_map(|(name, u)| u.targets.iter().map(move |t| (name, &t.authority)));
    targets.map(|(upstream, target)| health_key(upstream, target)).collect()
}

fn apply_state(health: &Registry, update: StateUpdate) {
    match update {
        StateUpdate::Changed(StateChange { key, value, version }) => {
            let Some((upstream, target)) = parse_health_key(&key) else {
                tracing::debug!(%key, "durable state of another kind; ignored");
                return;
            };
            let state = match value.as_slice() {
                [1] => State::Healthy,
                [0] => State::Unhealthy,
                _ => return tracing::warn!(%key, ?value, "a health set with a value this node cannot read; ignored"),
            };
            let span = tracing::info_span!(
                target: traces::TARGET,
                "gossip reset",
                origin = %version.origin,
                upstream = %upstream,
                target = %target,
                healthy = state == State::Healthy,
            );
            let _entered = span.enter();
            let healthy = state == State::Healthy;
            let origin = version.origin.clone();
            match health.set(upstream, target, state, Source::Gossip, Some(version)) {
                SetOutcome::Applied => tracing::info!(%origin, %upstream, %target, healthy, "health set received"),
                SetOutcome::Kept => tracing::debug!(%origin, %upstream, %target, healthy,
                    "health set for a target not served here; kept for when it is"),
                SetOutcome::Superseded => tracing::debug!(%origin, %upstream, %target, healthy,
                    "health set older than one applied here; ignored"),
            }
        }
        StateUpdate::Expired(key) => {
            if let Some((upstream, target)) = parse_health_key(&key) {
                health.forget(upstream, target);
            }
        }
    }
}

fn answer_query(cluster: &ClusterHandle, runtime: &Runtime, query: IncomingQuery) {
    match serde_json::from_slice::<Question>(&query.payload) {
        Ok(question) => {
            let reply = answer(runtime, cluster.node_id(), &question);
            cluster.answer(query, reply.to_string().into_bytes());
        }
        Err(error) => tracing::warn!(from = %query.from, %error, "a cluster query this node cannot read"),
    }
}

fn apply_message(caches: &Caches, delivered: &Delivered) {
    match serde_json::from_slice::<Broadcast>(&delivered.message.0) {
        Ok(Broadcast::CachePurge { key }) => {
            caches.purge_memory(key.as_deref());
            tracing::info!(origin = %delivered.origin, key = key.as_deref().unwrap_or("*"), "cache purge received");
        }
        Ok(Broadcast::CacheInvalidate { resource }) => {
            let dropped = caches.invalidate_memory(&resource);
            tracing::info!(origin = %delivered.origin, %resource, dropped, "cache invalidation received");
        }
        Err(error) => tracing::warn!(origin = %delivered.origin, %error, "a cluster message this node cannot read"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_keys_name_the_upstream_and_the_whole_target() {
        let key = health_key("billing-v2", "[2001:db8::1]:8443");
        assert_eq!(parse_health_key(&key), Some(("billing-v2", "[2001:db8::1]:8443")));
        assert_eq!(parse_health_key("other/x/y"), None);
    }

    #[test]
    fn a_health_set_for_a_target_configured_later_applies_when_it_is() {
        let health = Registry::new();
        let change = |value: u8, ms: u64| {
            StateUpdate::Changed(StateChange {
                key: health_key("api", "10.0.0.1:80"),
                value: vec![value],
                version: cluster::Version { time: cluster::Hlc { ms, counter: 0 }, origin: "gw-2".into() },
            })
        };
        apply_state(&health, change(0, 1));
        assert!(!health.target("api", "10.0.0.1:80").is_healthy());
        assert!(health.target("api", "10.0.0.2:80").is_healthy());
        apply_state(&health, change(1, 2));
        assert!(health.target("api", "10.0.0.1:80").is_healthy());
        apply_state(&health, change(7, 3));
        assert!(health.target("api", "10.0.0.1:80").is_healthy(), "an unreadable value changes nothing");
    }

    #[test]
    fn broadcasts_read_back() {
        for message in
            [Broadcast::CachePurge { key: Some("/a".into()) }, Broadcast::CacheInvalidate { resource: "r".into() }]
        {
            assert_eq!(serde_json::from_slice::<Broadcast>(&message.message().0).unwrap(), message);
        }
    }
}
