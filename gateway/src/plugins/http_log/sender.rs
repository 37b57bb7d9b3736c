//! One `http-log` queue's sender task: it gathers entries into batches and sends them to the
//! collector, one batch at a time, on one kept-alive HTTP/1.1 connection (the same hyper client
//! connection the health checker uses; TLS with the system's roots for `https://`).
//!
//! A batch goes when it holds `max_batch_size` entries, or `max_coalescing_delay` after its
//! first entry came, whichever is first; one entry is sent as a JSON object, more as a JSON
//! array (Kong's way). A batch whose exchange fails (refused, not 2xx, or longer than `timeout`)
//! is sent again after `initial_retry_delay`, doubling up to `max_retry_delay`, for as long as
//! `max_retry_time` allows; then it is dropped and its entries counted as dropped. While a batch
//! is being sent or retried, new entries wait in the queue, and those past `max_entries` are
//! dropped by the request path.

use crate::request_log::counters::{BatchOutcome, Dropper, LogCounters};
use crate::request_log::Record;
use crate::tls::UpstreamTls;
use base64::Engine as _;
use bytes::Bytes;
use config_sync::model::{Endpoint, HttpLog, LogQueue};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Why one exchange with the collector failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("no answer within the timeout")]
    TimedOut,
}

/// The collector, and the connection kept to it.
pub(super) struct Collector {
    endpoint: Endpoint,
    /// The endpoint's path and query, as requests carry it.
    path: http::Uri,
    /// The URL without its password: what logs show.
    shown: String,
    tls: Option<UpstreamTls>,
    method: Method,
    /// Every batch's headers: `Host`, `Content-Type`, `User-Agent`, Basic auth from the URL,
    /// and the config's own.
    headers: HeaderMap,
    timeout: Duration,
    keepalive: Duration,
    idle: Option<(SendRequest<Full<Bytes>>, Instant)>,
}

