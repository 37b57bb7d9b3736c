//! Active probes: one task per probed target, sleeping the interval of the target's current
//! state (a state change restarts the wait), with the upstream's probes in flight bounded by a
//! semaphore.

use super::counters::Outcome;
use super::policy::ActivePolicy;
use super::target::{Source, TargetHealth};
use crate::tls::UpstreamTls;
use bytes::Bytes;
use config_sync::model::CheckType;
use http::{header, HeaderValue, Request};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

/// Starts probing `target`; abort the handle to stop.
pub fn spawn(target: Arc<TargetHealth>, policy: Arc<ActivePolicy>, permits: Arc<Semaphore>) -> AbortHandle {
    tokio::spawn(probe_loop(target, policy, permits)).abort_handle()
}

async fn probe_loop(target: Arc<TargetHealth>, policy: Arc<ActivePolicy>, permits: Arc<Semaphore>) {
    let tls = match policy.check_type {
        CheckType::Https => match UpstreamTls::probe(policy.https_verify, policy.https_sni.as_deref()) {
            Ok(tls) => Some(tls),
            Err(error) => return tracing::warn!(target = target.address(), %error, "https probes cannot start"),
        },
        _ => None,
    };
    let mut state = target.subscribe();
    loop {
        let current = *state.borrow_and_update();
        let interval = match current {
            super::State::Healthy => policy.healthy_interval,
            super::State::Unhealthy => policy.unhealthy_interval,
        };
        if interval.is_zero() {
            // This state is not probed: wait for it to change (an operator, or passive checks).
            if state.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        let Ok(_permit) = permits.acquire().await else { return };
        if let Some(outcome) = probe(target.address(), &policy, tls.as_ref()).await {
            target.record(outcome, &policy.thresholds, Source::Active);
        }
    }
}

/// One probe: a TCP connect, then for HTTP checks a `GET http_path` (over TLS with `tls`), all
/// within the timeout. A TLS handshake that fails is a TCP failure.
pub async fn probe(address: &str, policy: &ActivePolicy, tls: Option<&UpstreamTls>) -> Option<Outcome> {
    let attempt = async {
        let Ok(stream) = TcpStream::connect(address).await else { return Some(Outcome::TcpFailure) };
        match (policy.check_type, tls) {
            (CheckType::Tcp, _) => Some(Outcome::Success),
            (CheckType::Grpc, _) => grpc_check(stream).await,
            (_, Some(tls)) => match tls.connect(address, stream).await {
                Ok(stream) => get(address, policy, stream).await,
                Err(e) => {
                    tracing::debug!(target = address, error = %e, "https probe: TLS handshake failed");
                    Some(Outcome::TcpFailure)
                }
            },
            (_, None) => get(address, policy, stream).await,
        }
    };
    tokio::time::timeout(policy.timeout, attempt).await.unwrap_or(Some(Outcome::Timeout))
}

/// `grpc.health.v1.Health/Check` for the whole server (an empty `service`) over HTTP/2 on
/// `stream`: a success when it answers SERVING, an HTTP failure for any other answer.
async fn grpc_check(stream: TcpStream) -> Option<Outcome> {
    use http_body_util::{BodyExt as _, Full};
    let handshake = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream));
    let Ok((mut sender, connection)) = handshake.await else { return Some(Outcome::TcpFailure) };
    tokio::spawn(connection);
    // One uncompressed message of length 0: a HealthCheckRequest with every field at its default.
    let request = Request::post("http://localhost/grpc.health.v1.Health/Check")
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(header::USER_AGENT, "gateway-healthcheck")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .ok()?;
    let Ok(response) = sender.send_request(request).await else { return Some(Outcome::TcpFailure) };
    if response.status() != http::StatusCode::OK {
        return Some(Outcome::HttpFailure);
    }
    let Ok(body) = response.into_body().collect().await else { return Some(Outcome::TcpFailure) };
    let ok = body.trailers().and_then(|t| t.get("grpc-status")).is_some_and(|s| s == "0");
    // The answer: a 5-byte prefix, then a HealthCheckResponse whose field 1 (`status`, a
    // varint) is 1, SERVING.
    let serving = body.to_bytes().get(5..) == Some(&[0x08, 0x01][..]);
    Some(if ok && serving { Outcome::Success } else { Outcome::HttpFailure })
}

/// `GET http_path` on `stream`: what its status says.
async fn get<S>(address: &str, policy: &ActivePolicy, stream: S) -> Option<Outcome>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
        return Some(Outcome::TcpFailure);
    };
    tokio::spawn(connection);
    let mut request = Request::get(policy.http_path.as_str()).body(Empty::<Bytes>::new()).ok()?;
    let headers = request.headers_mut();
    if let Ok(host) = HeaderValue::from_str(address.strip_suffix(":80").unwrap_or(address)) {
        headers.insert(header::HOST, host);
    }
    headers.insert(header::USER_AGENT, HeaderValue::from_static("gateway-healthcheck"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    for (name, value) in &policy.headers {
        headers.append(name, value.clone());
    }
    match sender.send_request(request).await {
        Ok(response) => policy.classify(response.status().as_u16()),
        Err(_) => Some(Outcome::TcpFailure),
    }
}
