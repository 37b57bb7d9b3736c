//! The `http-log` plugin's config: Kong's fields and defaults, and the endpoint's URL read into
//! its parts ([`Endpoint`]) without a URL library.
//!
//! The endpoint may carry a user and password (`https://user:pass@host/path`), sent as Basic
//! auth as in Kong. That password is a secret: validation messages never quote the URL, and
//! [`redact_secrets`] replaces it in what `dump` and the admin API show.

use crate::model::units;
use crate::validate::Errors;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The method log batches are sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogMethod {
    /// POST (the default).
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
}

impl LogMethod {
    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogMethod::Post => "POST",
            LogMethod::Put => "PUT",
            LogMethod::Patch => "PATCH",
        }
    }
}

/// The `http-log` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLog {
    /// Where batches go: an `http://` or `https://` URL, perhaps with `user:password@` (sent as
    /// Basic auth). Required.
    pub http_endpoint: String,
    /// POST, PUT or PATCH. Default POST.
    pub method: LogMethod,
    /// Longest a batch's exchange with the collector may take (connecting included), ms.
    /// Default 10000.
    #[serde(with = "units::millis")]
    pub timeout: Duration,
    /// How long an idle connection to the collector is kept for the next batch, ms; 0: a new
    /// connection per batch. Default 60000.
    #[serde(with = "units::millis")]
    pub keepalive: Duration,
    /// `Content-Type` of a batch: `application/json` (default) or
    /// `application/json; charset=utf-8`.
    pub content_type: String,
    /// Extra headers sent to the collector, name to value.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How entries wait and are batched.
    pub queue: LogQueue,
}

impl Default for HttpLog {
    fn default() -> Self {
        HttpLog {
            http_endpoint: String::new(),
            method: LogMethod::Post,
            timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            content_type: "application/json".into(),
            headers: BTreeMap::new(),
            queue: LogQueue::default(),
        }
    }
}

/// Kong's `queue` parameters that this gateway honours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogQueue {
    /// Entries per batch: one is sent as a JSON object, more as a JSON array. 1 to 1,000,000.
    /// Default 1.
    pub max_batch_size: u32,
    /// Longest an entry waits for a batch to fill before a smaller batch goes, seconds
    /// (fractions allowed). 0 to 3600. Default 1.
    #[serde(with = "units::seconds")]
    pub max_coalescing_delay: Duration,
    /// Entries that may wait; past it new entries are dropped and counted. 1 to 1,000,000.
    /// Default 10000.
    pub max_entries: u32,
    /// How long a failed batch is retried before it is dropped, seconds. Default 60.
    #[serde(with = "units::seconds")]
    pub max_retry_time: Duration,
    /// The first wait before a retry, seconds; it doubles at each retry. Default 0.01.
    #[serde(with = "units::seconds")]
    pub initial_retry_delay: Duration,
    /// The longest wait between two retries, seconds. Default 60.
    #[serde(with = "units::seconds")]
    pub max_retry_delay: Duration,
}

impl Default for LogQueue {
    fn default() -> Self {
        LogQueue {
            max_batch_size: 1,
            max_coalescing_delay: Duration::from_secs(1),
            max_entries: 10_000,
            max_retry_time: Duration::from_secs(60),
            initial_retry_delay: Duration::from_millis(10),
            max_retry_delay: Duration::from_secs(60),
        }
    }
}

/// Kong's bounds on the queue's sizes.
const MAX_QUEUE_COUNT: u32 = 1_000_000;

/// Headers the gateway sets itself on a batch.
const OWN_HEADERS: [&str; 5] = ["host", "content-type", "content-length", "transfer-encoding", "connection"];

/// What `dump` and the admin API show in place of the endpoint's password.
const REDACTED_PASSWORD: &str = "<redacted>";

