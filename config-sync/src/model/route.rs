//! A route: which requests go to which service.

use super::{check_name, service::check_host, Plugins};
use crate::validate::Errors;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Matches requests and sends them to a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The route's name; in etcd it is the last key segment and the body may repeat it.
    #[serde(default)]
    pub name: String,
    /// The service matched requests go to. Implied for a route nested under a service in the
    /// declarative file.
    #[serde(default)]
    pub service: String,
    /// Hosts, exact (`api.example.com`) or with one leading wildcard label (`*.example.com`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path prefixes (`/orders`); a leading `~` makes a regex matched from the start of the path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// HTTP methods (upper case); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Header name to the values accepted (any one of them, compared without case).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Remove the matched path from the upstream request. Default true.
    #[serde(default = "yes")]
    pub strip_path: bool,
    /// Send the client's Host header upstream instead of the target's. Default false.
    #[serde(default)]
    pub preserve_host: bool,
    /// Among regex routes that match, the higher priority wins. Default 0.
    #[serde(default)]
    pub priority: i32,
    /// The schemes the route serves. Default both.
    #[serde(default = "Protocol::both")]
    pub protocols: Vec<Protocol>,
    /// What a plain-HTTP request gets when `protocols` leaves out `http` but names `https`: 426,
    /// or a redirect to the same URL over HTTPS (301, 302, 307, 308). Default 426.
    #[serde(default = "upgrade_required")]
    pub https_redirect_status_code: u16,
    /// Plugins for this route; they win over the service's and the global ones.
    #[serde(default, skip_serializing_if = "Plugins::is_empty")]
    pub plugins: Plugins,
}

/// A scheme a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Plain HTTP (the proxy listener).
    Http,
    /// HTTP over TLS (the TLS proxy listener).
    Https,
}

impl Protocol {
    fn both() -> Vec<Protocol> {
        vec![Protocol::Http, Protocol::Https]
    }
}

fn yes() -> bool {
    true
}

fn upgrade_required() -> u16 {
    426
}

/// What `https_redirect_status_code` may be.
const HTTPS_REDIRECT_CODES: [u16; 5] = [426, 301, 302, 307, 308];

/// The longest regex accepted in `paths`, in bytes of its compiled program, so that one route
/// cannot make the router's regex set huge.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Route {
    /// Pushes every problem with this route onto `errors`, under `path` (`routes/<name>`).
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        check_name(&self.name, &format!("{path}.name"), errors);
        if self.service.is_empty() {
            errors.push(format!("{path}.service"), "is required");
        }
        if self.hosts.is_empty() && self.paths.is_empty() && self.methods.is_empty() && self.headers.is_empty() {
            errors.push(path, "needs at least one of hosts, paths, methods, headers");
        }
        for (i, host) in self.hosts.iter().enumerate() {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            if let Err(e) = check_host(bare) {
                errors.push(format!("{path}.hosts[{i}]"), e);
            } else if bare.contains('*') {
                errors.push(format!("{path}.hosts[{i}]"), "only one leading \"*.\" wildcard is allowed");
            }
        }
        for (i, p) in self.paths.iter().enumerate() {
            let at = format!("{path}.paths[{i}]");
            if let Some(pattern) = p.strip_prefix('~') {
                if let Err(e) = regex::RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build() {
                    errors.push(at, format!("invalid regex: {}", one_line(&e.to_string())));
                }
            } else if !p.starts_with('/') {
                errors.push(at, "a path prefix must start with / (or ~ for a regex)");
            }
        }
        for (i, m) in self.methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                errors.push(format!("{path}.methods[{i}]"), format!("{m:?} is not an upper-case HTTP method"));
            }
        }
        for (name, values) in &self.headers {
            let at = format!("{path}.headers.{name}");
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                errors.push(at, "not a valid header name");
            } else if name.eq_ignore_ascii_case("host") {
                errors.push(at, "use hosts to match the Host header");
            } else if values.is_empty() {
                errors.push(at, "needs at least one value");
            }
        }
        if self.protocols.is_empty() {
            errors.push(format!("{path}.protocols"), "needs http, https or both");
        }
        if !HTTPS_REDIRECT_CODES.contains(&self.https_redirect_status_code) {
            errors.push(format!("{path}.https_redirect_status_code"), "must be 426, 301, 302, 307 or 308");
        }
        self.plugins.validate(&format!("{path}.plugins"), errors);
    }
}

/// Whether `b` may appear in an HTTP token (RFC 9110 `tchar`).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Regex errors span several lines with a caret diagram; keep the last, which says what is wrong.
fn one_line(message: &str) -> String {
    message.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(message).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(json: &str) -> Route {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_follow_the_contract() {
        let r = route(r#"{"name":"r","service":"s","paths":["/a"]}"#);
        assert!(r.strip_path);
        assert!(!r.preserve_host);
        assert_eq!(r.priority, 0);
        assert_eq!(r.protocols, [Protocol::Http, Protocol::Https]);
        assert_eq!(r.https_redirect_status_code, 426);
    }

    #[test]
    fn every_bad_field_is_reported_with_its_path() {
        let r = route(
            r#"{"name":"orders","service":"s","paths":["/ok","~(unclosed","nope"],
                "hosts":["*.ok.com","a.*.com"],"methods":["get"],"headers":{"x y":["1"],"x-v":[]},
                "protocols":[],"https_redirect_status_code":303}"#,
        );
        let mut errors = Errors::default();
        r.validate("routes/orders", &mut errors);
        let got: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(got[0].starts_with("routes/orders.hosts[1]:"), "{got:?}");
        assert!(got[1].starts_with("routes/orders.paths[1]: invalid regex"), "{got:?}");
        assert!(got[2].starts_with("routes/orders.paths[2]:"), "{got:?}");
        assert!(got[3].starts_with("routes/orders.methods[0]:"), "{got:?}");
        assert!(got[4].starts_with("routes/orders.headers.x y:"), "{got:?}");
        assert!(got[5].starts_with("routes/orders.headers.x-v:"), "{got:?}");
        assert!(got[6].starts_with("routes/orders.protocols:"), "{got:?}");
        assert!(got[7].starts_with("routes/orders.https_redirect_status_code:"), "{got:?}");
        assert_eq!(got.len(), 8);
    }

    #[test]
    fn a_route_must_match_something() {
        let r = route(r#"{"name":"r","service":"s"}"#);
        let mut errors = Errors::default();
        r.validate("routes/r", &mut errors);
        assert_eq!(errors.len(), 1);
    }
}
