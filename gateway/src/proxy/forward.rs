//! Sending a request upstream, with retries on another target.
//!
//! An attempt that fails before the request left (the connection did not open, or the pooled
//! connection was closed before the request was written) is retried on another target, up to
//! the service's `retries`; so is any failed attempt of an idempotent request without a body,
//! which can be sent again as it was, and any such request whose try ran past the service's
//! `per_try_timeout`. An answer with a status of the service's `retry_on_statuses` is retried
//! the same way, for idempotent methods (any method with `retry_non_idempotent`); it is
//! dropped unread, before anything of it reached the client. A request whose body has started
//! streaming upstream is never retried: that body is gone, and the upstream's answer (or 502)
//! is the client's. A timeout of `read_timeout` waiting for the response head is final (504).
//! Each retry waits the service's `retry_backoff` first. Targets are chosen as [`choose`] says:
//! backups only while no primary target is healthy, the service's `fallback_upstream` only
//! while its upstream has no healthy target.

use super::body::{Completion, Held, ProxyBody};
use super::dial::ConnectError;
use super::error::ProxyError;
use super::grpc;
use super::hash_key::hash_key;
use super::pool::Pool;
use super::request_body::{ClientBodyError, IdleTimedOut, IdleTimeout, Progress, RequestBody};
use super::span;
use crate::balance::budget::InFlight;
use crate::balance::tiers::TieredPick;
use crate::exchange::{ClientBody, ClientInfo};
use crate::health::Outcome;
use crate::runtime::{Destination, Http2, ServiceEntry, TargetEntry, UpstreamState};
use crate::telemetry::{traces, RouteMetrics};
use config_sync::model::CheckType;
use config_sync::Algorithm;
use http::request::Parts;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::LengthLimitError;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::upgrade::OnUpgrade;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

/// One request to forward.
pub struct Attempt<'a> {
    /// Upstream connections.
    pub pool: &'a Pool,
    /// The matched route's service.
    pub service: &'a Arc<ServiceEntry>,
    /// The rewritten request head (method, upstream URI, headers).
    pub parts: &'a Parts,
    /// The client's connection.
    pub client: &'a ClientInfo,
    /// Keep the client's `Host` instead of the target's.
    pub preserve_host: bool,
    /// The route's metrics, where retries are counted.
    pub metrics: &'a RouteMetrics,
    /// An upstream a plugin chose (`traffic-split`) instead of the service's destination: its
    /// targets, balancer and health, with the service's timeouts, retries, TLS and path.
    pub upstream: Option<&'a Arc<UpstreamState>>,
}

/// Where an attempt's requests go.
#[derive(Clone, Copy)]
enum To<'a> {
    /// Balanced over an upstream's targets, or the fallback's while it has no healthy target.
    Upstream { own: &'a Arc<UpstreamState>, fallback: Option<&'a Arc<UpstreamState>> },
    /// One literal `host:port`.
    Address(&'a TargetEntry),
}

impl<'a> Attempt<'a> {
    /// The upstream a plugin chose, else the service's own destination and its fallback.
    fn destination(&self) -> To<'a> {
        match (self.upstream, &self.service.destination) {
            (Some(own), _) => To::Upstream { own, fallback: None },
            (None, Destination::Upstream(own)) => To::Upstream { own, fallback: self.service.fallback.as_ref() },
            (None, Destination::Address(target)) => To::Address(target),
        }
    }
}

/// The upstream's answer.
pub struct Forwarded {
    /// The response, its body streaming from the upstream.
    pub response: Response<ProxyBody>,
    /// The upstream side of a protocol switch (101).
    pub upgrade: Option<OnUpgrade>,
    /// When the successful attempt was sent.
    pub sent_at: Instant,
    /// From sending to the response head.
    pub upstream_latency: Duration,
}

/// The target an attempt goes to. Dropping it ends the balancer's count of the request, so a
/// request abandoned anywhere (the client went away mid-attempt) never leaks an in-flight count.
struct Chosen {
    target: TargetEntry,
    /// The upstream and the balancer's index, when balanced.
    pick: Option<(Arc<UpstreamState>, usize)>,
}

