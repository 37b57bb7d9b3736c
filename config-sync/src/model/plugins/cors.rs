//! The `cors` plugin's config, with Kong's fields and defaults.
//!
//! An origin is written exactly (`https://app.example.com`), as `*` (any origin), or as a regex
//! after a `~` (`~https://.*\.example\.com`), matched against the whole origin. Regexes are
//! compiled here to check them, and again by the gateway once per snapshot.

use super::auth::is_token;
use crate::validate::Errors;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// The `cors` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cors {
    /// Allowed origins: exact (`scheme://host[:port]`), `*`, or `~regex`. Default none, which
    /// allows any origin (`Access-Control-Allow-Origin: *`), as in Kong.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<String>,
    /// Methods a preflight may ask for (`Access-Control-Allow-Methods`). Default Kong's: GET,
    /// HEAD, PUT, PATCH, POST, DELETE, OPTIONS, TRACE, CONNECT.
    pub methods: Vec<String>,
    /// `Access-Control-Allow-Headers`. Default none: a preflight's
    /// `Access-Control-Request-Headers` is echoed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// `Access-Control-Expose-Headers`. Default none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exposed_headers: Vec<String>,
    /// `Access-Control-Allow-Credentials: true`, with the origin echoed instead of `*`.
    /// Default false.
    pub credentials: bool,
    /// `Access-Control-Max-Age`, whole seconds (the header's own unit). Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    /// Pass preflights on to the upstream instead of answering them. Default false.
    pub preflight_continue: bool,
    /// Answer `Access-Control-Request-Private-Network: true` with
    /// `Access-Control-Allow-Private-Network: true`. Default false.
    pub private_network: bool,
}

/// Kong's default `methods`.
pub const DEFAULT_CORS_METHODS: [&str; 9] =
    ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT"];

impl Default for Cors {
    fn default() -> Self {
        Cors {
            origins: Vec::new(),
            methods: DEFAULT_CORS_METHODS.iter().map(|m| (*m).to_owned()).collect(),
            headers: Vec::new(),
            exposed_headers: Vec::new(),
            credentials: false,
            max_age: None,
            preflight_continue: false,
            private_network: false,
        }
    }
}

impl Cors {
    /// Pushes every problem onto `errors`, under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        for (i, origin) in self.origins.iter().enumerate() {
            let at = format!("{path}.origins[{i}]");
            match origin.strip_prefix('~') {
                Some(pattern) => {
                    if let Err(e) = anchored(std::iter::once(pattern)) {
                        errors.push(at, format!("invalid regex: {}", first_line(&e)));
                    }
                }
                None if exact_origin(origin).is_none() => errors.push(
                    at,
                    format!("{origin:?} is not an origin (scheme://host[:port]), `*`, `null`, or a `~regex`"),
                ),
                None => {}
            }
        }
        if self.methods.is_empty() {
            errors.push(format!("{path}.methods"), "needs at least one method");
        }
        for (i, method) in self.methods.iter().enumerate() {
            if !is_token(method) {
                errors.push(format!("{path}.methods[{i}]"), format!("{method:?} is not a method name"));
            } else if method.bytes().any(|b| b.is_ascii_lowercase()) {
                // Browsers send standard methods upper-cased, and methods compare exactly.
                errors.push(
                    format!("{path}.methods[{i}]"),
                    format!("methods compare case-sensitively: write {:?}", method.to_ascii_uppercase()),
                );
            }
        }
        for (field, names) in [("headers", &self.headers), ("exposed_headers", &self.exposed_headers)] {
            for (i, name) in names.iter().enumerate() {
                if !is_token(name) {
                    errors.push(format!("{path}.{field}[{i}]"), format!("{name:?} is not a valid header name"));
                }
            }
        }
    }

    /// The regex origins (those written `~...`) joined into one regex anchored on the whole
    /// origin; None when there are none. Validated configs always compile.
    pub fn origin_regex(&self) -> Option<Result<Regex, regex::Error>> {
        let patterns: Vec<&str> = self.origins.iter().filter_map(|o| o.strip_prefix('~')).collect();
        (!patterns.is_empty()).then(|| anchored(patterns.into_iter()))
    }

    /// The exact origins, normalized ([`exact_origin`]); `*` and `null` as written.
    pub fn exact_origins(&self) -> impl Iterator<Item = String> + '_ {
        self.origins.iter().filter(|o| !o.starts_with('~')).filter_map(|o| exact_origin(o))
    }
}

