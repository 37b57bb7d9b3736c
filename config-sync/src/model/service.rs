//! A service: where matched requests go.

use super::{check_name, units, Plugins};
use crate::validate::Errors;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// An upstream API that routes send traffic to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The service's name; in etcd it is the last key segment and the body may repeat it.
    #[serde(default)]
    pub name: String,
    /// `http://host[:port][/path]`, `https://…`, `grpc://…` (HTTP/2 in cleartext) or `grpcs://…`
    /// (HTTP/2 over TLS). When `host` names an upstream, requests are
    /// balanced over its targets; otherwise host and port are a literal address. The path is
    /// prepended to the upstream request's path.
    pub url: String,
    /// How many times a failed attempt is retried on another target. Default 5.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Answers from a target that are retried on another target, within `retries` (nginx's
    /// `proxy_next_upstream http_503`, Envoy's `retriable_status_codes`): statuses 400 to 599.
    /// Only idempotent methods without a body are retried, unless `retry_non_idempotent`; the
    /// last try's answer goes to the client as it came. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on_statuses: Vec<u16>,
    /// Retries on a status extend to POST, PATCH and CONNECT (a body already sent upstream is
    /// still never sent again). Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub retry_non_idempotent: bool,
    /// The wait before each retry: exponential from `base`, capped at `max`, with full jitter.
    #[serde(default, skip_serializing_if = "Backoff::is_default")]
    pub retry_backoff: Backoff,
    /// Longest wait for one try's response head, connecting included; when it passes the try is
    /// a timeout and is retried as a failed connection is. None (default): only `read_timeout`,
    /// which ends the request (504). 1 to `read_timeout` ms.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "units::millis_opt")]
    pub per_try_timeout: Option<Duration>,
    /// An upstream whose targets take the service's requests while its own upstream (the host
    /// of its `url`) has no healthy target. Only one level is followed: the fallback's own
    /// services' fallbacks are not, so fallbacks never form a loop. It must name an existing
    /// upstream (else the service is a dangling reference) other than the service's own.
    /// Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_upstream: Option<String>,
    /// Time to open a TCP connection to a target. Default 60000 ms.
    #[serde(default = "default_timeout", with = "units::millis")]
    pub connect_timeout: Duration,
    /// Longest wait for the upstream's response head, and between two reads of its body.
    /// Default 60000 ms.
    #[serde(default = "default_timeout", with = "units::millis")]
    pub read_timeout: Duration,
    /// Longest wait between two writes of the request body to the upstream. Default 60000 ms.
    #[serde(default = "default_timeout", with = "units::millis")]
    pub write_timeout: Duration,
    /// Plugins for every route of this service (a route's own plugin config wins).
    #[serde(default, skip_serializing_if = "Plugins::is_empty")]
    pub plugins: Plugins,
    /// `https://` only: verify the upstream's certificate (chain and name). Default true.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub tls_verify: bool,
    /// `https://` only: names of `ca_certificates` the upstream's chain must lead to; none: the
    /// system's roots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<String>,
    /// `https://` only: the name of a certificate to present to the upstream (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// `https://` only: the name sent as SNI and verified; none: the target's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// Speak HTTP/2 to the targets: prior knowledge (h2c) for `http://`, ALPN `h2` for
    /// `https://`. Always so for `grpc://` and `grpcs://`. Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub http2: bool,
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A retry's wait: a random time between 0 and `min(max, base × 2^(retry − 1))` (AWS's "full
/// jitter"), so that clients retrying together spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// The first retry's ceiling, ms. Default 25; 0 retries at once.
    #[serde(default = "default_backoff_base", with = "units::millis")]
    pub base: Duration,
    /// The ceiling's limit, ms; at least `base` and at most the service's `read_timeout`.
    /// Default 250.
    #[serde(default = "default_backoff_max", with = "units::millis")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: default_backoff_base(), max: default_backoff_max() }
    }
}