impl HttpLog {
    /// Pushes every problem onto `errors`, under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        let at = |field: &str| format!("{path}.{field}");
        if self.http_endpoint.is_empty() {
            errors.push(at("http_endpoint"), "is required");
        } else if let Err(message) = Endpoint::parse(&self.http_endpoint) {
            errors.push(at("http_endpoint"), message);
        }
        if self.timeout.is_zero() {
            errors.push(at("timeout"), "must be at least 1 ms");
        }
        if !["application/json", "application/json; charset=utf-8"].contains(&self.content_type.as_str()) {
            errors.push(at("content_type"), "must be application/json or application/json; charset=utf-8");
        }
        for (name, value) in &self.headers {
            let field = format!("{path}.headers.{name}");
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                errors.push(field, format!("{name:?} is not a valid header name"));
            } else if OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                errors.push(field, "is set by the gateway");
            } else if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                // The value is not quoted: it may be a token.
                errors.push(field, "has control characters");
            }
        }
        let queue = &self.queue;
        let q = |field: &str| format!("{path}.queue.{field}");
        if !(1..=MAX_QUEUE_COUNT).contains(&queue.max_batch_size) {
            errors.push(q("max_batch_size"), "must be 1 to 1000000");
        }
        if !(1..=MAX_QUEUE_COUNT).contains(&queue.max_entries) {
            errors.push(q("max_entries"), "must be 1 to 1000000");
        }
        if queue.max_coalescing_delay > Duration::from_secs(3600) {
            errors.push(q("max_coalescing_delay"), "must be 0 to 3600 s");
        }
        if queue.initial_retry_delay.is_zero() || queue.initial_retry_delay > Duration::from_secs(1_000_000) {
            errors.push(q("initial_retry_delay"), "must be more than 0 s");
        }
        if queue.max_retry_delay < queue.initial_retry_delay {
            errors.push(q("max_retry_delay"), "must be at least initial_retry_delay");
        }
    }

    /// The endpoint, read into its parts; an error for a config that did not validate.
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        Endpoint::parse(&self.http_endpoint)
    }
}

/// An `http://` or `https://` URL, in parts.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://`.
    pub tls: bool,
    /// The host, as written (a name, an IPv4 address, or `[v6]`).
    pub host: String,
    /// The port, given or the scheme's.
    pub port: u16,
    /// The path and query, `/` when none.
    pub path_and_query: String,
    /// `user` and `password` from the URL, percent-decoded.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl Endpoint {
    /// Reads `url`. The message of an error never quotes it: it may hold a password.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (scheme, rest) = url.split_once("://").ok_or("must be an http:// or https:// URL")?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err("must be an http:// or https:// URL".into()),
        };
        if rest.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
            return Err("has spaces, control characters or a fragment".into());
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        if userinfo.is_some_and(|u| u.contains(REDACTED_PASSWORD)) {
            return Err("holds a redacted password: dump with --with-secrets to get a file that applies".into());
        }
        let (host, port) = split_host_port(hostport)?;
        let port = match port {
            Some(port) => port,
            None if tls => 443,
            None => 80,
        };
        let credentials = userinfo.map(|userinfo| {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (percent_decode(user), percent_decode(password))
        });
        let path_and_query = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        Ok(Endpoint { tls, host: host.to_owned(), port, path_and_query, credentials })
    }

    /// `host:port`.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The URL without its user and password: what logs may show.
    pub fn display(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}{}", self.host, self.port, self.path_and_query)
    }
}