impl Chosen {
    /// Ends a failed attempt; passive checks count `outcome` (none when the failure was not the
    /// target's fault).
    fn failed(self, outcome: Option<Outcome>) {
        if let (Some((upstream, index)), Some(outcome)) = (&self.pick, outcome) {
            upstream.report(*index, outcome);
        }
    }

    /// Ends an attempt whose answer is not used; passive checks count its status.
    fn answered(self, status: StatusCode) {
        if let Some((upstream, index)) = &self.pick {
            if let Some(outcome) = upstream.policy.passive.classify(status.as_u16()) {
                upstream.report(*index, outcome);
            }
        }
    }

    /// Hands the balancer's count over to the response body, which ends it when it ends.
    fn into_finish(mut self, latency: Duration) -> Option<(Arc<UpstreamState>, usize, Duration)> {
        self.pick.take().map(|(upstream, index)| (upstream, index, latency))
    }
}

impl Drop for Chosen {
    fn drop(&mut self) {
        if let Some((upstream, index)) = self.pick.take() {
            upstream.finish(index, None);
        }
    }
}

/// Why one attempt failed, and what that allows next.
pub(super) enum Failure {
    /// Nothing reached the target; the body comes back for the next attempt.
    NotSent { outcome: Outcome, error: ProxyError, body: RequestBody },
    /// The exchange broke after the request left.
    Broken(hyper::Error),
    /// The client's body was at fault: final, and not the target's doing.
    Client(ProxyError),
    /// The upstream did not read the body or answer in time: final (504).
    TimedOut,
    /// The try ran past the service's `per_try_timeout`: retried when the request can be sent
    /// again, else final (504).
    TryTimedOut,
}

