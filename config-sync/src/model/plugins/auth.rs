//! The configs of the plugins that tell who a caller is (`key-auth`, `basic-auth`, `jwt`) and
//! what they may use (`acl`), with Kong's fields and defaults.
//!
//! `anonymous` names a consumer that requests failing authentication proceed as, instead of
//! getting a 401; another auth plugin of the same route may still authenticate them.

use crate::model::units;
use crate::validate::Errors;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The `key-auth` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyAuth {
    /// Header and query parameter names a key is looked for under. Default `["apikey"]`.
    pub key_names: Vec<String>,
    /// Look in the request headers. Default true.
    pub key_in_header: bool,
    /// Look in the query string. Default true.
    pub key_in_query: bool,
    /// Remove the key before the request goes upstream. Default false.
    pub hide_credentials: bool,
    /// The consumer a request without a valid key proceeds as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<String>,
    /// Authenticate CORS preflights (`OPTIONS`) too. Default true.
    pub run_on_preflight: bool,
}

impl Default for KeyAuth {
    fn default() -> Self {
        KeyAuth {
            key_names: vec!["apikey".into()],
            key_in_header: true,
            key_in_query: true,
            hide_credentials: false,
            anonymous: None,
            run_on_preflight: true,
        }
    }
}

impl KeyAuth {
    /// Pushes every problem onto `errors`, under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        if self.key_names.is_empty() {
            errors.push(format!("{path}.key_names"), "needs at least one name");
        }
        for (i, name) in self.key_names.iter().enumerate() {
            if !is_token(name) {
                errors.push(format!("{path}.key_names[{i}]"), format!("{name:?} is not a valid header name"));
            }
        }
        if !self.key_in_header && !self.key_in_query {
            errors.push(path, "key_in_header and key_in_query are both false: no key could ever be found");
        }
        check_anonymous(self.anonymous.as_deref(), path, errors);
    }
}

/// The `basic-auth` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuth {
    /// Remove `Authorization` before the request goes upstream. Default false.
    pub hide_credentials: bool,
    /// The consumer a request without valid credentials proceeds as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<String>,
    /// The realm of the `WWW-Authenticate` challenge. Default `gateway`.
    pub realm: String,
}

impl Default for BasicAuth {
    fn default() -> Self {
        BasicAuth { hide_credentials: false, anonymous: None, realm: "gateway".into() }
    }
}

impl BasicAuth {
    /// Pushes every problem onto `errors`, under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        if self.realm.is_empty() || self.realm.contains(['"', '\\']) || self.realm.chars().any(char::is_control) {
            errors.push(format!("{path}.realm"), "must be non-empty text without quotes, backslashes or controls");
        }
        check_anonymous(self.anonymous.as_deref(), path, errors);
    }
}

/// A registered claim `jwt` can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Claim {
    /// Expiry: the token is refused from then on.
    Exp,
    /// Not before: the token is refused until then.
    Nbf,
}

/// The `jwt` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jwt {
    /// Query parameters a token is looked for under. Default `["jwt"]`.
    pub uri_param_names: Vec<String>,
    /// Cookies a token is looked for under. Default none.
    pub cookie_names: Vec<String>,
    /// Headers a token is looked for under, as `Bearer <token>`. Default `["authorization"]`.
    pub header_names: Vec<String>,
    /// Claims checked against this node's clock. Default `["exp"]`.
    pub claims_to_verify: Vec<Claim>,
    /// The claim naming the credential (its `key`). Default `iss`.
    pub key_claim_name: String,
    /// HS secrets are base64 and are decoded before use. Default false.
    pub secret_is_base64: bool,
    /// The longest a token may live from now, seconds (0: any). Needs `exp` verified.
    #[serde(with = "units::seconds")]
    pub maximum_expiration: Duration,
    /// The consumer a request without a valid token proceeds as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<String>,
    /// Authenticate CORS preflights (`OPTIONS`) too. Default true.
    pub run_on_preflight: bool,
}

impl Default for Jwt {
    fn default() -> Self {
        Jwt {
            uri_param_names: vec!["jwt".into()],
            cookie_names: Vec::new(),
            header_names: vec!["authorization".into()],
            claims_to_verify: vec![Claim::Exp],
            key_claim_name: "iss".into(),
            secret_is_base64: false,
            maximum_expiration: Duration::ZERO,
            anonymous: None,
            run_on_preflight: true,
        }
    }
}

