//! One request's log record, with Kong's log serializer's fields, and its JSON.
//!
//! Secrets never enter a record: the values of `Authorization`, `Proxy-Authorization`,
//! `Cookie` and `Set-Cookie`, of the headers and query parameters that carry a route's API keys
//! (its chain's `query_secrets`: key-auth's `key_names`, jwt's `uri_param_names`) are replaced
//! by `REDACTED` when the record is made ([`redact_headers`], [`crate::exchange::query::scrubbed`]).
//! The JSON is made once, by whoever asks first (a writer task, off the request path), and
//! shared by every sink.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde_json::{json, Map, Value};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    json: OnceLock<Bytes>,
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

    /// The record as one JSON object (no line break), made once.
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| Bytes::from(serde_json::to_vec(&self.to_value()).unwrap_or_default()))
    }

    /// The fields of Kong's log serializer, and `node`.
    pub fn to_value(&self) -> Value {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let scheme = if self.https { "https" } else { "http" };
        let url = format!("{scheme}://{}{}", self.host.as_deref().unwrap_or(""), self.uri);
        let mut record = json!({
            "request": {
                "method": self.method.as_str(),
                "uri": self.uri,
                "url": url,
                "size": self.request_size,
                "querystring": querystring(self.uri.split_once('?').map_or("", |(_, q)| q)),
                "headers": headers(&self.request_headers),
            },
            "response": {
                "status": self.status,
                "size": self.response_size,
                "headers": headers(&self.response_headers),
            },
            "latencies": {
                "request": ms(self.request_latency),
                "proxy": ms(self.proxy_latency),
                "upstream": self.upstream_latency.map_or(-1, |d| i64::try_from(ms(d)).unwrap_or(i64::MAX)),
            },
            "client_ip": self.client_ip.to_str().unwrap_or(""),
            "started_at": self.started_at.duration_since(UNIX_EPOCH).map_or(0, ms),
            "node": &*self.node,
        });
        let fields = record.as_object_mut().expect("an object");
        if let Some(service) = &self.service {
            fields.insert("service".into(), json!({ "name": &**service }));
        }
        if let Some(route) = &self.route {
            fields.insert("route".into(), json!({ "name": &**route }));
        }
        if let Some((username, custom_id)) = &self.consumer {
            let mut consumer = json!({ "username": &**username });
            if let Some(id) = custom_id.as_ref().and_then(|v| v.to_str().ok()) {
                consumer["custom_id"] = Value::from(id);
            }
            fields.insert("consumer".into(), consumer);
        }
        if let Some(upstream_uri) = &self.upstream_uri {
            fields.insert("upstream_uri".into(), Value::from(upstream_uri.as_str()));
        }
        if let Some(target) = &self.target {
            // Kong's `tries`: the targets tried. Here the one that answered, as configured.
            let (ip, port) = target.rsplit_once(':').unwrap_or((target, ""));
            let port = port.parse::<u16>().map_or(Value::Null, Value::from);
            fields.insert(
                "tries".into(),
                json!([{ "ip": ip.trim_start_matches('[').trim_end_matches(']'), "port": port }]),
            );
        }
        record
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
/// header names) replaced by one `REDACTED`.
pub(crate) fn redact_headers(headers: &HeaderMap, secrets: &[String]) -> HeaderMap {
    let mut copy = headers.clone();
    let named = secrets.iter().filter_map(|s| HeaderName::try_from(s.as_str()).ok());
    for name in SECRET_HEADERS.into_iter().chain(named) {
        if copy.contains_key(&name) {
            copy.insert(name, HeaderValue::from_static(REDACTED));
        }
    }
    copy
}

/// Headers as Kong writes them: lower-case names; a repeated header's values as a list.
fn headers(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for name in headers.keys() {
        let text = |v: &HeaderValue| Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned());
        let mut values = headers.get_all(name).iter();
        let value = match (values.next(), values.next()) {
            (Some(one), None) => text(one),
            _ => Value::Array(headers.get_all(name).iter().map(text).collect()),
        };
        map.insert(name.as_str().to_owned(), value);
    }
    Value::Object(map)
}

/// The query's arguments as Kong writes them: decoded; a flag without `=` is `true`; a repeated
/// argument's values as a list.
fn querystring(query: &str) -> Value {
    let mut map = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.split_once('=') {
            Some((name, value)) => (decode(name), Value::from(decode(value))),
            None => (decode(pair), Value::Bool(true)),
        };
        match map.get_mut(&name) {
            None => {
                map.insert(name, value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    Value::Object(map)
}

fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
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
