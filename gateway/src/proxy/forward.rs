//! Sending a request upstream, with retries on another target.
//!
//! An attempt that fails before the request left (the connection did not open, or the pooled
//! connection was closed before the request was written) is retried on another target, up to
//! the service's `retries`; so is any failed attempt of an idempotent request without a body,
//! which can be sent again as it was. A request whose body has started streaming upstream is
//! not retried: that body is gone. A timeout waiting for the response head is final (504).

use super::body::{Completion, IdleTimedOut, IdleTimeout, ProxyBody, RequestBody};
use super::error::ProxyError;
use super::hash_key::hash_key;
use super::headers::ClientInfo;
use super::pool::{ConnectError, Pool};
use crate::balance::Pick;
use crate::health::Outcome;
use crate::runtime::{Destination, ServiceEntry, TargetEntry, UpstreamState};
use config_sync::Algorithm;
use http::request::Parts;
use http::{header, Method, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// One request to forward.
pub struct Attempt<'a> {
    /// Upstream connections.
    pub pool: &'a Pool,
    /// The matched route's service.
    pub service: &'a Arc<ServiceEntry>,
    /// The rewritten request head (method, upstream URI, headers).
    pub parts: &'a Parts,
    /// The client's body.
    pub body: Incoming,
    /// The client's connection.
    pub client: &'a ClientInfo,
    /// Keep the client's `Host` instead of the target's.
    pub preserve_host: bool,
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

/// The target an attempt goes to.
struct Chosen {
    target: TargetEntry,
    /// The upstream and the balancer's index, when balanced.
    pick: Option<(Arc<UpstreamState>, usize)>,
}

impl Chosen {
    /// Ends a failed attempt: the balancer hears of it, and passive checks count `outcome`
    /// (none when the failure was not the target's fault).
    fn failed(&self, outcome: Option<Outcome>) {
        if let Some((upstream, index)) = &self.pick {
            upstream.finish(*index, None);
            if let Some(outcome) = outcome {
                upstream.report(*index, outcome);
            }
        }
    }
}

/// Forwards the request, retrying as the module doc says.
pub async fn forward(attempt: Attempt<'_>) -> Result<Forwarded, ProxyError> {
    let service = &attempt.service.service;
    let replayable = attempt.body.is_end_stream();
    let (mut body, mut body_sent) = if replayable {
        (Some(RequestBody::Empty), None)
    } else {
        let (body, sent) = RequestBody::stream(attempt.body, service.write_timeout);
        (Some(body), Some(sent))
    };
    let idempotent = is_idempotent(&attempt.parts.method);
    let key = match &attempt.service.destination {
        Destination::Upstream(up) if up.upstream.algorithm == Algorithm::ConsistentHashing => {
            hash_key(&up.upstream, attempt.parts, attempt.client)
        }
        _ => None,
    };
    let mut tried = Vec::new();
    let mut last_error = ProxyError::Upstream("no attempt was made".into());
    for _ in 0..=service.retries {
        let Some(request_body) = body.take() else { break };
        let chosen = choose(&attempt.service.destination, key, &mut tried)?;
        let mut sender = match attempt.pool.get(&chosen.target.authority, service.connect_timeout).await {
            Ok(sender) => sender,
            Err(e) => {
                chosen.failed(Some(match e {
                    ConnectError::Timeout(_) => Outcome::Timeout,
                    _ => Outcome::TcpFailure,
                }));
                tracing::debug!(error = %e, "attempt failed before sending");
                body = Some(request_body);
                last_error = match e {
                    ConnectError::Timeout(_) => ProxyError::Timeout,
                    other => ProxyError::Connect(Box::new(other)),
                };
                continue;
            }
        };
        let request = build_request(attempt.parts, &chosen.target, attempt.preserve_host, request_body);
        let sent_at = Instant::now();
        let head = sender.try_send_request(request);
        match wait_for_head(head, &mut body_sent, service.read_timeout).await {
            Ok(Ok(response)) => {
                let upstream_latency = sent_at.elapsed();
                return Ok(respond(
                    response,
                    chosen,
                    sender,
                    attempt.pool,
                    upstream_latency,
                    sent_at,
                    service.read_timeout,
                ));
            }
            Ok(Err(mut e)) => {
                if caused_by_client_stall(e.error()) {
                    chosen.failed(None);
                    return Err(ProxyError::ClientTimeout);
                }
                chosen.failed(Some(Outcome::TcpFailure));
                if let Some(unsent) = e.take_message() {
                    body = Some(unsent.into_body());
                } else if replayable && idempotent {
                    body = Some(RequestBody::Empty);
                }
                tracing::debug!(error = %e.error(), retry = body.is_some(), "attempt failed");
                last_error = ProxyError::Upstream(Box::new(e.into_error()));
            }
            Err(_) => {
                chosen.failed(Some(Outcome::Timeout));
                return Err(ProxyError::Timeout);
            }
        }
    }
    Err(last_error)
}

/// Picks the next target: one not tried yet by this request while there is one.
fn choose(destination: &Destination, hash_key: Option<u64>, tried: &mut Vec<usize>) -> Result<Chosen, ProxyError> {
    let upstream = match destination {
        Destination::Address(target) => return Ok(Chosen { target: target.clone(), pick: None }),
        Destination::Upstream(upstream) => upstream,
    };
    let no_target = || ProxyError::NoHealthyTarget(upstream.upstream.name.clone());
    if !upstream.above_threshold() {
        return Err(no_target());
    }
    let now = Instant::now();
    let unhealthy = |i: usize| !upstream.health[i].is_healthy();
    let index = {
        let mut balancer = upstream.balancer();
        let skip = |i: usize| unhealthy(i) || tried.contains(&i);
        balancer.pick(&Pick { hash_key, now, skip: &skip }).or_else(|| {
            // Every healthy target was tried: start over among them.
            (!tried.is_empty()).then(|| balancer.pick(&Pick { hash_key, now, skip: &unhealthy })).flatten()
        })
    };
    let index = index.ok_or_else(no_target)?;
    tried.push(index);
    Ok(Chosen { target: upstream.targets[index].clone(), pick: Some((upstream.clone(), index)) })
}

fn build_request(parts: &Parts, target: &TargetEntry, preserve_host: bool, body: RequestBody) -> Request<RequestBody> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = http::Version::HTTP_11;
    *request.headers_mut() = parts.headers.clone();
    if !preserve_host || !parts.headers.contains_key(header::HOST) {
        request.headers_mut().insert(header::HOST, target.host_header.clone());
    }
    request
}