impl Backoff {
    fn is_default(&self) -> bool {
        *self == Backoff::default()
    }

    /// The ceiling of retry number `retry` (1 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doubled = self.base.saturating_mul(1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX));
        doubled.min(self.max)
    }

    /// The wait before retry number `retry`, `unit` a uniform random number in [0, 1).
    pub fn wait(&self, retry: u32, unit: f64) -> Duration {
        self.ceiling(retry).mul_f64(unit.clamp(0.0, 1.0))
    }
}

fn default_backoff_base() -> Duration {
    Duration::from_millis(25)
}

fn default_backoff_max() -> Duration {
    Duration::from_millis(250)
}

fn default_retries() -> u32 {
    5
}

fn default_timeout() -> Duration {
    Duration::from_millis(60_000)
}

/// The parts of a service's `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    /// Lower-cased host: an upstream's name, a DNS name or an IP address (IPv6 without brackets).
    pub host: String,
    /// The explicit port, if any (80 otherwise for a literal address).
    pub port: Option<u16>,
    /// The path prefix to prepend, without a trailing `/` (empty for none).
    pub path: String,
    /// `https://` or `grpcs://`.
    pub tls: bool,
    /// `grpc://` or `grpcs://`: HTTP/2, and only for HTTP/2 clients.
    pub grpc: bool,
}

impl ServiceUrl {
    /// The port to connect to: the explicit one, else the scheme's.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 443 } else { 80 })
    }
}

impl ServiceUrl {
    /// Parses `http://host[:port][/path]`, `https://…`, `grpc://…` or `grpcs://…`.
    pub fn parse(url: &str) -> Result<ServiceUrl, String> {
        let schemes =
            [("http://", false, false), ("https://", true, false), ("grpc://", false, true), ("grpcs://", true, true)];
        let Some((rest, tls, grpc)) =
            schemes.iter().find_map(|(scheme, tls, grpc)| Some((url.strip_prefix(scheme)?, *tls, *grpc)))
        else {
            return Err(format!("{url:?} must start with http://, https://, grpc:// or grpcs://"));
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], &rest[i..]),
            Some(_) => return Err(format!("{url:?} may not carry a query or fragment")),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(format!("{url:?} may not carry a query or fragment"));
        }
        if authority.contains('@') {
            return Err(format!("{url:?} may not carry credentials"));
        }
        let (host, port) = split_host_port(authority).map_err(|e| format!("{url:?}: {e}"))?;
        check_host(&host).map_err(|e| format!("{url:?}: {e}"))?;
        Ok(ServiceUrl { host, port, path: path.trim_end_matches('/').to_owned(), tls, grpc })
    }
}

/// Splits `host[:port]` (IPv6 in brackets), lower-casing the host.
pub(crate) fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']').ok_or("unclosed [ in host")?;
        let port = v6[end + 1..].strip_prefix(':');
        if port.is_none() && end + 1 != v6.len() {
            return Err("unexpected text after ]".into());
        }
        (&v6[..end], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("bad port {p:?}"))?),
        None => None,
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// Checks that `host` is an IP address or a DNS name.
pub(crate) fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{host:?} is not a host name or IP address"))
    }
}

impl Service {
    /// The parsed `url`. Valid once [`Service::validate`] found nothing.
    pub fn parsed_url(&self) -> Result<ServiceUrl, String> {
        ServiceUrl::parse(&self.url)
    }

    /// Whether requests go to the targets over HTTP/2 (`http2`, or a `grpc(s)://` url).
    pub fn speaks_http2(&self) -> bool {
        self.http2 || self.parsed_url().is_ok_and(|u| u.grpc)
    }

