//! The proxy: from a client's request to the upstream's response.
//!
//! For each request: load the runtime once, match a route, run the route's plugins (which may
//! answer it), rewrite the request (path, hop-by-hop headers, `X-Forwarded-*`, `Via`, `Host`),
//! then [`forward`] it with retries, and stream the response back through the plugins' response
//! phase with the latency headers. The proxy names no plugin: it runs the route's chain. Every failure becomes a [`ProxyError`], mapped to a
//! status in one place. A request someone logs (`http-log`, `access_log`) carries a draft of its
//! record ([`crate::request_log`]) along, finished by its body once sent.

mod body;
mod dial;
mod error;
mod forward;
mod grpc;
mod h2;
mod hash_key;
mod headers;
mod log;
mod path;
mod pool;
mod request_body;
mod span;
mod upgrade;

pub use body::ProxyBody;
pub use error::{json_error, ProxyError};
pub use log::Logs;
pub use pool::Pool;
pub use upgrade::Tunnels;

use crate::exchange::{number_header, BoxBody, ClientBody, ClientInfo};
use crate::plugins::pipeline::{Chain, Ctx, Flow, Refusal};
use crate::runtime::{Destination, Http2, Live, RouteEntry};
use crate::telemetry::{traces, Metrics, Name, RouteMetrics};
use config_sync::model::{Protocol, Route};
use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use log::Draft;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tracing::Instrument as _;

