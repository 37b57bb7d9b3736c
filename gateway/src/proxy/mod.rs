//! The proxy: from a client's request to the upstream's response.
//!
//! For each request: load the runtime once, match a route, rewrite the request (path, hop-by-hop
//! headers, `X-Forwarded-*`, `Via`, `Host`), then [`forward`] it with retries, and stream the
//! response back with the latency headers. Every failure becomes a [`ProxyError`], mapped to a
//! status in one place.

mod body;
mod error;
mod forward;
mod hash_key;
mod headers;
mod path;
mod pool;
mod span;
mod upgrade;

pub use body::{BoxError, ProxyBody};
pub use error::{json_error, ProxyError};
pub use headers::{number as number_header, ClientInfo};
pub use pool::Pool;
pub use upgrade::Tunnels;

use crate::plugins::cache::key::Request as CacheRequest;
use crate::plugins::cache::step::{self, Before, CacheStatus};
use crate::plugins::cache::Caches;
use crate::plugins::rate_limit::{self, Limiters, Verdict};
use crate::runtime::{Live, RouteEntry};
use crate::telemetry::{traces, Metrics, Name, RouteMetrics};
use http::{header, HeaderName, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::sync::watch;
use tracing::Instrument as _;

/// Serves proxied requests; shared by every connection.
pub struct Proxy {
    live: Arc<Live>,
    pool: Pool,
    metrics: Arc<Metrics>,
    limiters: Arc<Limiters>,
    caches: Arc<Caches>,
    /// The cluster's members, for limits split among them when Redis is out.
    members: Option<watch::Receiver<Vec<cluster::Member>>>,
    /// `1.1 <node_id>`, this node's `Via` entry.
    via: HeaderValue,
    tunnels: Tunnels,
    /// The metrics of the requests no route matched (empty service and route labels), made by
    /// the first of them.
    unmatched: OnceLock<Arc<RouteMetrics>>,
}

impl Proxy {
    /// A proxy serving what `live` holds, over connections from `pool`.
    pub fn new(parts: Parts) -> Proxy {
        let via =
            HeaderValue::try_from(format!("1.1 {}", parts.node_id)).unwrap_or(HeaderValue::from_static("1.1 gateway"));
        Proxy {
            live: parts.live,
            pool: parts.pool,
            metrics: parts.metrics,
            limiters: parts.limiters,
            caches: parts.caches,
            members: parts.members,
            via,
            tunnels: Tunnels::default(),
            unmatched: OnceLock::new(),
        }
    }

    /// Live members of the cluster (1 without gossip).
    fn alive_members(&self) -> usize {
        self.members
            .as_ref()
            .map_or(1, |m| m.borrow().iter().filter(|m| m.state == cluster::MemberState::Alive).count().max(1))
    }

    /// The upgraded connections (WebSocket) this proxy has open.
    pub fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    /// Serves one request; never fails: errors become JSON responses.
    ///
    /// Takes the proxy by `Arc` so that the returned future owns it and needs no wrapper: every
    /// level of nesting costs a copy of the whole (kilobytes large) future when it is made.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>, client: Arc<ClientInfo>) -> Response<ProxyBody> {
        let received = Instant::now();
        let method = request.method().clone();
        // Kept for the error log; cloning a Uri shares its bytes.
        let uri = request.uri().clone();
        let span = if traces::enabled() { span::server(&request, &client) } else { tracing::Span::none() };
        let mut served = Served::default();
        let serving = self.serve(request, &client, received, &mut served);
        // Without a span, no `Instrumented` layer: one copy of the future fewer.
        let result = if span.is_none() { serving.await } else { serving.instrument(span.clone()).await };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                let status = error.status();
                if status.is_server_error() {
                    let cause = std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default();
                    let client = client.ip_text();
                    tracing::warn!(%method, path = uri.path(), %status, client, error = %error, %cause, "proxy error");
                } else {
                    let client = client.ip_text();
                    tracing::debug!(%method, path = uri.path(), %status, client, error = %error, "request refused");
                }
                let mut response = error.to_response();
                headers::append_via(response.headers_mut(), &self.via);
                response
            }
        };
        let status = response.status();
        span::finish(&span, &method, served.route.as_deref().map(|r| &r.route), status);
        let route = served.route.unwrap_or_else(|| {
            let unmatched = || Name(Arc::from(""));
            self.unmatched.get_or_init(|| Arc::new(self.metrics.route(&unmatched(), &unmatched()))).clone()
        });
        route.request(status.as_u16(), received.elapsed(), served.upstream_latency);
        response
    }

    async fn serve(
        &self,
        mut request: Request<Incoming>,
        client: &ClientInfo,
        received: Instant,
        served: &mut Served,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let runtime = self.live.load();
        let host = request_host(&request);
        let path = path::normalize(request.uri().path());
        let found = runtime
            .router
            .find(host.as_deref(), &path, request.method(), request.headers())
            .ok_or(ProxyError::NoRoute)?;
        let entry = &runtime.routes[found.route];
        let metrics = entry.metrics.get_or_init(|| Arc::new(self.metrics.route(&entry.service_name, &entry.name)));
        served.route = Some(metrics.clone());
        let uri = upstream_uri(entry, &path, request.uri().query(), found.matched_len)?;
        let mut limited = None;
        if let Some(limit) = &entry.rate_limit {
            let value = limit.value(request.headers(), client, &entry.route.service, &entry.route.name, &path);
            let span = span::rate_limit();
            // Boxed, as the cache step below: a Redis call's future is large, and held inline it
            // would be moved with every request, limited or not.
            let (verdict, how) =
                Box::pin(self.limiters.decide(limit, &value, self.alive_members()).instrument(span.clone())).await;
            let outcome = match &verdict {
                Verdict::Allowed(_) => "allowed",
                Verdict::Limited(_) => "limited",
                Verdict::Unavailable => "unavailable",
            };
            span.record("outcome", outcome);
            span.record("store", how.as_str());
            metrics.rate_limit(outcome, how);
            match verdict {
                Verdict::Allowed(decision) => limited = (!limit.config.hide_client_headers).then_some(decision),
                Verdict::Limited(decision) => {
                    let mut response = json_error(http::StatusCode::TOO_MANY_REQUESTS, "API rate limit exceeded");
                    if !limit.config.hide_client_headers {
                        rate_limit::headers(&decision, response.headers_mut());
                    }
                    response.headers_mut().insert(header::RETRY_AFTER, rate_limit::retry_after(&decision));
                    headers::append_via(response.headers_mut(), &self.via);
                    return Ok(response);
                }
                Verdict::Unavailable => {
                    return Err(ProxyError::RateLimitUnavailable);
                }
            }
        }
        let mut cached = None;
        if let Some(config) = &entry.plugins.proxy_cache {
            let redis_down = self.limiters.redis_state() == Some(false);
            let looked_up = CacheRequest { method: request.method(), uri: request.uri(), headers: request.headers() };
            let host_name = host.as_deref().unwrap_or("");
            let span = span::cache();
            let before = Box::pin(
                step::before(&self.caches, &entry.route.name, config, looked_up, host_name, &path, redis_down)
                    .instrument(span.clone()),
            )
            .await;
            match before {
                Before::Hit(mut response) => {
                    span.record("status", "Hit");
                    self.metrics.cache(CacheStatus::Hit.as_str());
                    headers::append_via(response.headers_mut(), &self.via);
                    if let Some(decision) = &limited {
                        rate_limit::headers(decision, response.headers_mut());
                    }
                    return Ok(response);
                }
                // Boxed: held across the upstream call, inline it would enlarge every request.
                Before::Forward(pass) => cached = Some(Box::new((pass, span))),
            }
        }
        let stripped = if entry.route.strip_path { path.get(..found.matched_len).unwrap_or("") } else { "" };
        let forwarded_path = headers::ForwardedPath::new(&path, stripped);
        drop(path);

        let upgrade = request.version() == http::Version::HTTP_11 && headers::wants_upgrade(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers, upgrade);
        if parts.version == http::Version::HTTP_2 {
            headers::join_cookies(&mut parts.headers);
        }
        headers::set_forwarded(&mut parts.headers, client, host.as_deref());
        forwarded_path.apply(&mut parts.headers);
        headers::append_via(&mut parts.headers, &self.via);
        if entry.route.preserve_host {
            if let Some(h) = host.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
                parts.headers.insert(header::HOST, h);
            }
        }
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;

        let attempt = forward::Attempt {
            pool: &self.pool,
            service: &entry.service,
            parts: &parts,
            client,
            preserve_host: entry.route.preserve_host,
        };
        // Boxed: the upstream exchange is the largest part of the request's future, and held
        // inline it would be copied again at every level above it as each is made.
        let outcome = Box::pin(forward::forward(attempt, body)).await?;

        served.upstream_latency = Some(outcome.upstream_latency);
        let mut response = outcome.response;
        headers::remove_hop_by_hop(response.headers_mut(), outcome.upgrade.is_some());
        if let Some((pass, span)) = cached.map(|b| *b) {
            let (marked, status) = step::after(pass, &self.caches, response);
            span.record("status", status.as_str());
            self.metrics.cache(status.as_str());
            response = marked;
        }
        headers::append_via(response.headers_mut(), &self.via);
        let proxy_ms = outcome.sent_at.saturating_duration_since(received).as_millis() as u64;
        let upstream_ms = outcome.upstream_latency.as_millis() as u64;
        let h = response.headers_mut();
        h.insert(UPSTREAM_LATENCY.clone(), headers::number(upstream_ms));
        h.insert(PROXY_LATENCY.clone(), headers::number(proxy_ms));
        if let Some(decision) = &limited {
            rate_limit::headers(decision, h);
        }
        if let (Some(client_side), Some(upstream_side)) = (client_upgrade, outcome.upgrade) {
            self.tunnels.open(client_side, upstream_side, entry.service.service.read_timeout);
        }
        Ok(response)
    }
}