    /// Pushes every problem with this service onto `errors`, under `path` (`services/<name>`).
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        check_name(&self.name, &format!("{path}.name"), errors);
        match self.parsed_url() {
            Err(e) => errors.push(format!("{path}.url"), e),
            Ok(url) if !url.tls => {
                let set = [
                    ("tls_verify", !self.tls_verify),
                    ("ca_certificates", !self.ca_certificates.is_empty()),
                    ("client_certificate", self.client_certificate.is_some()),
                    ("tls_server_name", self.tls_server_name.is_some()),
                ];
                for (field, _) in set.into_iter().filter(|(_, set)| *set) {
                    errors.push(format!("{path}.{field}"), "is for https:// and grpcs:// services only");
                }
            }
            Ok(_) => {}
        }
        if let Some(name) = &self.tls_server_name {
            if let Err(e) = check_host(name) {
                errors.push(format!("{path}.tls_server_name"), e);
            }
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if value.is_zero() || value > Duration::from_millis(i32::MAX as u64) {
                errors.push(format!("{path}.{field}"), "must be 1 to 2147483647 ms");
            }
        }
        if self.retries > 32767 {
            errors.push(format!("{path}.retries"), "must be 0 to 32767");
        }
        self.validate_failover(path, errors);
        self.plugins.validate(&format!("{path}.plugins"), errors);
    }
}