impl Collector {
    /// The collector `config` names; why not, for a config that should not have validated.
    pub(super) fn new(config: &HttpLog) -> Result<Collector, String> {
        let endpoint = config.endpoint()?;
        let tls = if endpoint.tls { Some(UpstreamTls::probe(true, None)?) } else { None };
        let mut headers = HeaderMap::new();
        let default_port = if endpoint.tls { 443 } else { 80 };
        let host = if endpoint.port == default_port { endpoint.host.clone() } else { endpoint.authority() };
        headers.insert(header::HOST, HeaderValue::try_from(host).map_err(|e| e.to_string())?);
        let content_type = HeaderValue::try_from(config.content_type.as_str()).map_err(|e| e.to_string())?;
        headers.insert(header::CONTENT_TYPE, content_type);
        headers.insert(header::USER_AGENT, HeaderValue::from_static("gateway-http-log"));
        if let Some((user, password)) = &endpoint.credentials {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let mut value = HeaderValue::try_from(format!("Basic {token}")).map_err(|e| e.to_string())?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        for (name, value) in &config.headers {
            let name = HeaderName::try_from(name.as_str()).map_err(|e| e.to_string())?;
            headers.append(name, HeaderValue::try_from(value.as_str()).map_err(|e| e.to_string())?);
        }
        let method = Method::from_bytes(config.method.as_str().as_bytes()).map_err(|e| e.to_string())?;
        let shown = endpoint.display();
        let path = endpoint.path_and_query.parse().map_err(|_| "http_endpoint: a bad path".to_owned())?;
        Ok(Collector {
            endpoint,
            path,
            shown,
            tls,
            method,
            headers,
            timeout: config.timeout,
            keepalive: config.keepalive,
            idle: None,
        })
    }

    /// One exchange: `body` sent, a 2xx answer read to its end.
    async fn send(&mut self, body: Bytes) -> Result<(), SendError> {
        let kept = self.idle.take().filter(|(sender, since)| since.elapsed() < self.keepalive && !sender.is_closed());
        let (mut sender, mut reused) = match kept {
            Some((sender, _)) => (sender, true),
            None => (self.connect().await?, false),
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.path.clone();
        *request.headers_mut() = self.headers.clone();
        let response = loop {
            let _ = std::future::poll_fn(|cx| sender.poll_ready(cx)).await;
            match sender.try_send_request(request).await {
                Ok(response) => break response,
                Err(mut error) => match error.take_message() {
                    // A kept connection the collector had closed: once more on a new one.
                    Some(unsent) if reused => {
                        (sender, reused, request) = (self.connect().await?, false, unsent);
                    }
                    _ => return Err(SendError::Http(error.into_error())),
                },
            }
        };
        let status = response.status();
        // Read to its end, so that the connection can carry the next batch.
        response.into_body().collect().await?;
        if !self.keepalive.is_zero() {
            self.idle = Some((sender, Instant::now()));
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(SendError::Status(status))
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let authority = self.endpoint.authority();
        let stream = TcpStream::connect(authority.as_str()).await.map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => handshake(stream).await,
            Some(tls) => handshake(tls.connect(&authority, stream).await.map_err(SendError::Tls)?).await,
        }
    }
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, SendError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends what `entries` brings until every queue handle is gone and it is empty.
pub(super) async fn run(
    mut entries: mpsc::Receiver<Arc<Record>>,
    mut collector: Collector,
    queue: LogQueue,
    counters: Arc<LogCounters>,
) {
    let max = queue.max_batch_size.max(1) as usize;
    let mut batch: Vec<Arc<Record>> = Vec::with_capacity(max.min(1024));
    tracing::debug!(collector = %collector.shown, "http-log queue started");
    loop {
        let Some(first) = entries.recv().await else { break };
        batch.push(first);
        let deadline = Instant::now() + queue.max_coalescing_delay;
        let mut closed = false;
        while batch.len() < max {
            let room = max - batch.len();
            tokio::select! {
                biased;
                more = entries.recv_many(&mut batch, room) => if more == 0 {
                    closed = true;
                    break;
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        deliver(&mut collector, &batch, &queue, &counters).await;
        batch.clear();
        if closed {
            break;
        }
    }
    tracing::debug!(collector = %collector.shown, "http-log queue no longer in use: ended");
}

/// One batch as the collector gets it: an object for one entry, an array for more.
fn encode(batch: &[Arc<Record>]) -> Bytes {
    if let [one] = batch {
        return one.json().clone();
    }
    let mut body = Vec::with_capacity(batch.len() * 1024);
    body.push(b'[');
    for (i, record) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        record.write_json(&mut body);
    }
    body.push(b']');
    Bytes::from(body)
}

/// Sends `batch`, retrying as the module doc says.
async fn deliver(collector: &mut Collector, batch: &[Arc<Record>], queue: &LogQueue, counters: &LogCounters) {
    let body = encode(batch);
    let started = Instant::now();
    let mut delay = queue.initial_retry_delay;
    loop {
        let result = match tokio::time::timeout(collector.timeout, collector.send(body.clone())).await {
            Ok(result) => result,
            Err(_) => Err(SendError::TimedOut),
        };
        let error = match result {
            Ok(()) => {
                counters.batch(BatchOutcome::Sent);
                return;
            }
            Err(error) => error,
        };
        counters.batch(BatchOutcome::Failed);
        if started.elapsed() + delay > queue.max_retry_time {
            counters.batch(BatchOutcome::Dropped);
            counters.dropped(Dropper::HttpLog, batch.len() as u64);
            tracing::warn!(collector = %collector.shown, entries = batch.len(), error = %error,
                "http-log: batch dropped after max_retry_time");
            return;
        }
        tracing::debug!(collector = %collector.shown, error = %error, retry_in = ?delay, "http-log: batch not sent");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(queue.max_retry_delay);
    }
}