/// Waits for the response head. The read timeout starts once the request body has been sent:
/// a long upload is governed by the write timeout between its frames, not by this one.
async fn wait_for_head<F: Future>(
    head: F,
    body_sent: &mut Option<oneshot::Receiver<()>>,
    read_timeout: Duration,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::pin!(head);
    if let Some(sent) = body_sent.as_mut() {
        tokio::select! {
            biased;
            out = &mut head => return Ok(out),
            _ = sent => *body_sent = None,
        }
    }
    tokio::time::timeout(read_timeout, head).await
}

fn respond(
    mut response: Response<Incoming>,
    chosen: Chosen,
    sender: super::pool::Sender,
    pool: &Pool,
    latency: Duration,
    sent_at: Instant,
    read_timeout: Duration,
) -> Forwarded {
    let upgrade = (response.status() == StatusCode::SWITCHING_PROTOCOLS).then(|| hyper::upgrade::on(&mut response));
    if let Some((upstream, index)) = &chosen.pick {
        if let Some(outcome) = upstream.policy.passive.classify(response.status().as_u16()) {
            upstream.report(*index, outcome);
        }
    }
    let connection = upgrade.is_none().then(|| (pool.clone(), chosen.target.authority.clone(), sender));
    let finish = chosen.pick.map(|(upstream, index)| (upstream, index, latency));
    let response = response.map(|incoming| ProxyBody::Upstream {
        body: IdleTimeout::new(incoming, read_timeout),
        completion: Completion { connection, finish },
    });
    Forwarded { response, upgrade, sent_at, upstream_latency: latency }
}

/// Whether an exchange failed because the client's body stalled (our [`IdleTimedOut`] on the
/// request body), not because of the upstream.
fn caused_by_client_stall(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if e.is::<IdleTimedOut>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE)
}
