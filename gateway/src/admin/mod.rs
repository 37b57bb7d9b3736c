//! The admin API (JSON, on `admin_listen`).
//!
//! - Reads ([`read`]): status, the entities this node applied, target health.
//! - The operators' health sets: applied here at once, and written into the cluster's durable
//!   state for every other node ([`cluster_link`]).
//! - `GET /metrics`: Prometheus metrics.
//! - `/proxy-cache`: cache entries read and purged, cluster-wide.
//! - Writes ([`write`]): with `config_source = etcd`, `PUT` and `DELETE` on entities validate
//!   first and write to etcd; with the file they answer 405 and say how config changes.
//!
//! Every request must carry `Authorization: Bearer <admin_token>` when a token is set.

mod read;
mod write;

use crate::cluster_link::{self, Broadcast, Question};
use crate::health::{Source, State};
use crate::plugins::cache::{self, Caches};
use crate::plugins::rate_limit::Limiters;
use crate::proxy::{json_error, ProxyBody};
use crate::runtime::Live;
use crate::settings::{ConfigSource, Settings};
use crate::telemetry::Metrics;
use bytes::Bytes;
use cluster::ClusterHandle;
use config_sync::etcd::{EtcdStatus, EtcdWriter};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::watch;

/// The largest request body the admin API reads.
const MAX_BODY: usize = 1 << 20;
/// Longest wait for the other members' answers to a cluster-wide read.
const CLUSTER_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// What the admin API needs of etcd.
#[derive(Clone)]
pub struct EtcdLink {
    /// The source's status.
    pub status: watch::Receiver<EtcdStatus>,
    /// Writes entities.
    pub writer: EtcdWriter,
}

/// Serves the admin API.
pub struct Admin {
    live: Arc<Live>,
    node_id: String,
    token: Option<String>,
    source: ConfigSource,
    etcd: Option<EtcdLink>,
    metrics: Arc<Metrics>,
    cluster: Option<Arc<ClusterHandle>>,
    limiters: Arc<Limiters>,
    caches: Arc<Caches>,
    draining: watch::Receiver<bool>,
}

/// What the admin API reads and acts on.
pub struct Parts {
    /// The live runtime.
    pub live: Arc<Live>,
    /// etcd, when config comes from it.
    pub etcd: Option<EtcdLink>,
    /// Metrics to serve.
    pub metrics: Arc<Metrics>,
    /// Gossip, to broadcast resets and purges.
    pub cluster: Option<Arc<ClusterHandle>>,
    /// Rate-limit stores (whether Redis answers).
    pub limiters: Arc<Limiters>,
    /// Cache stores, to purge.
    pub caches: Arc<Caches>,
    /// True once the node is shutting down: `/status/ready` answers 503.
    pub draining: watch::Receiver<bool>,
}

impl Admin {
    /// An admin API over what `parts` hold.
    pub fn new(parts: Parts, settings: &Settings) -> Admin {
        Admin {
            live: parts.live,
            node_id: settings.node.node_id.clone(),
            token: settings.admin.token.clone().filter(|t| !t.is_empty()),
            source: settings.config.source,
            etcd: parts.etcd,
            metrics: parts.metrics,
            cluster: parts.cluster,
            limiters: parts.limiters,
            caches: parts.caches,
            draining: parts.draining,
        }
    }

