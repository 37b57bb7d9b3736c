//! A log collector standing in for the one an `http-log` plugin sends to: a real HTTP server on
//! a free loopback port, in the test's process. It records every batch it is sent, and can be
//! told to hang, to answer with an error status, or be stopped (its port then refuses).

use crate::upstream::ClosedPort;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// One request the collector got.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Its method.
    pub method: http::Method,
    /// Its path and query.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, as JSON.
    pub body: serde_json::Value,
}

impl Batch {
    /// The entries it carries: the object itself, or each item of an array.
    pub fn entries(&self) -> Vec<serde_json::Value> {
        match &self.body {
            serde_json::Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        }
    }
}

#[derive(Default)]
struct State {
    batches: Mutex<Vec<Batch>>,
    /// Answer with this status (0: 200).
    status: AtomicU16,
    /// Wait this long (ms) before answering (0: at once).
    hang_ms: AtomicU64,
    /// Requests that came in, answered or not.
    arrived: AtomicU64,
}

/// A running collector; stops when dropped.
pub struct Collector {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
    stopped: Option<ClosedPort>,
}

impl Collector {
    /// A collector answering 200 to everything.
    pub async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a collector");
        let addr = listener.local_addr().expect("a bound address");
        let state = Arc::new(State::default());
        let server = tokio::spawn(serve(listener, state.clone()));
        Collector { addr, state, server, stopped: None }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every batch received so far (not those it is hanging on).
    pub fn batches(&self) -> Vec<Batch> {
        self.state.batches.lock().expect("batches lock").clone()
    }

    /// Every entry received so far, in the order the batches came.
    pub fn entries(&self) -> Vec<serde_json::Value> {
        self.batches().iter().flat_map(Batch::entries).collect()
    }

    /// Requests that arrived, including those not answered yet.
    pub fn arrived(&self) -> u64 {
        self.state.arrived.load(Ordering::Relaxed)
    }

    /// Answers with `status` from now on (200: back to normal).
    pub fn answer(&self, status: u16) {
        self.state.status.store(status, Ordering::Relaxed);
    }

    /// Waits `delay` before answering from now on (zero: back to normal).
    pub fn hang(&self, delay: Duration) {
        self.state.hang_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Stops: open connections are cut, and the port refuses from now on (held, so that no
    /// other server of the run is given it).
    pub async fn stop(&mut self) {
        self.server.abort();
        let _ = (&mut self.server).await;
        self.stopped = Some(ClosedPort::hold(self.addr));
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Accepts connections until aborted; aborting it aborts every connection's task too.
async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| answer(request, state.clone()));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn answer(request: Request<Incoming>, state: Arc<State>) -> Result<Response<Full<Bytes>>, Infallible> {
    state.arrived.fetch_add(1, Ordering::Relaxed);
    let (head, body) = request.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let hang = state.hang_ms.load(Ordering::Relaxed);
    if hang > 0 {
        tokio::time::sleep(Duration::from_millis(hang)).await;
    }
    let status = match state.status.load(Ordering::Relaxed) {
        0 => StatusCode::OK,
        code => StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    };
    if status.is_success() {
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        let path = head.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let batch = Batch { method: head.method, path, headers: head.headers, body };
        state.batches.lock().expect("batches lock").push(batch);
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = status;
    Ok(response)
}