/// Serves proxied requests; shared by every connection.
pub struct Proxy {
    live: Arc<Live>,
    pool: Pool,
    metrics: Arc<Metrics>,
    /// `1.1 <node_id>`, this node's `Via` entry.
    via: HeaderValue,
    tunnels: Tunnels,
    /// The metrics of the requests no route matched (empty service and route labels), made by
    /// the first of them.
    unmatched: OnceLock<Arc<RouteMetrics>>,
    /// Where request records go.
    logs: Logs,
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
            via,
            tunnels: Tunnels::default(),
            unmatched: OnceLock::new(),
            logs: parts.logs,
        }
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
        let mut served = Served { grpc: grpc::is_grpc(request.headers()), ..Served::default() };
        let serving = self.serve(request, &uri, &client, received, &mut served);
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
                let mut response = match served.grpc {
                    true => ProxyBody::answer(grpc::answer(status, &error.to_string())),
                    false => error.to_response(),
                };
                headers::append_via(response.headers_mut(), &self.via);
                served.answered = Some(status);
                response
            }
        };
        // A gRPC answer is 200 whatever went wrong: metrics and spans count what it stands for.
        let status = served.answered.unwrap_or(response.status());
        span::finish(&span, &method, served.route.as_deref().map(|r| &r.route), status);
        let route = served.route.unwrap_or_else(|| {
            let unmatched = || Name(Arc::from(""));
            self.unmatched.get_or_init(|| Arc::new(self.metrics.route(&unmatched(), &unmatched()))).clone()
        });
        route.request(status.as_u16(), received.elapsed());
        match served.log {
            Some(mut draft) => {
                let (head, body) = response.into_parts();
                draft.respond(&head);
                Response::from_parts(head, ProxyBody::logged(body, draft))
            }
            None => response,
        }
    }

    async fn serve(
        &self,
        mut request: Request<Incoming>,
        uri: &Uri,
        client: &ClientInfo,
        received: Instant,
        served: &mut Served,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let runtime = self.live.load();
        let upgrade = request.version() == http::Version::HTTP_11 && headers::wants_upgrade(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        let host = request_host(&parts.uri, &parts.headers);
        // From the caller's copy of the URI: the request's own may be changed by plugins.
        let path = path::normalize(uri.path());
        let found = runtime.router.find(host.as_deref(), &path, &parts.method, &parts.headers, client.https);
        if traces::enabled() {
            let secrets = found.as_ref().map_or(&[][..], |f| runtime.routes[f.route].plugins.query_secrets());
            span::query(&tracing::Span::current(), uri.query(), secrets);
        }
        let Some(found) = found else {
            served.log = self.logs.unmatched(&parts, uri, host.as_deref(), client, received);
            return Err(ProxyError::NoRoute);
        };
        let entry = &runtime.routes[found.route];
        let metrics = entry.metrics.get_or_init(|| Arc::new(self.metrics.route(&entry.service_name, &entry.name)));
        served.route = Some(metrics.clone());
        let names = (&*entry.route.name, &*entry.route.service);
        let mut ctx = Ctx::new(&mut parts, client, names, (host.as_deref(), &path), metrics);
        ctx.body = ClientBody::Incoming(body);
        // In blocks of their own, here and below: a variable still in scope at the upstream's
        // `.await` would take room in the request's future even once moved out.
        {
            let scheme = other_scheme(&entry.route, client, host.as_deref(), uri);
            if !matches!(scheme, Ok(None)) {
                served.log = self.logs.matched(entry, &ctx, uri, received);
            }
            if let Some(answer) = scheme? {
                let mut answer = answer.map(ProxyBody::full);
                headers::append_via(answer.headers_mut(), &self.via);
                return Ok(answer);
            }
        }

        if entry.service.http2 == Http2::Grpc && ctx.request.version < http::Version::HTTP_2 {
            return Err(ProxyError::NeedsHttp2);
        }

        let plugins = &entry.plugins;
        {
            let answer = if plugins.is_empty() {
                None
            } else {
                match plugins.access(&mut ctx).await {
                    Flow::Continue => None,
                    Flow::Refuse(refusal) => {
                        served.answered = Some(refusal.status);
                        Some(refused(refusal, served.grpc))
                    }
                    Flow::Respond(response) => Some(response),
                }
            };
            served.log = self.logs.matched(entry, &ctx, uri, received);
            if let Some(answer) = answer {
                return Ok(self.finish(plugins, &mut ctx, answer.map(ProxyBody::full)));
            }
        }

        // The plugins may have changed the query (a key hidden from the upstream), or set the
        // whole path.
        let uri = match ctx.upstream_path.take() {
            Some(set) => path_and_query(&set, ctx.request.uri.query())?,
            None => upstream_uri(entry, &path, ctx.request.uri.query(), found.matched_len)?,
        };
        let preserve_host = entry.route.preserve_host || ctx.host_set;
        let stripped = if entry.route.strip_path { path.get(..found.matched_len).unwrap_or("") } else { "" };
        let parts = &mut *ctx.request;
        // gRPC's servers want to hear that the client takes trailers, which hop-by-hop removal
        // would hide: said again over HTTP/2, where it is the one `TE` allowed.
        let te_trailers = entry.service.http2 != Http2::No && headers::takes_trailers(&parts.headers);
        headers::remove_hop_by_hop(&mut parts.headers, upgrade);
        if te_trailers {
            parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if parts.version == http::Version::HTTP_2 {
            headers::join_cookies(&mut parts.headers);
        }
        headers::set_forwarded(&mut parts.headers, client, host.as_deref());
        headers::ForwardedPath::new(&path, stripped).apply(&mut parts.headers);
        headers::append_via(&mut parts.headers, &self.via);
        if entry.route.preserve_host && !ctx.host_set {
            if let Some(h) = host.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
                parts.headers.insert(header::HOST, h);
            }
        }
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        if let Some(log) = &mut served.log {
            log.upstream_uri(&parts.uri);
        }

        let body = std::mem::take(&mut ctx.body);
        // The upstream a plugin chose instead of the service's destination (`traffic-split`).
        // Validation leaves out what names an unknown upstream: a miss cannot happen, and would
        // answer as an upstream without targets does.
        let upstream = match ctx.upstream.as_deref() {
            Some(name) => Some(runtime.upstreams.get(name).ok_or_else(|| ProxyError::NoHealthyTarget(name.into()))?),
            None => None,
        };
        let attempt = forward::Attempt {
            pool: &self.pool,
            service: &entry.service,
            parts: ctx.request,
            client,
            preserve_host,
            metrics,
            upstream,
        };
        // Boxed: the upstream exchange is the largest part of the request's future, and held
        // inline it would be copied again at every level above it as each is made.
        let outcome = Box::pin(forward::forward(attempt, body)).await?;

        let upstream_name = match (upstream, &entry.service.destination) {
            (Some(chosen), _) | (None, Destination::Upstream(chosen)) => chosen.upstream.name.as_str(),
            (None, Destination::Address(_)) => "",
        };
        metrics.upstream(upstream_name, outcome.upstream_latency);
        if let Some(log) = &mut served.log {
            let proxy = outcome.sent_at.saturating_duration_since(received);
            log.forwarded(proxy, outcome.upstream_latency, outcome.response.body().target());
        }
        let mut response = outcome.response;
        headers::remove_hop_by_hop(response.headers_mut(), outcome.upgrade.is_some());
        ctx.upstream_answered = true;
        let mut response = self.finish(plugins, &mut ctx, response);
        let proxy_ms = outcome.sent_at.saturating_duration_since(received).as_millis() as u64;
        let upstream_ms = outcome.upstream_latency.as_millis() as u64;
        let h = response.headers_mut();
        h.insert(UPSTREAM_LATENCY.clone(), number_header(upstream_ms));
        h.insert(PROXY_LATENCY.clone(), number_header(proxy_ms));
        if let (Some(client_side), Some(upstream_side)) = (client_upgrade, outcome.upgrade) {
            self.tunnels.open(client_side, upstream_side, entry.service.service.read_timeout);
        }
        Ok(response)
    }

    /// Runs the plugins' response phase on `response` (an upstream's, or an answer of a plugin)
    /// and wraps its body as they ask, then adds this node's `Via`.
    fn finish(&self, plugins: &Chain, ctx: &mut Ctx<'_>, response: Response<ProxyBody>) -> Response<ProxyBody> {
        let (mut head, mut body) = response.into_parts();
        if !plugins.is_empty() {
            for filter in plugins.response(ctx, &mut head) {
                body = ProxyBody::Wrapped(filter(BoxBody::new(body)));
            }
        }
        headers::append_via(&mut head.headers, &self.via);
        Response::from_parts(head, body)
    }
}

