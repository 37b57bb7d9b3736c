//! One request's log record, with Kong's log serializer's fields, and its JSON.
//!
//! Secrets never enter a record: the values of `Authorization`, `Proxy-Authorization`,
//! `Cookie` and `Set-Cookie`, of the headers and query parameters that carry a route's API keys
//! (its chain's `query_secrets`: key-auth's `key_names`, jwt's `uri_param_names`) are replaced
//! by `REDACTED` when the record is made ([`redact_headers`], [`crate::exchange::query::scrubbed`]).
//! Its JSON (`super::json`) is written off the request path, by the sinks' tasks.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// What replaces a secret.
pub(crate) const REDACTED: &str = "REDACTED";

/// Headers whose values are always secrets.
const SECRET_HEADERS: [HeaderName; 4] =
    [header::AUTHORIZATION, header::PROXY_AUTHORIZATION, header::COOKIE, header::SET_COOKIE];

/// One request, once its response has been sent.
pub struct Record {
    /// When the request was received.
    pub(crate) started_at: SystemTime,
    /// This node.
    pub(crate) node: Arc<str>,
    pub(crate) method: Method,
    /// The path and query as the client sent them, secrets redacted.
    pub(crate) uri: String,
    /// Whether the client spoke TLS, and the host it asked for: `url`.
    pub(crate) https: bool,
    pub(crate) host: Option<String>,
    /// Bytes of the request head, plus its body's `Content-Length`.
    pub(crate) request_size: u64,
    /// Redacted.
    pub(crate) request_headers: HeaderMap,
    pub(crate) status: u16,
    /// Body bytes sent to the client.
    pub(crate) response_size: u64,
    /// Redacted.
    pub(crate) response_headers: HeaderMap,
    /// From receipt to the last byte sent (or the client gone).
    pub(crate) request_latency: Duration,
    /// The gateway's own time: from receipt to the request sent upstream (or to the answer, for
    /// a request that did not go upstream), as `X-Gateway-Proxy-Latency`.
    pub(crate) proxy_latency: Duration,
    /// The upstream's time to its response head; none when it was not asked.
    pub(crate) upstream_latency: Option<Duration>,
    pub(crate) client_ip: HeaderValue,
    pub(crate) service: Option<Arc<str>>,
    pub(crate) route: Option<Arc<str>>,
    /// The consumer an auth plugin identified: username and custom id.
    pub(crate) consumer: Option<(Arc<str>, Option<HeaderValue>)>,
    /// The path and query sent upstream, secrets redacted.
    pub(crate) upstream_uri: Option<String>,
    /// The target that answered (`host:port`).
    pub(crate) target: Option<Arc<str>>,
    /// Its JSON once made ([`Record::json`]).
    pub(super) json: OnceLock<Bytes>,
}

impl Record {
    /// A record of a request received at `started_at` by `node`; the rest is filled in as the
    /// request goes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        started_at: SystemTime,
        node: Arc<str>,
        head: &http::request::Parts,
        uri: String,
        https: bool,
        host: Option<&str>,
        client_ip: HeaderValue,
        secrets: &[String],
    ) -> Record {
        Record {
            started_at,
            node,
            method: head.method.clone(),
            request_size: head_size(head, uri.len()),
            uri,
            https,
            host: host.map(str::to_owned),
            request_headers: redact_headers(&head.headers, secrets),
            status: 0,
            response_size: 0,
            response_headers: HeaderMap::new(),
            request_latency: Duration::ZERO,
            proxy_latency: Duration::ZERO,
            upstream_latency: None,
            client_ip,
            service: None,
            route: None,
            consumer: None,
            upstream_uri: None,
            target: None,
            json: OnceLock::new(),
        }
    }
}