static UPSTREAM_LATENCY: HeaderName = HeaderName::from_static("x-gateway-upstream-latency");
static PROXY_LATENCY: HeaderName = HeaderName::from_static("x-gateway-proxy-latency");

/// What a proxy is made of.
pub struct Parts {
    /// The live runtime.
    pub live: Arc<Live>,
    /// Upstream connections.
    pub pool: Pool,
    /// Where requests are counted.
    pub metrics: Arc<Metrics>,
    /// Rate-limit stores.
    pub limiters: Arc<Limiters>,
    /// Cache stores.
    pub caches: Arc<Caches>,
    /// The cluster's members, when gossip is on.
    pub members: Option<watch::Receiver<Vec<cluster::Member>>>,
    /// This node's id, for `Via`.
    pub node_id: String,
}

/// What serving a request found out, for its metrics and span.
#[derive(Default)]
struct Served {
    /// The matched route's metrics, which name it and its service.
    route: Option<Arc<RouteMetrics>>,
    /// The upstream's time to the response head.
    upstream_latency: Option<std::time::Duration>,
}

/// The host the client asked for: the URI's authority (HTTP/2, absolute form) or `Host`.
fn request_host<B>(request: &Request<B>) -> Option<String> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.as_str().to_owned());
    }
    request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned)
}