    /// `GET /status/ready`: 200 while this node serves a config and is not shutting down, else
    /// 503 with the reason: what a load balancer in front checks.
    fn readiness(&self) -> Response<ProxyBody> {
        let not_ready = if *self.draining.borrow() {
            Some("shutting down")
        } else if self.live.load().snapshot.version == 0 {
            Some("no config applied yet")
        } else {
            None
        };
        match not_ready {
            Some(reason) => {
                json_response(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({ "ready": false, "reason": reason }))
            }
            None => json_response(StatusCode::OK, &serde_json::json!({ "ready": true })),
        }
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        if !self.authorized(&request) {
            let mut response = json_error(StatusCode::UNAUTHORIZED, "Unauthorized");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
        let (parts, body) = request.into_parts();
        let segments: Vec<&str> = parts.uri.path().split('/').filter(|s| !s.is_empty()).collect();
        let wait = parts.uri.query().is_some_and(|q| q.split('&').any(|p| p == "wait=1" || p == "wait=true"));
        if segments == ["metrics"] {
            return match parts.method {
                Method::GET | Method::HEAD => {
                    // OpenMetrics unless the client asks for text/plain alone (Prometheus asks
                    // for OpenMetrics first; older tools for the 0.0.4 text format).
                    let accept = parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
                    let (body, kind) = if accept.contains("text/plain") && !accept.contains("openmetrics") {
                        (self.metrics.render_prometheus_text(), "text/plain; version=0.0.4; charset=utf-8")
                    } else {
                        (self.metrics.render(), "application/openmetrics-text; version=1.0.0; charset=utf-8")
                    };
                    let mut response = Response::new(ProxyBody::full(body));
                    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
                    response
                }
                _ => method_not_allowed("GET, HEAD"),
            };
        }
        if let ["status", "ready"] = segments[..] {
            return match parts.method {
                Method::GET | Method::HEAD => self.readiness(),
                _ => method_not_allowed("GET, HEAD"),
            };
        }
        if let ["cluster", "keys"] = segments[..] {
            return match parts.method {
                Method::PUT => match read_body(body).await {
                    Ok(bytes) => self.set_cluster_keys(&bytes).await,
                    Err(response) => response,
                },
                _ => method_not_allowed("PUT"),
            };
        }
        if let ["cluster", "health", upstream] = segments[..] {
            return match parts.method {
                Method::GET | Method::HEAD => self.cluster_health(upstream).await,
                _ => method_not_allowed("GET, HEAD"),
            };
        }
        if segments.first() == Some(&"proxy-cache") {
            return self.proxy_cache(&parts.method, &segments[1..]).await;
        }
        let runtime = self.live.load();
        if let ["upstreams", upstream, "targets", target, action @ ("healthy" | "unhealthy")] = segments[..] {
            return match parts.method {
                Method::PUT | Method::POST => match read::unknown_target(&runtime, upstream, target) {
                    Some(not_found) => not_found,
                    None => {
                        let state = if action == "healthy" { State::Healthy } else { State::Unhealthy };
                        let version = self.share_health_set(upstream, target, state).await;
                        self.live.health().set(upstream, target, state, Source::Manual, version);
                        no_content()
                    }
                },
                _ => method_not_allowed("PUT, POST"),
            };
        }
        if let Some(key) = write::entity_key(&segments) {
            match (&parts.method, &self.etcd) {
                (&Method::GET | &Method::HEAD, _) => {}
                (&Method::PUT | &Method::DELETE, Some(link)) => {
                    let context = write::Context { link, live: &self.live, wait };
                    return if parts.method == Method::PUT {
                        match read_body(body).await {
                            Ok(bytes) => write::put(&context, &key, &bytes).await,
                            Err(response) => response,
                        }
                    } else {
                        write::delete(&context, &key).await
                    };
                }
                (_, Some(_)) => return method_not_allowed("GET, HEAD, PUT, DELETE"),
                (_, None) => {
                    let mut response = json_error(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "config_source is file: edit the declarative file and send SIGHUP to reload it",
                    );
                    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                    return response;
                }
            }
        }
        match (&parts.method, self.resource(&runtime, &segments)) {
            (_, None) => json_error(StatusCode::NOT_FOUND, "Not found"),
            (&Method::GET | &Method::HEAD, Some(Ok(value))) => json_response(StatusCode::OK, &value),
            (&Method::GET | &Method::HEAD, Some(Err(missing))) => json_error(StatusCode::NOT_FOUND, &missing),
            _ => method_not_allowed("GET, HEAD"),
        }
    }

    /// `DELETE /proxy-cache` (everything), `GET` and `DELETE /proxy-cache/{key}`. Purges clear
    /// Redis and this node's memory, and go to every other node for their memory caches.
    async fn proxy_cache(&self, method: &Method, rest: &[&str]) -> Response<ProxyBody> {
        let unavailable = |e: cache::store::Unavailable| json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        match (method, rest) {
            (&Method::DELETE, []) => match self.caches.purge_all().await {
                Ok(()) => {
                    self.broadcast_purge(None).await;
                    no_content()
                }
                Err(e) => unavailable(e),
            },
            (&Method::GET | &Method::HEAD, [key]) => {
                let now = std::time::SystemTime::now();
                let found = match self.caches.get(key, false, now).await {
                    Ok(Some(entry)) => Ok(Some(entry)),
                    _ => self.caches.get(key, true, now).await,
                };
                match found {
                    Ok(Some(entry)) => json_response(
                        StatusCode::OK,
                        &serde_json::json!({
                            "key": key,
                            "status": entry.status.as_u16(),
                            "age": entry.age(now),
                            "ttl": entry.remaining(now).as_secs(),
                            "bytes": entry.body.len(),
                        }),
                    ),
                    Ok(None) | Err(_) => json_error(StatusCode::NOT_FOUND, &format!("no cache entry {key:?}")),
                }
            }
            (&Method::DELETE, [key]) => match self.caches.purge(key).await {
                Ok(found) => {
                    self.broadcast_purge(Some(key)).await;
                    if found {
                        no_content()
                    } else {
                        json_error(StatusCode::NOT_FOUND, &format!("no cache entry {key:?}"))
                    }
                }
                Err(e) => unavailable(e),
            },
            (_, []) => method_not_allowed("DELETE"),
            (_, [_]) => method_not_allowed("GET, HEAD, DELETE"),
            _ => json_error(StatusCode::NOT_FOUND, "Not found"),
        }
    }

    /// Replaces this node's gossip keyring (`{"keys": [...]}`, the first sealing): one round of
    /// a key rotation ([`ClusterHandle::set_keys`]). The keys are never shown back.
    async fn set_cluster_keys(&self, body: &[u8]) -> Response<ProxyBody> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Keys {
            keys: Vec<String>,
        }
        let Some(cluster) = &self.cluster else {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "this node runs no cluster");
        };
        let keys = match serde_json::from_slice::<Keys>(body) {
            Ok(parsed) => parsed.keys,
            // serde's message may quote the body, and the body is secret: only where it failed.
            Err(e) => {
                let at = format!("line {} column {}", e.line(), e.column());
                return json_error(StatusCode::BAD_REQUEST, &format!("the body must be {{\"keys\": [...]}} ({at})"));
            }
        };
        match cluster.set_keys(keys).await {
            Ok(()) => no_content(),
            Err(cluster::ClusterError::Config(problems)) => json_error(StatusCode::BAD_REQUEST, &problems.join("; ")),
            Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &format!("cluster: {e}")),
        }
    }

    /// Every live member's view of `upstream`'s targets in one answer, this node's first, and
    /// the members that did not answer within [`CLUSTER_QUERY_TIMEOUT`].
    async fn cluster_health(&self, upstream: &str) -> Response<ProxyBody> {
        let mine = cluster_link::upstream_health(&self.live.load(), &self.node_id, upstream);
        let (mut answers, mut unanswered) = (Vec::new(), Vec::new());
        if let Some(cluster) = &self.cluster {
            let question = Question::UpstreamHealth { upstream: upstream.to_owned() };
            match cluster.query(question.payload(), CLUSTER_QUERY_TIMEOUT).await {
                Ok(result) => {
                    unanswered = result.missing;
                    for (member, bytes) in result.answers {
                        match serde_json::from_slice::<Value>(&bytes) {
                            Ok(Value::Null) => {}
                            Ok(view) => answers.push(view),
                            Err(_) => unanswered.push(member),
                        }
                    }
                }
                Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, &format!("cluster: {e}")),
            }
        }
        let data: Vec<Value> = mine.into_iter().chain(answers).collect();
        if data.is_empty() && unanswered.is_empty() {
            return json_error(StatusCode::NOT_FOUND, &format!("upstream {upstream:?} not found on any node"));
        }
        let body = serde_json::json!({ "upstream": upstream, "data": data, "unanswered": unanswered });
        json_response(StatusCode::OK, &body)
    }

    async fn broadcast_purge(&self, key: Option<&str>) {
        let Some(cluster) = &self.cluster else { return };
        let purge = Broadcast::CachePurge { key: key.map(str::to_owned) };
        if let Err(e) = cluster.broadcast(purge.message()).await {
            tracing::warn!(error = %e, "could not broadcast the cache purge");
        }
    }

    /// Writes a health set made here into the cluster's durable state, for every other node
    /// (those away now included, when they are back); the version it was given there, for it
    /// to apply here in the same order as on every node. A failure (the node is shutting down)
    /// is logged, not returned.
    async fn share_health_set(&self, upstream: &str, target: &str, state: State) -> Option<cluster::Version> {
        let cluster = self.cluster.as_ref()?;
        let key = cluster_link::health_key(upstream, target);
        match cluster.set_state(key, cluster_link::health_value(state)).await {
            Ok(version) => Some(version),
            Err(e) => {
                tracing::warn!(error = %e, %upstream, %target, "could not share the health set with the cluster");
                None
            }
        }
    }

    fn authorized<B>(&self, request: &Request<B>) -> bool {
        let Some(token) = &self.token else { return true };
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token);
        constant_time_eq(given.trim().as_bytes(), token.as_bytes())
    }
}

/// The request body, at most [`MAX_BODY`] bytes.
async fn read_body(body: Incoming) -> Result<Bytes, Response<ProxyBody>> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(json_error(StatusCode::PAYLOAD_TOO_LARGE, &format!("the body may be at most {MAX_BODY} bytes")))
        }
        Err(e) => Err(json_error(StatusCode::BAD_REQUEST, &format!("could not read the body: {e}"))),
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn no_content() -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn method_not_allowed(allow: &'static str) -> Response<ProxyBody> {
    let mut response = json_error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