/// Bytes of the request head as HTTP/1.1 writes it: the request line, each header line and the
/// blank line; plus the body's `Content-Length` when it has one (a chunked body is not counted).
fn head_size(head: &http::request::Parts, uri_len: usize) -> u64 {
    let line = head.method.as_str().len() + 1 + uri_len + " HTTP/1.1\r\n".len();
    let headers: usize = head.headers.iter().map(|(n, v)| n.as_str().len() + 2 + v.len() + 2).sum();
    let body = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    (line + headers + 2) as u64 + body
}

/// A copy of `headers` with the secret ones' values (always-secret headers, and `secrets` as
/// header names) replaced by one `REDACTED`. Names are compared without hashing, and the copy
/// is changed only where a secret is found: most requests carry none.
pub(crate) fn redact_headers(headers: &HeaderMap, secrets: &[String]) -> HeaderMap {
    let mut copy = headers.clone();
    let secret = |name: &HeaderName| {
        SECRET_HEADERS.contains(name) || secrets.iter().any(|s| name.as_str().eq_ignore_ascii_case(s))
    };
    let found: Vec<HeaderName> = headers.keys().filter(|name| secret(name)).cloned().collect();
    for name in found {
        copy.insert(name, HeaderValue::from_static(REDACTED));
    }
    copy
}

/// The path and query of `uri` with the values of `secrets` redacted.
pub(crate) fn scrubbed_uri(uri: &Uri, secrets: &[String]) -> String {
    let path = uri.path();
    match uri.query() {
        None => path.to_owned(),
        Some(query) => format!("{path}?{}", crate::exchange::query::scrubbed(query, secrets)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::time::UNIX_EPOCH;

    #[test]
    fn secrets_are_redacted_and_fields_are_kongs() {
        let request = http::Request::get("/orders?apikey=k1&page=2&page=3&flag")
            .header("authorization", "Basic YTpi")
            .header("cookie", "session=s")
            .header("apikey", "k2")
            .header("x-trace", "t")
            .header("content-length", "10")
            .body(())
            .unwrap();
        let (head, ()) = request.into_parts();
        let secrets = vec!["apikey".to_owned()];
        let uri = scrubbed_uri(&head.uri, &secrets);
        let ip = HeaderValue::from_static("10.0.0.1");
        let mut record = Record::new(
            UNIX_EPOCH + Duration::from_millis(1500),
            Arc::from("n1"),
            &head,
            uri,
            false,
            Some("h"),
            ip,
            &secrets,
        );
        record.status = 200;
        let mut response = HeaderMap::new();
        response.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        response.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        record.response_headers = redact_headers(&response, &[]);
        record.target = Some(Arc::from("10.0.0.9:8080"));
        record.upstream_latency = Some(Duration::from_millis(7));
        let v: Value = serde_json::from_slice(record.json()).unwrap();
        assert_eq!(v["request"]["uri"], "/orders?apikey=REDACTED&page=2&page=3&flag");
        assert_eq!(v["request"]["url"], "http://h/orders?apikey=REDACTED&page=2&page=3&flag");
        assert_eq!(v["request"]["querystring"], json!({"apikey": "REDACTED", "page": ["2", "3"], "flag": true}));
        let h = &v["request"]["headers"];
        assert_eq!(
            (&h["authorization"], &h["cookie"], &h["apikey"]),
            (&json!(REDACTED), &json!(REDACTED), &json!(REDACTED))
        );
        assert_eq!(h["x-trace"], "t");
        assert_eq!(v["response"]["headers"]["set-cookie"], REDACTED);
        assert_eq!(v["started_at"], 1500);
        assert_eq!(v["node"], "n1");
        assert_eq!(v["latencies"]["upstream"], 7);
        assert_eq!(v["tries"], json!([{"ip": "10.0.0.9", "port": 8080}]));
        assert!(v.get("consumer").is_none());
        let size = v["request"]["size"].as_u64().unwrap();
        assert!(size > 100 && size < 300, "{size}");
        assert!(!String::from_utf8_lossy(record.json()).contains("k1"));
    }
}