/// The upstream request's path and query: the service's path, then the request path with the
/// matched part removed when the route strips it.
fn upstream_uri(entry: &RouteEntry, path: &str, query: Option<&str>, matched_len: usize) -> Result<Uri, ProxyError> {
    let rest = if entry.route.strip_path { path.get(matched_len..).unwrap_or("") } else { path };
    let base = entry.service.path.as_str();
    let mut joined = String::with_capacity(base.len() + rest.len() + 2 + query.map_or(0, |q| q.len() + 1));
    joined.push_str(base);
    if rest.is_empty() {
        if joined.is_empty() {
            joined.push('/');
        }
    } else {
        if !rest.starts_with('/') {
            joined.push('/');
        }
        joined.push_str(rest);
    }
    if let Some(q) = query {
        joined.push('?');
        joined.push_str(q);
    }
    Uri::try_from(joined).map_err(|_| ProxyError::BadRequest("the request path cannot be forwarded"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Runtime;

    fn entry(yaml: &str) -> Arc<Runtime> {
        let config = config_sync::declarative::parse(yaml).unwrap();
        let snapshot = Arc::new(config_sync::Snapshot::new(config, 1, vec![]));
        Arc::new(Runtime::build(snapshot, None, &crate::health::Registry::new()).unwrap())
    }

    #[test]
    fn paths_join_as_documented() {
        let rt = entry(
            r#"
services:
  - name: s
    url: http://up/v1
    routes:
      - { name: strip, paths: [/orders] }
      - { name: keep, paths: [/keep], strip_path: false }
      - { name: re, paths: ["~/items/\\d+"] }
  - { name: bare, url: "http://up", routes: [{ name: bare, paths: [/bare] }] }
"#,
        );
        let case = |name: &str, matched: usize, uri: &str| {
            let e = rt.routes.iter().find(|r| r.route.name == name).unwrap();
            let uri: Uri = uri.parse().unwrap();
            upstream_uri(e, uri.path(), uri.query(), matched).unwrap().to_string()
        };
        assert_eq!(case("strip", 7, "/orders/1?x=1"), "/v1/1?x=1");
        assert_eq!(case("strip", 7, "/orders"), "/v1");
        assert_eq!(case("strip", 7, "/ordersx"), "/v1/x");
        assert_eq!(case("keep", 5, "/keep/a"), "/v1/keep/a");
        assert_eq!(case("re", 9, "/items/42/x"), "/v1/x");
        assert_eq!(case("bare", 5, "/bare"), "/");
        assert_eq!(case("bare", 5, "/bare/z"), "/z");
    }
}