/// The answer to a plain-HTTP request for a route that serves only HTTPS (426, or a redirect to
/// the same URL over HTTPS, as Kong); `NoRoute` for an HTTPS request to a route that serves only
/// plain HTTP; None when the route serves the request's scheme.
fn other_scheme(
    route: &Route,
    client: &ClientInfo,
    host: Option<&str>,
    uri: &Uri,
) -> Result<Option<Response<bytes::Bytes>>, ProxyError> {
    let wanted = if client.https { Protocol::Https } else { Protocol::Http };
    if route.protocols.contains(&wanted) {
        return Ok(None);
    }
    if client.https || !route.protocols.contains(&Protocol::Https) {
        return Err(ProxyError::NoRoute);
    }
    let host = host.map(headers::without_port).filter(|h| !h.is_empty());
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    // Without a host to send the client to, the answer is 426 whatever the route says.
    let location = host.and_then(|host| HeaderValue::try_from(format!("https://{host}{target}")).ok());
    let status = match (StatusCode::from_u16(route.https_redirect_status_code), &location) {
        (Ok(status), Some(_)) if status.is_redirection() => status,
        _ => StatusCode::UPGRADE_REQUIRED,
    };
    let mut response = crate::exchange::json_error(status, "Please use HTTPS protocol");
    let h = response.headers_mut();
    match location {
        Some(location) if status.is_redirection() => {
            h.insert(header::LOCATION, location);
        }
        _ => {
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("TLS/1.2, HTTP/1.1"));
        }
    }
    Ok(Some(response))
}

/// The answer to a request a plugin refused; in gRPC's form to a gRPC call.
fn refused(refusal: Refusal, grpc: bool) -> Response<bytes::Bytes> {
    let mut response = match grpc {
        true => grpc::answer(refusal.status, &refusal.message),
        false => crate::exchange::json_error(refusal.status, &refusal.message),
    };
    response.headers_mut().extend(*refusal.headers);
    response
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
    /// This node's id, for `Via`.
    pub node_id: String,
    /// Where request records go (`access_log`; `http-log` plugins are in the routes' chains).
    pub logs: Logs,
}

/// What serving a request found out, for its metrics and span.
#[derive(Default)]
struct Served {
    /// The matched route's metrics, which name it and its service.
    route: Option<Arc<RouteMetrics>>,
    /// The request's record, when someone logs it.
    log: Option<Box<Draft>>,
    /// The request is a gRPC call: the gateway's own answers take gRPC's form.
    grpc: bool,
    /// The status of the gateway's own answer (an error, a refusal), which a gRPC answer
    /// carries as a `grpc-status` under HTTP 200.
    answered: Option<StatusCode>,
}

/// The host the client asked for: the URI's authority (HTTP/2, absolute form) or `Host`.
fn request_host(uri: &Uri, headers: &http::HeaderMap) -> Option<String> {
    if let Some(authority) = uri.authority() {
        return Some(authority.as_str().to_owned());
    }
    headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned)
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

/// A path a plugin set, with the request's query.
fn path_and_query(path: &str, query: Option<&str>) -> Result<Uri, ProxyError> {
    let joined = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    Uri::try_from(joined).map_err(|_| ProxyError::BadRequest("the request path cannot be forwarded"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Runtime;

    fn entry(yaml: &str) -> Arc<Runtime> {
        let config = config_sync::declarative::parse(yaml).unwrap();
        let snapshot = Arc::new(config_sync::Snapshot::new(config, 1, vec![]));
        Arc::new(
            Runtime::build(snapshot, None, &crate::health::Registry::new(), &crate::plugins::Shared::in_memory())
                .unwrap(),
        )
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