impl Jwt {
    /// Kong's ceiling for `maximum_expiration`: a year.
    const MAX_EXPIRATION: Duration = Duration::from_secs(31_536_000);

    /// Pushes every problem onto `errors`, under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        for (i, name) in self.header_names.iter().enumerate() {
            if !is_token(name) {
                errors.push(format!("{path}.header_names[{i}]"), format!("{name:?} is not a valid header name"));
            }
        }
        if self.uri_param_names.is_empty() && self.cookie_names.is_empty() && self.header_names.is_empty() {
            errors.push(path, "uri_param_names, cookie_names and header_names are all empty: no token could be found");
        }
        if self.key_claim_name.is_empty() {
            errors.push(format!("{path}.key_claim_name"), "is required");
        }
        if self.maximum_expiration > Self::MAX_EXPIRATION {
            errors.push(format!("{path}.maximum_expiration"), "must be at most 31536000 s (a year)");
        }
        if !self.maximum_expiration.is_zero() && !self.claims_to_verify.contains(&Claim::Exp) {
            errors.push(format!("{path}.maximum_expiration"), "needs \"exp\" in claims_to_verify");
        }
        check_anonymous(self.anonymous.as_deref(), path, errors);
    }
}

/// The `acl` plugin: which consumer groups may use a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Acl {
    /// Only consumers in one of these groups pass.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Consumers in one of these groups are refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Do not send `X-Consumer-Groups` upstream. Default false.
    pub hide_groups_header: bool,
}

impl Acl {
    /// Pushes every problem onto `errors`, under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        match (self.allow.is_empty(), self.deny.is_empty()) {
            (true, true) => errors.push(path, "needs allow or deny"),
            (false, false) => errors.push(path, "takes allow or deny, not both"),
            _ => {}
        }
        for (field, groups) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (i, group) in groups.iter().enumerate() {
                if group.trim().is_empty() {
                    errors.push(format!("{path}.{field}[{i}]"), "a group name must not be empty");
                }
            }
        }
    }
}

fn check_anonymous(anonymous: Option<&str>, path: &str, errors: &mut Errors) {
    if let Some(name) = anonymous {
        crate::model::check_name(name, &format!("{path}.anonymous"), errors);
    }
}

/// Whether `name` is an HTTP token (RFC 9110 §5.6.2), as header names must be.
pub(super) fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(check: impl FnOnce(&mut Errors)) -> Vec<String> {
        let mut errors = Errors::default();
        check(&mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_are_kongs() {
        let k: KeyAuth = serde_json::from_str("{}").unwrap();
        assert_eq!(k.key_names, ["apikey"]);
        assert!(k.key_in_header && k.key_in_query && !k.hide_credentials && k.run_on_preflight);
        let j: Jwt = serde_json::from_str("{}").unwrap();
        assert_eq!(j.claims_to_verify, [Claim::Exp]);
        assert_eq!(j.key_claim_name, "iss");
        assert_eq!(j.header_names, ["authorization"]);
        let b: BasicAuth = serde_json::from_str("{}").unwrap();
        assert_eq!(b.realm, "gateway");
    }

    #[test]
    fn bad_fields_are_reported_with_their_paths() {
        let k: KeyAuth = serde_json::from_str(r#"{"key_names":["api key"],"anonymous":"no one"}"#).unwrap();
        let got = errors_of(|e| k.validate("p", e));
        assert!(got[0].starts_with("p.key_names[0]:"), "{got:?}");
        assert!(got[1].starts_with("p.anonymous:"), "{got:?}");
        let j: Jwt = serde_json::from_str(r#"{"claims_to_verify":["nbf"],"maximum_expiration":60}"#).unwrap();
        assert_eq!(errors_of(|e| j.validate("p", e)), ["p.maximum_expiration: needs \"exp\" in claims_to_verify"]);
        assert!(serde_json::from_str::<Jwt>(r#"{"claims_to_verify":["iat"]}"#).is_err());
        let a: Acl = serde_json::from_str(r#"{"allow":["a"],"deny":["b"]}"#).unwrap();
        assert_eq!(errors_of(|e| a.validate("p", e)), ["p: takes allow or deny, not both"]);
        let a: Acl = serde_json::from_str("{}").unwrap();
        assert_eq!(errors_of(|e| a.validate("p", e)), ["p: needs allow or deny"]);
    }
}