/// Forwards the request, retrying as the module doc says.
pub(crate) async fn forward(attempt: Attempt<'_>, client_body: ClientBody) -> Result<Forwarded, ProxyError> {
    let service = &attempt.service.service;
    let replayable = client_body.is_end_stream();
    let (mut body, progress) = if replayable {
        (Some(RequestBody::Empty), None)
    } else {
        let (body, progress) = RequestBody::stream(client_body, service.write_timeout);
        (Some(body), Some(progress))
    };
    let idempotent = is_idempotent(&attempt.parts.method);
    let destination = attempt.destination();
    let key = match destination {
        To::Upstream { own: up, .. } if up.upstream.algorithm == Algorithm::ConsistentHashing => {
            hash_key(&up.upstream, attempt.parts, attempt.client)
        }
        _ => None,
    };
    let mut tried = Tried::default();
    let mut last_error = ProxyError::Upstream("no attempt was made".into());
    // Counted against the upstream's retry budget while the request is in flight.
    let mut in_flight = match destination {
        To::Upstream { own, .. } => Some(own.budget.request()),
        To::Address(_) => None,
    };
    let mut admit = || in_flight.as_mut().is_none_or(InFlight::admit_retry);
    let mut reason = "connect";
    for retry in 0..=service.retries {
        let Some(request_body) = body.take() else { break };
        if retry > 0 {
            if !admit() {
                attempt.metrics.retry(reason, "budget_exhausted");
                tracing::debug!(reason, "retry refused by the upstream's retry budget");
                return Err(last_error);
            }
            attempt.metrics.retry(reason, "retried");
            let wait = service.retry_backoff.wait(retry, fastrand::f64());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        let chosen = choose(&attempt, destination, key, &mut tried)?;
        let span = span::attempt(&attempt.parts.method, &chosen.target.authority, retry);
        let sending = send(&attempt, &chosen.target, request_body, progress.as_deref());
        let sending = async {
            match service.per_try_timeout {
                Some(limit) => tokio::time::timeout(limit, sending).await.unwrap_or(Err(Failure::TryTimedOut)),
                None => sending.await,
            }
        };
        // Without a span, no `Instrumented` layer: one copy of the future fewer.
        let result = if span.is_none() { sending.await } else { sending.instrument(span.clone()).await };
        let last = retry == service.retries;
        let retry_status = match &result {
            Ok((response, _, _))
                if !last
                    && replayable
                    && (idempotent || service.retry_non_idempotent)
                    && service.retry_on_statuses.contains(&response.status().as_u16()) =>
            {
                // Decided before the answer is dropped: when the budget is spent, it is the client's.
                let admitted = admit();
                if !admitted {
                    attempt.metrics.retry("status", "budget_exhausted");
                }
                admitted
            }
            _ => false,
        };
        attempt_outcome(&span, &result, retry_status);
        match result {
            Ok((response, _, _)) if retry_status => {
                reason = "status";
                tracing::debug!(target = %chosen.target.authority, status = %response.status(), "retrying an answer");
                chosen.answered(response.status());
                // Dropped unread with its connection: the body may be large or never end.
                body = Some(RequestBody::Empty);
                last_error = ProxyError::Upstream(format!("the target answered {}", response.status()).into());
            }
            Ok((response, held, sent_at)) => {
                let pooled = (attempt.pool, tls_id(attempt.service));
                let http2 = attempt.service.http2 != Http2::No;
                return Ok(respond(response, chosen, held, pooled, http2, sent_at, service.read_timeout));
            }
            Err(Failure::TryTimedOut) => {
                chosen.failed(Some(Outcome::Timeout));
                if !(replayable && idempotent) {
                    return Err(ProxyError::Timeout);
                }
                body = Some(RequestBody::Empty);
                last_error = ProxyError::Timeout;
                reason = "per_try_timeout";
            }
            Err(Failure::NotSent { outcome, error, body: unsent }) => {
                tracing::debug!(target = %chosen.target.authority, error = %error, "attempt failed before sending");
                chosen.failed(Some(outcome));
                body = Some(unsent);
                last_error = error;
                reason = "connect";
            }
            Err(Failure::Broken(error)) => {
                chosen.failed(Some(Outcome::TcpFailure));
                if replayable && idempotent {
                    body = Some(RequestBody::Empty);
                }
                tracing::debug!(error = %error, retry = body.is_some(), "attempt failed");
                last_error = ProxyError::Upstream(Box::new(error));
                reason = "reset";
            }
            Err(Failure::Client(error)) => {
                chosen.failed(None);
                return Err(error);
            }
            Err(Failure::TimedOut) => {
                chosen.failed(Some(Outcome::Timeout));
                return Err(ProxyError::Timeout);
            }
        }
    }
    Err(last_error)
}

/// One attempt on one target. A pooled connection that turns out to have closed before the
/// request left is not the target's fault: the request goes again on a fresh connection to the
/// same target, within the same attempt.
pub(super) type Sent = (Response<Incoming>, Held, Instant);

async fn send(
    attempt: &Attempt<'_>,
    target: &TargetEntry,
    body: RequestBody,
    progress: Option<&Progress>,
) -> Result<Sent, Failure> {
    if attempt.service.http2 != Http2::No {
        // Boxed: the HTTP/1.1 request's future stays as small as it was.
        return Box::pin(send_h2(attempt, target, body, progress)).await;
    }
    let service = &attempt.service.service;
    let tls = attempt.service.tls.as_deref();
    let key = (target.authority.clone(), tls_id(attempt.service));
    let (mut sender, mut reused) = match attempt.pool.get(&key, tls, service.connect_timeout).await {
        Ok(got) => got,
        Err(e) => return Err(not_connected(e, body)),
    };
    let mut request = build_request(attempt.parts, target, attempt.preserve_host, body);
    if attempt.pool.preserves_header_case() {
        // hyper's record of the names' case, kept by the server in the client's request (its
        // type is private: the extensions go whole, less the client side of an upgrade).
        *request.extensions_mut() = attempt.parts.extensions.clone();
        request.extensions_mut().remove::<OnUpgrade>();
    }
    if traces::enabled() {
        // The attempt's span is current: the upstream's spans become its children.
        traces::inject(&tracing::Span::current(), request.headers_mut());
    }
    loop {
        let sent_at = Instant::now();
        // Pinned here, not inside `wait_for_head`, so that the future is held once.
        let head = std::pin::pin!(sender.try_send_request(request));
        let error = match wait_for_head(head, progress, service.write_timeout, service.read_timeout).await {
            Err(Stalled) => return Err(Failure::TimedOut),
            Ok(Ok(response)) => return Ok((response, Held::H1(sender), sent_at)),
            Ok(Err(error)) => error,
        };
        let unsent = unsent_on_reused(error, reused)?;
        tracing::debug!(target = %target.authority, "pooled connection closed before use; opening a fresh one");
        match Box::pin(attempt.pool.connect(&target.authority, tls, service.connect_timeout)).await {
            Ok(fresh) => (sender, reused, request) = (fresh, false, unsent),
            Err(e) => return Err(not_connected(e, unsent.into_body())),
        }
    }
}

/// One attempt on one target over HTTP/2, as [`send`] does over HTTP/1.1; `grpc-timeout`, when
/// shorter, bounds the wait for the response head.
async fn send_h2(
    attempt: &Attempt<'_>,
    target: &TargetEntry,
    body: RequestBody,
    progress: Option<&Progress>,
) -> Result<Sent, Failure> {
    let service = &attempt.service.service;
    let tls = attempt.service.tls.as_deref();
    let key = (target.authority.clone(), tls_id(attempt.service));
    let h2 = attempt.pool.h2();
    let (mut sender, mut slot, mut reused) = match h2.get(&key, tls, service.connect_timeout).await {
        Ok(got) => got,
        Err(e) => return Err(not_connected(e, body)),
    };
    let mut request = build_h2_request(attempt.parts, target, attempt.preserve_host, tls.is_some(), body);
    if traces::enabled() {
        traces::inject(&tracing::Span::current(), request.headers_mut());
    }
    let read_timeout = match grpc::timeout(attempt.parts.headers.get(&grpc::TIMEOUT)) {
        Some(deadline) => deadline.min(service.read_timeout),
        None => service.read_timeout,
    };
    loop {
        let sent_at = Instant::now();
        let head = std::pin::pin!(sender.try_send_request(request));
        let error = match wait_for_head(head, progress, service.write_timeout, read_timeout).await {
            Err(Stalled) => return Err(Failure::TimedOut),
            Ok(Ok(response)) => return Ok((response, Held::H2(slot), sent_at)),
            Ok(Err(error)) => error,
        };
        let unsent = unsent_on_reused(error, reused)?;
        tracing::debug!(target = %target.authority, "HTTP/2 connection closed before use; opening a fresh one");
        match h2.open(&key, tls, service.connect_timeout).await {
            Ok((fresh, fresh_slot)) => (sender, slot, reused, request) = (fresh, fresh_slot, false, unsent),
            Err(e) => return Err(not_connected(e, unsent.into_body())),
        }
    }
}

/// A connection that did not open, as a failure of the attempt.
fn not_connected(error: ConnectError, body: RequestBody) -> Failure {
    match error {
        ConnectError::Timeout(_) => Failure::NotSent { outcome: Outcome::Timeout, error: ProxyError::Timeout, body },
        other => Failure::NotSent { outcome: Outcome::TcpFailure, error: ProxyError::Connect(Box::new(other)), body },
    }
}

/// After a failed send: the request, to go again on a fresh connection, when it never left a
/// connection that was `reused` (it closed while idle); else how the attempt failed.
fn unsent_on_reused(
    mut error: TrySendError<Request<RequestBody>>,
    reused: bool,
) -> Result<Request<RequestBody>, Failure> {
    if let Some(client_error) = client_fault(error.error()) {
        return Err(Failure::Client(client_error));
    }
    match error.take_message() {
        None => Err(Failure::Broken(error.into_error())),
        Some(unsent) if !reused => Err(Failure::NotSent {
            outcome: Outcome::TcpFailure,
            error: ProxyError::Upstream(Box::new(error.into_error())),
            body: unsent.into_body(),
        }),
        Some(unsent) => Ok(unsent),
    }
}

/// The targets a request tried, in its service's upstream and in the fallback.
#[derive(Default)]
struct Tried {
    own: Vec<usize>,
    fallback: Vec<usize>,
}

/// Picks the next target: in the upstream, a healthy one (a primary while one is healthy, else
/// a backup) not tried yet by this request while there is one; when the upstream has no
/// healthy target, in the service's `fallback_upstream` the same way.
fn choose(
    attempt: &Attempt<'_>,
    destination: To<'_>,
    key: Option<u64>,
    tried: &mut Tried,
) -> Result<Chosen, ProxyError> {
    let (own, fallback) = match destination {
        To::Address(target) => return Ok(Chosen { target: target.clone(), pick: None }),
        To::Upstream { own, fallback } => (own, fallback),
    };
    if let Some(index) = pick(own, key, &mut tried.own) {
        return Ok(Chosen { target: own.targets[index].clone(), pick: Some((own.clone(), index)) });
    }
    if let Some(fallback) = fallback {
        let key = match fallback.upstream.algorithm {
            Algorithm::ConsistentHashing => hash_key(&fallback.upstream, attempt.parts, attempt.client),
            _ => None,
        };
        if let Some(index) = pick(fallback, key, &mut tried.fallback) {
            tracing::debug!(upstream = %own.upstream.name, fallback = %fallback.upstream.name, "no healthy target: falling back");
            return Ok(Chosen { target: fallback.targets[index].clone(), pick: Some((fallback.clone(), index)) });
        }
    }
    Err(ProxyError::NoHealthyTarget(own.upstream.name.clone()))
}

/// A healthy target of `upstream`, counted in `tried`; none when it has none (or too few).
///
/// With a `slow_start`, a target that turned healthy within it is kept only with a probability
/// growing linearly over it (its warmth); otherwise the balancer picks once more without it.
/// Only the picked target's warmth is read: the pick stays at the algorithm's cost, plus one
/// pick at most.
fn pick(upstream: &Arc<UpstreamState>, hash_key: Option<u64>, tried: &mut Vec<usize>) -> Option<usize> {
    if !upstream.above_threshold() {
        return None;
    }
    let now = Instant::now();
    let unhealthy = |i: usize| !upstream.health[i].is_healthy();
    let mut balancer = upstream.balancer();
    let mut index = balancer.pick(&TieredPick { hash_key, now, unhealthy: &unhealthy, tried })?;
    let window = upstream.upstream.slow_start;
    if !window.is_zero() && fastrand::f64() >= upstream.health[index].warmth(now, window) {
        tried.push(index);
        let other = balancer.pick(&TieredPick { hash_key, now, unhealthy: &unhealthy, tried });
        tried.pop();
        if let Some(other) = other {
            // The first pick's count ends; the second's holds (the same target again when it
            // is the only one left).
            balancer.finish(index, None, now);
            index = other;
        }
    }
    drop(balancer);
    tried.push(index);
    Some(index)
}

/// The request over HTTP/2: the URI absolute (its authority the target's, or the client's with
/// `preserve_host`), no `Host`, no hop-by-hop length headers.
fn build_h2_request(
    parts: &Parts,
    target: &TargetEntry,
    preserve_host: bool,
    tls: bool,
    body: RequestBody,
) -> Request<RequestBody> {
    let mut headers = parts.headers.clone();
    let host = headers.remove(header::HOST).filter(|_| preserve_host);
    let host = host.as_ref().unwrap_or(&target.host_header);
    let scheme = if tls { "https" } else { "http" };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // Both are checked already (the target's host, the client's Host, the request path).
    let uri = format!("{scheme}://{}{path}", host.to_str().unwrap_or("localhost")).parse().unwrap_or_default();
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_2;
    headers.remove(header::TRANSFER_ENCODING);
    *request.headers_mut() = headers;
    request
}

fn build_request(parts: &Parts, target: &TargetEntry, preserve_host: bool, body: RequestBody) -> Request<RequestBody> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = http::Version::HTTP_11;
    *request.headers_mut() = parts.headers.clone();
    let headers = request.headers_mut();
    if !preserve_host || !parts.headers.contains_key(header::HOST) {
        headers.insert(header::HOST, target.host_header.clone());
    }
    // A body of unknown length is sent chunked. hyper would otherwise send none at all for a GET
    // or HEAD, where it assumes there is no body.
    if matches!(request.body(), RequestBody::Stream { .. }) && !request.headers().contains_key(header::CONTENT_LENGTH) {
        request.headers_mut().insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    request
}

/// Neither the body nor the response head moved in time.
struct Stalled;

/// Waits for the response head. While the body is still going up, the upstream must keep
/// taking it (`write_timeout` without progress is a stall); once it is all sent, the head must
/// come within `read_timeout`. A long upload is therefore not cut by the read timeout.
async fn wait_for_head<F: Future>(
    mut head: Pin<&mut F>,
    progress: Option<&Progress>,
    write_timeout: Duration,
    read_timeout: Duration,
) -> Result<F::Output, Stalled> {
    if let Some(progress) = progress {
        let sent = progress.sent();
        tokio::pin!(sent);
        loop {
            tokio::select! {
                biased;
                out = &mut head => return Ok(out),
                () = &mut sent => break,
                () = tokio::time::sleep_until(progress.deadline(write_timeout)) => {
                    if progress.upstream_stalled(write_timeout) {
                        return Err(Stalled);
                    }
                }
            }
        }
    }
    tokio::time::timeout(read_timeout, head).await.map_err(|_| Stalled)
}

/// How the service's connections are told apart in the pool: 0 for plain text.
fn tls_id(service: &ServiceEntry) -> u64 {
    service.tls.as_ref().map_or(0, |tls| tls.id)
}

fn respond(
    mut response: Response<Incoming>,
    chosen: Chosen,
    held: Held,
    (pool, tls_id): (&Pool, u64),
    http2: bool,
    sent_at: Instant,
    read_timeout: Duration,
) -> Forwarded {
    let latency = sent_at.elapsed();
    let upgrade = (response.status() == StatusCode::SWITCHING_PROTOCOLS).then(|| hyper::upgrade::on(&mut response));
    let mut grpc_health = None;
    if let Some((upstream, index)) = &chosen.pick {
        let status = response.status().as_u16();
        // A gRPC call's status is its `grpc-status`: in the head of a trailers-only answer,
        // else in the trailers, counted when they come.
        let counted = upstream.policy.passive.check_type != CheckType::Tcp;
        let grpc = http2 && counted && status == 200 && grpc::is_grpc(response.headers());
        if grpc && !response.headers().contains_key(&grpc::STATUS) {
            grpc_health = Some((upstream.clone(), *index));
        } else if grpc {
            upstream.report(*index, grpc::outcome(grpc::status_of(response.headers())));
        } else if let Some(outcome) = upstream.policy.passive.classify(status) {
            upstream.report(*index, outcome);
        }
    }
    let connection = upgrade.is_none().then(|| (pool.clone(), (chosen.target.authority.clone(), tls_id), held));
    let finish = chosen.into_finish(latency);
    let response = response.map(|incoming| ProxyBody::Upstream {
        body: IdleTimeout::new(incoming, read_timeout),
        completion: Completion { connection, finish, grpc_health },
    });
    Forwarded { response, upgrade, sent_at, upstream_latency: latency }
}

/// The error to answer with when an exchange failed because of the client's body (it stalled:
/// 408; it went past a plugin's size limit: 413; it was malformed: 400), not because of the
/// upstream.
fn client_fault(error: &hyper::Error) -> Option<ProxyError> {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(ClientBodyError(inner)) = e.downcast_ref::<ClientBodyError>() {
            return Some(if inner.is::<IdleTimedOut>() {
                ProxyError::ClientTimeout
            } else if inner.is::<LengthLimitError>() {
                ProxyError::PayloadTooLarge
            } else {
                ProxyError::BadRequest("the request body is malformed")
            });
        }
        source = e.source();
    }
    None
}

fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE)
}

/// Records how an attempt ended on its span.
fn attempt_outcome(span: &tracing::Span, result: &Result<Sent, Failure>, retry_status: bool) {
    if span.is_none() {
        return;
    }
    let error = match result {
        Ok((response, _, _)) => {
            span.record("http.response.status_code", response.status().as_u16());
            if retry_status {
                Some("retried_status")
            } else {
                response.status().is_server_error().then_some("http_status")
            }
        }
        Err(Failure::NotSent { .. }) => Some("connect"),
        Err(Failure::Broken(_)) => Some("reset"),
        Err(Failure::Client(_)) => Some("client_body"),
        Err(Failure::TimedOut) => Some("timeout"),
        Err(Failure::TryTimedOut) => Some("per_try_timeout"),
    };
    if let Some(kind) = error {
        span.record("error.type", kind);
        span.record("otel.status_code", "ERROR");
    }
}