impl Service {
    fn validate_failover(&self, path: &str, errors: &mut Errors) {
        if let Some(fallback) = &self.fallback_upstream {
            if self.parsed_url().is_ok_and(|url| &url.host == fallback && url.port.is_none()) {
                errors.push(
                    format!("{path}.fallback_upstream"),
                    format!("{fallback:?} is the service's own upstream: a fallback must be another upstream"),
                );
            }
        }
        if let Some(status) = self.retry_on_statuses.iter().find(|s| !(400..=599).contains(*s)) {
            errors.push(format!("{path}.retry_on_statuses"), format!("{status} is not a status from 400 to 599"));
        }
        let backoff = &self.retry_backoff;
        if backoff.max < backoff.base {
            errors.push(
                format!("{path}.retry_backoff.max"),
                format!("{} ms is less than base ({} ms)", backoff.max.as_millis(), backoff.base.as_millis()),
            );
        }
        if backoff.max > self.read_timeout {
            errors.push(
                format!("{path}.retry_backoff.max"),
                format!(
                    "{} ms is longer than the service's read_timeout ({} ms): a retry would wait longer than a try",
                    backoff.max.as_millis(),
                    self.read_timeout.as_millis()
                ),
            );
        }
        if let Some(per_try) = self.per_try_timeout {
            if per_try.is_zero() {
                errors.push(format!("{path}.per_try_timeout"), "must be 1 ms or more");
            } else if per_try > self.read_timeout {
                errors.push(
                    format!("{path}.per_try_timeout"),
                    format!(
                        "{} ms is longer than the service's read_timeout ({} ms), which would end the try first",
                        per_try.as_millis(),
                        self.read_timeout.as_millis()
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_fields_are_checked() {
        let paths = |json: &str| {
            let s: Service = serde_json::from_str(json).unwrap();
            let mut errors = Errors::default();
            s.validate("services/a", &mut errors);
            errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>()
        };
        assert!(paths(r#"{"name":"a","url":"http://x","retry_on_statuses":[502,503,504],"per_try_timeout":500}"#)
            .is_empty());
        assert_eq!(
            paths(r#"{"name":"a","url":"http://x","retry_on_statuses":[503,200]}"#),
            ["services/a.retry_on_statuses: 200 is not a status from 400 to 599"]
        );
        assert_eq!(
            paths(r#"{"name":"a","url":"http://x","retry_backoff":{"base":100,"max":50}}"#),
            ["services/a.retry_backoff.max: 50 ms is less than base (100 ms)"]
        );
        let long = paths(r#"{"name":"a","url":"http://x","read_timeout":1000,"retry_backoff":{"max":2000}}"#);
        assert_eq!(long.len(), 1);
        assert!(long[0].starts_with("services/a.retry_backoff.max: 2000 ms is longer than the service's read_timeout"));
        assert_eq!(
            paths(r#"{"name":"a","url":"http://x","per_try_timeout":0}"#),
            ["services/a.per_try_timeout: must be 1 ms or more"]
        );
        let long = paths(r#"{"name":"a","url":"http://x","read_timeout":1000,"per_try_timeout":1001}"#);
        assert!(long[0].starts_with("services/a.per_try_timeout: 1001 ms is longer"), "{long:?}");
    }

    #[test]
    fn backoff_doubles_up_to_its_max_with_full_jitter() {
        let b = Backoff { base: Duration::from_millis(25), max: Duration::from_millis(250) };
        let ceilings: Vec<_> = (1..=6).map(|r| b.ceiling(r).as_millis()).collect();
        assert_eq!(ceilings, [25, 50, 100, 200, 250, 250]);
        assert_eq!(b.ceiling(200), Duration::from_millis(250), "no overflow on many retries");
        assert_eq!(b.wait(3, 0.0), Duration::ZERO);
        assert_eq!(b.wait(3, 0.5), Duration::from_millis(50));
        assert!(b.wait(3, 0.999) < Duration::from_millis(100));
        let s: Service = serde_json::from_str(r#"{"name":"a","url":"http://x"}"#).unwrap();
        assert_eq!(s.retry_backoff, b, "the contract's default");
        assert!(s.per_try_timeout.is_none() && s.retry_on_statuses.is_empty() && !s.retry_non_idempotent);
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("retry_backoff").is_none() && json.get("per_try_timeout").is_none(), "{json}");
    }

    #[test]
    fn parses_urls() {
        let u = ServiceUrl::parse("http://Orders-Up/v1/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("orders-up", None, "/v1"));
        let u = ServiceUrl::parse("http://10.0.0.1:8080").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("10.0.0.1", Some(8080), ""));
        let u = ServiceUrl::parse("http://[::1]:9/x").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("::1", Some(9), "/x"));
        let u = ServiceUrl::parse("https://api.example.com/v2").unwrap();
        assert!(u.tls && u.port.is_none() && u.port_or_default() == 443);
        assert_eq!(ServiceUrl::parse("http://a").unwrap().port_or_default(), 80);
        let u = ServiceUrl::parse("grpc://up:50051").unwrap();
        assert!(u.grpc && !u.tls && u.port == Some(50051));
        let u = ServiceUrl::parse("grpcs://up").unwrap();
        assert!(u.grpc && u.tls && u.port_or_default() == 443);
        let s: Service = serde_json::from_str(r#"{"name":"a","url":"grpc://x"}"#).unwrap();
        assert!(s.speaks_http2() && !s.http2);
        let s: Service = serde_json::from_str(r#"{"name":"a","url":"http://x","http2":true}"#).unwrap();
        assert!(s.speaks_http2());
        for bad in
            ["ftp://a", "HTTPS//a", "http://", "http://a:0", "http://a:x", "http://a b", "http://a/?q", "http://u@a"]
        {
            assert!(ServiceUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s: Service = serde_json::from_str(r#"{"name":"a","url":"http://x"}"#).unwrap();
        assert_eq!(s.retries, 5);
        assert_eq!(s.connect_timeout, Duration::from_secs(60));
        assert_eq!(s.read_timeout, Duration::from_secs(60));
        assert_eq!(s.write_timeout, Duration::from_secs(60));
    }

    #[test]
    fn validation_reports_every_field() {
        let s: Service = serde_json::from_str(r#"{"name":"a b","url":"ftp://x","connect_timeout":0}"#).unwrap();
        let mut errors = Errors::default();
        s.validate("services/a b", &mut errors);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["services/a b.name", "services/a b.url", "services/a b.connect_timeout"]);
        let s: Service =
            serde_json::from_str(r#"{"name":"a","url":"http://x","tls_verify":false,"tls_server_name":"a b"}"#)
                .unwrap();
        let mut errors = Errors::default();
        s.validate("services/a", &mut errors);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["services/a.tls_verify", "services/a.tls_server_name", "services/a.tls_server_name"]);
    }
}
