//! A small HTTP client for tests, and the replies they assert on.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header as text, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The echo instance that answered, from the `instance` field.
    pub fn instance(&self) -> String {
        self.json()["instance"].as_str().unwrap_or_default().to_owned()
    }
}

/// A keep-alive HTTP/1.1 client.
#[derive(Clone)]
pub struct HttpClient(Client<HttpConnector, Full<Bytes>>);

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

impl HttpClient {
    /// A new client with its own connection pool.
    pub fn new() -> HttpClient {
        HttpClient(Client::builder(TokioExecutor::new()).build_http())
    }

    /// A client that speaks HTTP/2 with prior knowledge (h2c).
    pub fn h2c() -> HttpClient {
        HttpClient(Client::builder(TokioExecutor::new()).http2_only(true).build_http())
    }

    /// GET `url`.
    pub async fn get(&self, url: &str) -> Reply {
        self.send(Request::get(url).body(Full::default()).expect("a valid request")).await
    }

    /// GET `url` with headers.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = Request::get(url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.send(request.body(Full::default()).expect("a valid request")).await
    }

    /// `method` `url` with `body`.
    pub async fn call(&self, method: Method, url: &str, body: impl Into<Bytes>) -> Reply {
        self.send(Request::builder().method(method).uri(url).body(Full::new(body.into())).expect("a valid request"))
            .await
    }

    /// Sends `request` and reads the whole reply; panics if the exchange fails.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Reply {
        let uri = request.uri().clone();
        self.try_send(request).await.unwrap_or_else(|e| panic!("request to {uri} failed: {e}"))
    }

    /// GET `url`; why not, when the exchange fails (for polling a server that may not be up).
    pub async fn try_get(&self, url: &str) -> Result<Reply, String> {
        self.try_send(Request::get(url).body(Full::default()).expect("a valid request")).await
    }

    /// Sends `request` and reads the whole reply.
    pub async fn try_send(&self, request: Request<Full<Bytes>>) -> Result<Reply, String> {
        let response = self.0.request(request).await.map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| format!("reading the body: {e}"))?.to_bytes();
        Ok(Reply { status: parts.status, headers: parts.headers, body })
    }
}
