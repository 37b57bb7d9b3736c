//! The etcd key layout: which entity a key holds.
//!
//! ```text
//! <prefix>/services/<name>
//! <prefix>/routes/<name>
//! <prefix>/upstreams/<name>
//! <prefix>/upstreams/<upstream>/targets/<host:port>
//! <prefix>/plugins/<plugin-name>
//! <prefix>/consumers/<username>
//! <prefix>/consumers/<username>/key-auth/<id>
//! <prefix>/consumers/<username>/basic-auth/<id>
//! <prefix>/consumers/<username>/jwt/<id>
//! <prefix>/certificates/<name>
//! <prefix>/ca_certificates/<name>
//! ```

use crate::model::CredentialKind;
use std::fmt;

/// The entity a key holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKey {
    /// `services/<name>`.
    Service(String),
    /// `routes/<name>`.
    Route(String),
    /// `upstreams/<name>`.
    Upstream(String),
    /// `upstreams/<upstream>/targets/<host:port>`.
    Target(String, String),
    /// `plugins/<plugin-name>`: a plugin for every route.
    Plugin(String),
    /// `consumers/<username>`.
    Consumer(String),
    /// `consumers/<username>/<kind>/<id>`: a credential.
    Credential(String, CredentialKind, String),
    /// `certificates/<name>`.
    Certificate(String),
    /// `ca_certificates/<name>`.
    CaCertificate(String),
}

impl EntityKey {
    /// Reads the part of a key after the prefix and its `/`.
    pub fn parse(relative: &str) -> Result<EntityKey, String> {
        let parts: Vec<&str> = relative.split('/').collect();
        let key = match parts[..] {
            ["services", name] => EntityKey::Service(name.to_owned()),
            ["routes", name] => EntityKey::Route(name.to_owned()),
            ["upstreams", name] => EntityKey::Upstream(name.to_owned()),
            ["upstreams", upstream, "targets", target] => EntityKey::Target(upstream.to_owned(), target.to_owned()),
            ["plugins", name] => EntityKey::Plugin(name.to_owned()),
            ["consumers", name] => EntityKey::Consumer(name.to_owned()),
            ["certificates", name] => EntityKey::Certificate(name.to_owned()),
            ["ca_certificates", name] => EntityKey::CaCertificate(name.to_owned()),
            ["consumers", username, kind, id] if CredentialKind::parse(kind).is_some() => {
                let kind = CredentialKind::parse(kind).expect("checked by the guard");
                EntityKey::Credential(username.to_owned(), kind, id.to_owned())
            }
            _ => {
                return Err(format!(
                    "{relative:?} is not a config key: expected services/<name>, routes/<name>, \
                     upstreams/<name>, upstreams/<upstream>/targets/<host:port>, plugins/<name>, \
                     consumers/<username>, consumers/<username>/<key-auth|basic-auth|jwt>/<id>, \
                     certificates/<name> or ca_certificates/<name>"
                ))
            }
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("{relative:?} has an empty segment"));
        }
        Ok(key)
    }

    /// The path errors are reported under: `routes/orders`, `upstreams/u/targets/a:1`.
    pub fn path(&self) -> String {
        self.to_string()
    }

    /// The full key under `prefix`.
    pub fn under(&self, prefix: &str) -> String {
        format!("{}/{self}", prefix.trim_end_matches('/'))
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityKey::Service(n) => write!(f, "services/{n}"),
            EntityKey::Route(n) => write!(f, "routes/{n}"),
            EntityKey::Upstream(n) => write!(f, "upstreams/{n}"),
            EntityKey::Target(u, t) => write!(f, "upstreams/{u}/targets/{t}"),
            EntityKey::Plugin(n) => write!(f, "plugins/{n}"),
            EntityKey::Consumer(n) => write!(f, "consumers/{n}"),
            EntityKey::Credential(u, kind, id) => write!(f, "consumers/{u}/{kind}/{id}"),
            EntityKey::Certificate(n) => write!(f, "certificates/{n}"),
            EntityKey::CaCertificate(n) => write!(f, "ca_certificates/{n}"),
        }
    }
}

/// A prefix as written in settings, normalized: one leading `/`, no trailing `/`.
pub fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

/// The first key after every key that starts with `prefix`: the end of its range.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/gateway/"), b"/gateway0");
        assert_eq!(prefix_end("a"), b"b");
    }

    #[test]
    fn keys_round_trip() {
        for key in [
            EntityKey::Service("orders".into()),
            EntityKey::Route("r".into()),
            EntityKey::Upstream("u".into()),
            EntityKey::Target("u".into(), "10.0.0.5:8080".into()),
            EntityKey::Plugin("proxy-cache".into()),
            EntityKey::Consumer("alice".into()),
            EntityKey::Credential("alice".into(), CredentialKind::KeyAuth, "k1".into()),
            EntityKey::Credential("alice".into(), CredentialKind::BasicAuth, "b".into()),
            EntityKey::Credential("alice".into(), CredentialKind::Jwt, "j".into()),
        ] {
            assert_eq!(EntityKey::parse(&key.path()).unwrap(), key);
        }
        assert_eq!(EntityKey::Service("a".into()).under("/gateway/"), "/gateway/services/a");
    }

    #[test]
    fn other_keys_are_refused_with_the_layout() {
        for bad in [
            "services",
            "services/a/b",
            "upstreams/u/targets",
            "things/a",
            "services/",
            "upstreams//targets/x",
            "consumers/a/oauth2/x",
            "consumers/a/key-auth",
            "consumers//key-auth/x",
        ] {
            let e = EntityKey::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn prefixes_normalize() {
        assert_eq!(normalize_prefix("/gateway"), "/gateway");
        assert_eq!(normalize_prefix("gateway/"), "/gateway");
        assert_eq!(normalize_prefix("/"), "");
    }
}