/// `host[:port]`, `[v6][:port]`.
fn split_host_port(hostport: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or("has an unclosed [ in its host")?;
        if inside.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("has a bad IPv6 address".into());
        }
        let host = &hostport[..inside.len() + 2];
        match after {
            "" => (host, None),
            port => (host, Some(port.strip_prefix(':').ok_or("has something after its IPv6 address")?)),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    let host_ok = host.starts_with('[') || host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if host.is_empty() || !host_ok {
        return Err("needs a host name or address".into());
    }
    let port = match port {
        None => None,
        Some(port) => Some(port.parse::<u16>().ok().filter(|p| *p > 0).ok_or("has a bad port")?),
    };
    Ok((host, port))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Replaces, anywhere in `value` (an entity, a plugins map, a whole dump), the password of
/// every `http-log` endpoint with `<redacted>`, which [`HttpLog::validate`] refuses: a document
/// shown without secrets cannot be applied by mistake.
pub fn redact_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if key == "http-log" {
                    if let Some(Value::String(url)) = inner.get_mut("http_endpoint") {
                        if let Some(redacted) = without_password(url) {
                            *url = redacted;
                        }
                    }
                } else {
                    redact_secrets(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

/// `url` with the password of its userinfo replaced; None when it has none.
fn without_password(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (userinfo, after) = rest[..end].rsplit_once('@')?;
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    Some(format!("{scheme}://{user}:{REDACTED_PASSWORD}@{after}{}", &rest[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(value: Value) -> Vec<String> {
        let config: HttpLog = serde_json::from_value(value).unwrap();
        let mut errors = Errors::default();
        config.validate("p", &mut errors);
        errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect()
    }

    #[test]
    fn kong_defaults() {
        let c: HttpLog = serde_json::from_str(r#"{"http_endpoint":"http://c:9000/logs"}"#).unwrap();
        assert_eq!(c.method, LogMethod::Post);
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.content_type, "application/json");
        assert_eq!(c.queue.max_batch_size, 1);
        assert_eq!(c.queue.max_coalescing_delay, Duration::from_secs(1));
        assert_eq!(c.queue.max_entries, 10_000);
        assert_eq!(c.queue.max_retry_time, Duration::from_secs(60));
        let q: HttpLog =
            serde_json::from_str(r#"{"http_endpoint":"http://c","queue":{"max_coalescing_delay":0.25}}"#).unwrap();
        assert_eq!(q.queue.max_coalescing_delay, Duration::from_millis(250));
        assert!(problems(serde_json::to_value(&c).unwrap()).is_empty());
    }

    #[test]
    fn bad_values_are_refused_with_their_path_and_never_quote_the_url() {
        let got = problems(serde_json::json!({"http_endpoint": "ftp://u:hunter2@c/x", "queue": {"max_batch_size": 0}}));
        assert_eq!(
            got,
            ["p.http_endpoint: must be an http:// or https:// URL", "p.queue.max_batch_size: must be 1 to 1000000"]
        );
        assert!(got.iter().all(|p| !p.contains("hunter2")));
        assert_eq!(problems(serde_json::json!({"http_endpoint": "not a url"})).len(), 1);
        assert_eq!(problems(serde_json::json!({}))[0], "p.http_endpoint: is required");
        let got = problems(serde_json::json!({"http_endpoint": "http://:80/x", "headers": {"Host": "x", "a b": "c"}}));
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(problems(serde_json::json!({"http_endpoint": "https://[::1]:8443?x=1"})).len(), 0);
    }

    #[test]
    fn endpoints_read_into_parts() {
        let e = Endpoint::parse("HTTPS://bob:p%40ss@logs.example.com/in?x=1").unwrap();
        assert!(e.tls);
        assert_eq!((e.host.as_str(), e.port, e.path_and_query.as_str()), ("logs.example.com", 443, "/in?x=1"));
        assert_eq!(e.credentials, Some(("bob".into(), "p@ss".into())));
        assert_eq!(e.display(), "https://logs.example.com:443/in?x=1");
        let e = Endpoint::parse("http://[::1]:9000").unwrap();
        assert_eq!((e.authority().as_str(), e.path_and_query.as_str()), ("[::1]:9000", "/"));
        assert!(Endpoint::parse("http://c:0/").is_err());
        assert!(Endpoint::parse("http://c:x/").is_err());
    }

    #[test]
    fn passwords_are_redacted_and_a_redacted_one_is_refused() {
        let mut v =
            serde_json::json!({"routes": [{"plugins": {"http-log": {"http_endpoint": "http://bob:secret@c:1/p"}}}]});
        redact_secrets(&mut v);
        let url = v["routes"][0]["plugins"]["http-log"]["http_endpoint"].as_str().unwrap().to_owned();
        assert_eq!(url, "http://bob:<redacted>@c:1/p");
        let err = Endpoint::parse(&url).unwrap_err();
        assert!(err.contains("--with-secrets"), "{err}");
        let mut plain = serde_json::json!({"http-log": {"http_endpoint": "http://c/p"}});
        redact_secrets(&mut plain);
        assert_eq!(plain["http-log"]["http_endpoint"], "http://c/p");
    }
}