/// Compiles `patterns` as one regex that must match a whole origin.
fn anchored<'a>(patterns: impl Iterator<Item = &'a str>) -> Result<Regex, regex::Error> {
    let alternatives: Vec<String> = patterns.map(|p| format!("(?:{p})")).collect();
    Regex::new(&format!(r"\A(?:{})\z", alternatives.join("|")))
}

fn first_line(e: &regex::Error) -> String {
    // The regex crate's messages draw the pattern over several lines; the last says what.
    let text = e.to_string();
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(&text).trim();
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}

/// An exact origin as compared: `*` and `null` as they are; `scheme://host[:port]` in lower
/// case, without the scheme's default port or a trailing `/` (as Kong normalizes them). None
/// for anything else.
pub fn exact_origin(origin: &str) -> Option<String> {
    if origin == "*" || origin == "null" {
        return Some(origin.to_owned());
    }
    let origin = origin.strip_suffix('/').unwrap_or(origin).to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let authority_ok = !authority.is_empty()
        && authority.bytes().all(|b| b.is_ascii_graphic() && !b"/?#@\\".contains(&b))
        && !authority.starts_with(':');
    if !scheme_ok || !authority_ok {
        return None;
    }
    let default_port = match scheme {
        "http" | "ws" => Some(":80"),
        "https" | "wss" => Some(":443"),
        _ => None,
    };
    match default_port.and_then(|port| origin.strip_suffix(port)) {
        Some(without) if !without.ends_with("://") => Some(without.to_owned()),
        _ => Some(origin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(cors: &Cors) -> Vec<String> {
        let mut errors = Errors::default();
        cors.validate("p", &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_are_kongs() {
        let c: Cors = serde_json::from_str("{}").unwrap();
        assert_eq!(c.methods, DEFAULT_CORS_METHODS);
        assert!(c.origins.is_empty() && c.headers.is_empty() && !c.credentials && !c.preflight_continue);
        assert_eq!(c.max_age, None);
        assert!(errors_of(&c).is_empty());
    }

    #[test]
    fn a_regex_that_does_not_compile_is_reported_with_its_path() {
        let c: Cors = serde_json::from_str(r#"{"origins":["https://a.example", "~https://(.*\\.example"]}"#).unwrap();
        let got = errors_of(&c);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("p.origins[1]: invalid regex: "), "{got:?}");
        assert_eq!(got[0], "p.origins[1]: invalid regex: unclosed group");
    }

    #[test]
    fn origins_methods_and_headers_are_checked() {
        let c: Cors = serde_json::from_str(
            r#"{"origins":["https://a.example/path","example.com","*","null"],
                "methods":["GET","get","BAD METHOD"],"headers":["X-Ok","bad header"],"exposed_headers":["x y"]}"#,
        )
        .unwrap();
        let paths: Vec<String> = errors_of(&c).iter().map(|e| e.split(':').next().unwrap().to_owned()).collect();
        assert_eq!(
            paths,
            ["p.origins[0]", "p.origins[1]", "p.methods[1]", "p.methods[2]", "p.headers[1]", "p.exposed_headers[0]"]
        );
        let c: Cors = serde_json::from_str(r#"{"methods":[]}"#).unwrap();
        assert_eq!(errors_of(&c), ["p.methods: needs at least one method"]);
    }

    #[test]
    fn exact_origins_are_normalized_as_kong_does() {
        assert_eq!(exact_origin("HTTPS://App.Example.com/").as_deref(), Some("https://app.example.com"));
        assert_eq!(exact_origin("https://a.example:443").as_deref(), Some("https://a.example"));
        assert_eq!(exact_origin("http://a.example:80").as_deref(), Some("http://a.example"));
        assert_eq!(exact_origin("http://a.example:8080").as_deref(), Some("http://a.example:8080"));
        assert_eq!(exact_origin("http://[::1]:80").as_deref(), Some("http://[::1]"));
        for bad in ["a.example", "https://", "https://a.example/x", "https://a b", "://a"] {
            assert_eq!(exact_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn regex_origins_are_joined_and_anchored() {
        let c: Cors =
            serde_json::from_str(r#"{"origins":["~https://.*\\.a\\.example","https://b.example","~http://c"]}"#)
                .unwrap();
        let re = c.origin_regex().unwrap().unwrap();
        assert!(re.is_match("https://x.a.example"));
        assert!(re.is_match("http://c"));
        assert!(!re.is_match("https://x.a.example.evil"), "anchored at the end");
        assert!(!re.is_match("evil-http://c"), "anchored at the start");
        assert!(!re.is_match("https://b.example"), "exact entries are not in the regex");
        assert_eq!(c.exact_origins().collect::<Vec<_>>(), ["https://b.example"]);
        assert!(Cors::default().origin_regex().is_none());
    }
}
