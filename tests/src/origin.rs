//! A scripted origin for cache tests: each path answers what the test set for it (status,
//! headers, body), and every request it receives is recorded (method, path and query,
//! headers), so a test can check what the cache asked. A scripted answer may be `304` when
//! the request's `If-None-Match` matches its `ETag`, as a real origin does.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What a path answers.
#[derive(Clone, Debug)]
pub struct Script {
    /// The status of a full answer.
    pub status: u16,
    /// Header lines, in order; a name may repeat.
    pub headers: Vec<(String, String)>,
    /// The body of a full answer.
    pub body: String,
    /// Answer 304 (with the headers, no body) to an `If-None-Match` naming the `ETag`.
    pub honour_conditionals: bool,
}

/// A request the origin received.
#[derive(Clone, Debug)]
pub struct Received {
    /// Its method.
    pub method: Method,
    /// Its path and query.
    pub path: String,
    /// Its headers, as they arrived.
    pub headers: HeaderMap,
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, Script>,
    received: Vec<Received>,
}

/// A running scripted origin; stops when dropped.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Origin {
    /// Starts an origin on a free port; unscripted paths answer 404.
    pub async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the origin");
        let addr = listener.local_addr().expect("a bound address");
        let state = Arc::new(Mutex::new(State::default()));
        let served = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(req, &state)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { addr, state, task }
    }

    /// Makes `path` (with its query, if any) answer 200 with `headers` and `body`, honouring
    /// `If-None-Match`.
    pub fn answer(&self, path: &str, headers: &[(&str, &str)], body: &str) {
        self.script(
            path,
            Script {
                status: 200,
                headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                body: body.to_owned(),
                honour_conditionals: true,
            },
        );
    }

    /// Makes `path` answer as `script` says.
    pub fn script(&self, path: &str, script: Script) {
        self.lock().scripts.insert(path.to_owned(), script);
    }

    /// The requests received for `path` (with its query), oldest first.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.lock().received.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// How many requests `path` received.
    pub fn count(&self, path: &str) -> usize {
        self.received(path).len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(req: Request<Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    state.received.push(Received { method: req.method().clone(), path: path.clone(), headers: req.headers().clone() });
    let Some(script) = state.scripts.get(&path).cloned() else {
        let mut response = Response::new(Full::new(Bytes::from_static(b"no script")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    let etag = script.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("etag")).map(|(_, v)| v.as_str());
    let matched = script.honour_conditionals
        && etag.is_some_and(|etag| {
            req.headers()
                .get_all(http::header::IF_NONE_MATCH)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.contains(etag)))
        });
    let (status, body) = if matched { (304, String::new()) } else { (script.status, script.body.clone()) };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).expect("a scripted status");
    for (name, value) in &script.headers {
        let name = HeaderName::try_from(name.as_str()).expect("a scripted header name");
        response.headers_mut().append(name, HeaderValue::from_str(value).expect("a scripted header value"));
    }
    response
}
