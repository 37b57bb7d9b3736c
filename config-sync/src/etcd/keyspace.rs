//! The config as etcd holds it, key by key, and the snapshots built from it (sans-IO).
//!
//! Each key is checked on its own. A value that does not parse or validate is not applied: the
//! key keeps its last good value (or its absence) and the error is listed, with the key and the
//! revision, until a later write fixes or deletes it. Every other key still applies. A key read
//! whole with a bad value (a node's first read, a re-read) has no last good value of its own: the
//! reader finds one in etcd's history ([`KeySpace::unserved`], [`KeySpace::serve_earlier`]) or
//! in what it served before ([`KeySpace::keep_from`]), so that every node serves the same.

use super::keys::EntityKey;
use crate::config::Config;
use crate::config::EntityRef;
use crate::model::{
    CaCertificate, Certificate, Consumer, Credential, Password, Plugins, Route, Service, Target, Upstream,
};
use crate::snapshot::{ConfigError, Snapshot};
use crate::validate::{from_value, Errors};
use serde_json::Value;
use std::collections::BTreeMap;

/// A validated value of one key.
// Made once per key written, never on a request's path: the size of the largest variant costs
// nothing that boxing it would save.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Entity {
    /// A service.
    Service(Service),
    /// A route.
    Route(Route),
    /// An upstream.
    Upstream(Upstream),
    /// A target.
    Target(Target),
    /// One global plugin's config, as `{"<name>": <config>}`.
    Plugin(Plugins),
    /// A consumer.
    Consumer(Consumer),
    /// A consumer's credential.
    Credential(Credential),
    /// A TLS certificate.
    Certificate(Certificate),
    /// A CA certificate.
    CaCertificate(CaCertificate),
}

/// Every config key under a prefix: the good values, and the errors of the bad ones.
#[derive(Debug, Clone, Default)]
pub struct KeySpace {
    good: BTreeMap<EntityKey, Entity>,
    /// By full key, so that keys outside the layout are listed too.
    errors: BTreeMap<String, ConfigError>,
    /// Every key seen, bad ones included, with the revision it was last written at.
    revisions: BTreeMap<String, u64>,
    /// The full key of each good entity.
    full_keys: BTreeMap<EntityKey, String>,
}

impl KeySpace {
    /// An empty key space.
    pub fn new() -> KeySpace {
        KeySpace::default()
    }

    /// Applies a put of `value` at `key` (the full key; `relative` is the part after the prefix).
    pub fn put(&mut self, key: &str, relative: &str, value: &[u8], revision: u64) {
        self.revisions.insert(key.to_owned(), revision);
        match parse_entity(relative, value) {
            Ok((entity_key, entity)) => {
                self.errors.remove(key);
                self.full_keys.insert(entity_key.clone(), key.to_owned());
                self.good.insert(entity_key, entity);
            }
            Err(message) => {
                // Say what is served instead, so that two nodes that differ here can be told apart:
                // one that had a good value keeps it, one that never had one serves nothing. A key
                // outside the layout never serves anything.
                let message = match EntityKey::parse(relative) {
                    Ok(k) if self.good.contains_key(&k) => format!("{message} {SERVING_LAST_GOOD}"),
                    Ok(_) => format!("{message} {NOT_SERVED}"),
                    Err(_) => message,
                };
                let error = ConfigError { key: key.to_owned(), revision: Some(revision), message };
                self.errors.insert(key.to_owned(), error);
            }
        }
    }

    /// The keys whose value is bad and that serve nothing for it, with the revision of that
    /// value: each may have had a good value earlier.
    pub fn unserved(&self) -> Vec<(String, u64)> {
        self.errors
            .values()
            .filter(|e| e.message.ends_with(NOT_SERVED))
            .filter_map(|e| Some((e.key.clone(), e.revision?)))
            .collect()
    }

    /// Serves `value`, an earlier value of the bad `key` (from etcd's history), in place of
    /// nothing, if it is good; the error stays listed. Whether it was.
    pub fn serve_earlier(&mut self, key: &str, relative: &str, value: &[u8]) -> bool {
        match parse_entity(relative, value) {
            Ok((entity_key, entity)) => self.serve_instead(key, entity_key, entity),
            Err(_) => false,
        }
    }

    /// Serves what `earlier` (this node's key space before a re-read) served for the bad `key`,
    /// in place of nothing. Whether it served something.
    pub fn keep_from(&mut self, earlier: &KeySpace, key: &str, relative: &str) -> bool {
        let Ok(entity_key) = EntityKey::parse(relative) else { return false };
        match earlier.good.get(&entity_key) {
            Some(entity) => self.serve_instead(key, entity_key, entity.clone()),
            None => false,
        }
    }

    /// Serves `entity` for `key`, whose own value is bad and serves nothing.
    fn serve_instead(&mut self, key: &str, entity_key: EntityKey, entity: Entity) -> bool {
        let Some(error) = self.errors.get_mut(key) else { return false };
        let Some(message) = error.message.strip_suffix(NOT_SERVED) else { return false };
        error.message = format!("{message}{SERVING_LAST_GOOD}");
        self.full_keys.insert(entity_key.clone(), key.to_owned());
        self.good.insert(entity_key, entity);
        true
    }

    /// Applies a delete of `key`.
    pub fn delete(&mut self, key: &str, relative: &str) {
        self.errors.remove(key);
        self.revisions.remove(key);
        if let Ok(entity_key) = EntityKey::parse(relative) {
            self.good.remove(&entity_key);
            self.full_keys.remove(&entity_key);
        }
    }

    /// Whether `keys` (full key, revision last written) are exactly the keys this space was
    /// built from.
    pub fn holds_exactly<'a>(&self, keys: impl Iterator<Item = (&'a str, u64)>) -> bool {
        let mut count = 0;
        for (key, revision) in keys {
            if self.revisions.get(key) != Some(&revision) {
                return false;
            }
            count += 1;
        }
        count == self.revisions.len()
    }

    /// How many keys hold a good value.
    pub fn len(&self) -> usize {
        self.good.len()
    }

    /// Whether no key holds a good value.
    pub fn is_empty(&self) -> bool {
        self.good.is_empty()
    }

    /// The config the good values make.
    pub fn config(&self) -> Config {
        let mut config = Config::default();
        for (key, entity) in &self.good {
            match (key, entity) {
                (EntityKey::Service(name), Entity::Service(s)) => {
                    config.services.insert(name.clone(), s.clone());
                }
                (EntityKey::Route(name), Entity::Route(r)) => {
                    config.routes.insert(name.clone(), r.clone());
                }
                (EntityKey::Upstream(name), Entity::Upstream(u)) => {
                    config.upstreams.insert(name.clone(), u.clone());
                }
                (EntityKey::Target(upstream, name), Entity::Target(t)) => {
                    config.targets.entry(upstream.clone()).or_default().insert(name.clone(), t.clone());
                }
                (EntityKey::Plugin(_), Entity::Plugin(p)) => config.plugins = p.or(&config.plugins),
                (EntityKey::Consumer(name), Entity::Consumer(c)) => {
                    config.consumers.insert(name.clone(), c.clone());
                }
                (EntityKey::Credential(username, ..), Entity::Credential(c)) => {
                    config.credentials.entry(username.clone()).or_default().insert(c.clone());
                }
                (EntityKey::Certificate(name), Entity::Certificate(c)) => {
                    config.certificates.insert(name.clone(), c.clone());
                }
                (EntityKey::CaCertificate(name), Entity::CaCertificate(c)) => {
                    config.ca_certificates.insert(name.clone(), c.clone());
                }
                _ => unreachable!("parse_entity pairs each key kind with its entity kind"),
            }
        }
        config
    }

    /// The snapshot of this key space at `revision`: the good values, less entities whose
    /// references dangle and credentials that repeat an earlier one's key or username, with
    /// every error listed.
    pub fn snapshot(&self, revision: u64) -> Snapshot {
        let mut config = self.config();
        let mut errors: Vec<ConfigError> = self.errors.values().cloned().collect();
        // Of two credentials with the same key, the one written earlier is served, on every node
        // alike whatever order it learnt them in.
        let written_at = |entity: &EntityRef| self.revision_of(&entity.path()).unwrap_or(u64::MAX);
        for (entity, error) in config.duplicate_credentials(written_at) {
            config.remove(&entity);
            errors.push(ConfigError { key: error.path, revision: None, message: error.message });
        }
        for error in config.conflicting_certificates() {
            errors.push(ConfigError { key: error.path, revision: None, message: error.message });
        }
        let mut snapshot = Snapshot::new(config, revision, errors);
        // A dangling reference or a duplicate is listed like a bad value: under the referring
        // entity's key and the revision it was written at, the field named in the message.
        for error in snapshot.errors.iter_mut().filter(|e| e.revision.is_none()) {
            let Some((full, field)) = self.full_key_of(&error.key) else { continue };
            error.message =
                if field.is_empty() { error.message.clone() } else { format!("{field}: {}", error.message) };
            error.revision = self.revisions.get(&full).copied();
            error.key = full;
        }
        snapshot
    }

    /// The full key of the good entity an error path names (`routes/r.service`, whose names may
    /// hold dots), and the field after it.
    fn full_key_of(&self, path: &str) -> Option<(String, String)> {
        let splits = std::iter::once(path.len()).chain(path.rmatch_indices('.').map(|(i, _)| i));
        splits.into_iter().find_map(|at| {
            let entity = EntityKey::parse(&path[..at]).ok()?;
            let full = self.full_keys.get(&entity)?;
            Some((full.clone(), path[at..].trim_start_matches('.').to_owned()))
        })
    }

    /// The revision the good entity at `path` (relative, as `EntityKey` prints it) was written at.
    fn revision_of(&self, path: &str) -> Option<u64> {
        let full = self.full_keys.get(&EntityKey::parse(path).ok()?)?;
        self.revisions.get(full).copied()
    }
}

/// How an error ends when its key serves an earlier good value, and when it serves nothing.
const SERVING_LAST_GOOD: &str = "(serving its last good value)";
const NOT_SERVED: &str = "(not served)";

/// Parses and validates one key's value on its own, as etcd holds it.
pub fn parse_entity(relative: &str, value: &[u8]) -> Result<(EntityKey, Entity), String> {
    parse(relative, value, false)
}

/// Parses and validates a value about to be written at a key (by the admin API): as
/// [`parse_entity`], except that a basic-auth password may be plain, for the writer to hash.
pub fn parse_submitted(relative: &str, value: &[u8]) -> Result<(EntityKey, Entity), String> {
    parse(relative, value, true)
}

/// What a plain password found in etcd is told.
const PLAIN_PASSWORD: &str =
    "must be stored as a salted hash: write it through the admin API or `gateway apply`, which hash it";

fn parse(relative: &str, value: &[u8], plain_passwords: bool) -> Result<(EntityKey, Entity), String> {
    let key = EntityKey::parse(relative)?;
    let json: Value = serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
    if !json.is_object() {
        return Err("must be a JSON object".into());
    }
    let path = key.path();
    let mut errors = Errors::default();
    let entity = match &key {
        EntityKey::Service(name) => {
            let mut s: Service = from_value(with_name(json, "name", name, &path)?, &path).map_err(|e| e.to_string())?;
            s.name.clone_from(name);
            s.validate(&path, &mut errors);
            Entity::Service(s)
        }
        EntityKey::Route(name) => {
            let r: Route = from_value(with_name(json, "name", name, &path)?, &path).map_err(|e| e.to_string())?;
            r.validate(&path, &mut errors);
            Entity::Route(r)
        }
        EntityKey::Upstream(name) => {
            let u: Upstream = from_value(with_name(json, "name", name, &path)?, &path).map_err(|e| e.to_string())?;
            u.validate(&path, &mut errors);
            Entity::Upstream(u)
        }
        EntityKey::Target(_, target) => {
            let t: Target = from_value(with_name(json, "target", target, &path)?, &path).map_err(|e| e.to_string())?;
            t.validate(&path, &mut errors);
            Entity::Target(t)
        }
        EntityKey::Plugin(name) => {
            let wrapped = Value::Object([(name.clone(), json)].into_iter().collect());
            let p: Plugins = from_value(wrapped, "plugins").map_err(|e| e.to_string())?;
            p.validate("plugins", &mut errors);
            Entity::Plugin(p)
        }
        EntityKey::Consumer(name) => {
            let c: Consumer =
                from_value(with_name(json, "username", name, &path)?, &path).map_err(|e| e.to_string())?;
            c.validate(&path, &mut errors);
            Entity::Consumer(c)
        }
        EntityKey::Credential(_, kind, id) => {
            let c =
                Credential::from_value(*kind, with_name(json, "id", id, &path)?, &path).map_err(|e| e.to_string())?;
            c.validate(&path, &mut errors);
            if let Credential::BasicAuth(basic) = &c {
                if !plain_passwords && matches!(basic.password, Password::Plain(_)) {
                    errors.push(format!("{path}.password"), PLAIN_PASSWORD);
                }
            }
            Entity::Credential(c)
        }
        EntityKey::Certificate(name) => {
            let c: Certificate = from_value(with_name(json, "name", name, &path)?, &path).map_err(|e| e.to_string())?;
            c.validate(&path, &mut errors);
            Entity::Certificate(c)
        }
        EntityKey::CaCertificate(name) => {
            let c: CaCertificate =
                from_value(with_name(json, "name", name, &path)?, &path).map_err(|e| e.to_string())?;
            c.validate(&path, &mut errors);
            Entity::CaCertificate(c)
        }
    };
    if errors.is_empty() {
        Ok((key, entity))
    } else {
        Err(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    }
}

/// Fills the name field from the key, or checks that the body's equals it.
fn with_name(mut json: Value, field: &str, name: &str, path: &str) -> Result<Value, String> {
    let object = json.as_object_mut().expect("checked to be an object");
    match object.get(field) {
        None => {
            object.insert(field.to_owned(), Value::String(name.to_owned()));
        }
        Some(Value::String(given)) if given == name => {}
        Some(given) => return Err(format!("{path}.{field}: {given} differs from the key's {name:?}")),
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(puts: &[(&str, &str)]) -> KeySpace {
        let mut ks = KeySpace::new();
        for (rev, (key, value)) in puts.iter().enumerate() {
            ks.put(&format!("/g/{key}"), key, value.as_bytes(), rev as u64 + 1);
        }
        ks
    }

    #[test]
    fn the_contract_example_as_six_keys() {
        let ks = space(&[
            ("services/orders", r#"{"url":"http://orders-up/v1","retries":3}"#),
            ("routes/orders", r#"{"service":"orders","paths":["/orders"],"plugins":{"rate-limiting":{"minute":100}}}"#),
            ("upstreams/orders-up", r#"{"healthchecks":{"passive":{"unhealthy":{"tcp_failures":2}}}}"#),
            ("upstreams/orders-up/targets/10.0.0.5:8080", r#"{"weight":100}"#),
            ("upstreams/orders-up/targets/10.0.0.6:8080", r#"{}"#),
            ("plugins/proxy-cache", r#"{"cache_ttl":30}"#),
        ]);
        let snap = ks.snapshot(6);
        assert!(snap.errors.is_empty(), "{:?}", snap.errors);
        let expected = crate::declarative::parse(
            r#"
services:
  - name: orders
    url: http://orders-up/v1
    retries: 3
    routes:
      - name: orders
        paths: [/orders]
        plugins:
          rate-limiting: { minute: 100 }
upstreams:
  - name: orders-up
    healthchecks:
      passive: { unhealthy: { tcp_failures: 2 } }
    targets:
      - { target: "10.0.0.5:8080", weight: 100 }
      - { target: "10.0.0.6:8080" }
plugins:
  proxy-cache: { cache_ttl: 30 }
"#,
        )
        .unwrap();
        assert_eq!(snap.config, expected, "etcd keys and the declarative file make the same config");
        assert_eq!(snap.hash, Snapshot::new(expected, 1, vec![]).hash);
    }

    #[test]
    fn a_bad_value_keeps_the_last_good_one_until_fixed() {
        let mut ks = space(&[("services/a", r#"{"url":"http://x","retries":1}"#)]);
        ks.put("/g/services/a", "services/a", b"{not json", 7);
        let snap = ks.snapshot(7);
        assert_eq!(snap.config.services["a"].retries, 1, "the last good value stays");
        assert_eq!(snap.errors.len(), 1);
        assert_eq!(snap.errors[0].key, "/g/services/a");
        assert_eq!(snap.errors[0].revision, Some(7));
        assert!(snap.errors[0].message.starts_with("not JSON"), "{}", snap.errors[0].message);
        assert!(snap.errors[0].message.ends_with("(serving its last good value)"), "{}", snap.errors[0].message);
        ks.put("/g/services/a", "services/a", br#"{"url":"http://x","retries":2}"#, 8);
        let snap = ks.snapshot(8);
        assert_eq!(snap.config.services["a"].retries, 2);
        assert!(snap.errors.is_empty());
    }

    #[test]
    fn a_bad_first_value_leaves_the_key_absent() {
        let ks = space(&[("services/a", r#"{"url":"ftp://x"}"#), ("things/b", "{}")]);
        let snap = ks.snapshot(2);
        assert!(snap.config.services.is_empty());
        let messages: Vec<_> = snap.errors.iter().map(|e| (e.key.as_str(), e.message.as_str())).collect();
        assert!(messages[0].1.starts_with("services/a.url:"), "{messages:?}");
        assert!(messages[0].1.ends_with("(not served)"), "{messages:?}");
        assert!(messages[1].1.contains("is not a config key"), "{messages:?}");
    }

    #[test]
    fn a_bad_key_read_whole_serves_an_earlier_good_value_found_for_it() {
        let mut ks = space(&[("services/a", "{bad"), ("services/b", "{bad"), ("things/c", "{}")]);
        let unserved = ks.unserved();
        assert_eq!(unserved, [("/g/services/a".to_owned(), 1), ("/g/services/b".to_owned(), 2)], "not things/c");
        assert!(!ks.serve_earlier("/g/services/a", "services/a", br#"{"url":"ftp://x"}"#), "a bad earlier value");
        assert!(ks.serve_earlier("/g/services/a", "services/a", br#"{"url":"http://x","retries":4}"#));
        assert!(!ks.serve_earlier("/g/services/a", "services/a", br#"{"url":"http://y"}"#), "served already");
        let mut before = KeySpace::new();
        before.put("/g/services/b", "services/b", br#"{"url":"http://b"}"#, 1);
        assert!(ks.keep_from(&before, "/g/services/b", "services/b"));
        assert!(ks.unserved().is_empty());
        let snap = ks.snapshot(3);
        assert_eq!(snap.config.services["a"].retries, 4);
        assert_eq!(snap.config.services["b"].url.to_string(), "http://b");
        assert_eq!(snap.errors.len(), 3, "the bad values are still listed: {:?}", snap.errors);
        assert!(snap.errors[0].message.ends_with("(serving its last good value)"), "{:?}", snap.errors);
        assert_eq!(snap.errors[0].revision, Some(1), "at the bad value's revision");
    }

    #[test]
    fn deletes_clear_values_and_errors() {
        let mut ks = space(&[("services/a", r#"{"url":"http://x"}"#), ("services/b", "[]")]);
        ks.delete("/g/services/a", "services/a");
        ks.delete("/g/services/b", "services/b");
        let snap = ks.snapshot(3);
        assert!(snap.config.services.is_empty() && snap.errors.is_empty());
    }

    #[test]
    fn names_in_bodies_must_match_their_keys() {
        let ks = space(&[
            ("services/a", r#"{"name":"b","url":"http://x"}"#),
            ("services/c", r#"{"name":"c","url":"http://x"}"#),
        ]);
        let snap = ks.snapshot(2);
        assert!(snap.config.services.contains_key("c"));
        assert!(snap.errors[0].message.contains("differs from the key's \"a\""), "{:?}", snap.errors);
    }

    #[test]
    fn dangling_routes_are_inactive_and_listed() {
        let ks = space(&[("routes/r", r#"{"service":"nobody","paths":["/"]}"#)]);
        let snap = ks.snapshot(1);
        assert!(snap.config.routes.is_empty());
        assert_eq!(snap.errors[0].key, "/g/routes/r");
        assert_eq!(snap.errors[0].revision, Some(1));
        assert_eq!(snap.errors[0].message, "service: unknown service \"nobody\"");
    }

    #[test]
    fn holds_exactly_compares_keys_and_revisions() {
        let mut ks = space(&[("services/a", r#"{"url":"http://x"}"#), ("services/b", "bad")]);
        assert!(ks.holds_exactly([("/g/services/a", 1), ("/g/services/b", 2)].into_iter()));
        assert!(!ks.holds_exactly([("/g/services/a", 1)].into_iter()), "a key missing");
        assert!(!ks.holds_exactly([("/g/services/a", 1), ("/g/services/b", 3)].into_iter()), "another revision");
        ks.delete("/g/services/b", "services/b");
        assert!(ks.holds_exactly([("/g/services/a", 1)].into_iter()));
    }

    #[test]
    fn unknown_global_plugins_are_errors() {
        let ks = space(&[("plugins/nope", "{}"), ("plugins/rate-limiting", r#"{"second":5}"#)]);
        let snap = ks.snapshot(2);
        match snap.config.plugins.get("rate-limiting") {
            Some(crate::model::PluginConfig::RateLimiting(rl)) => assert_eq!(rl.second, Some(5)),
            other => panic!("{other:?}"),
        }
        assert!(snap.errors[0].message.contains("unknown plugin `nope`"), "{:?}", snap.errors);
    }

    #[test]
    fn consumers_and_credentials_read_as_the_declarative_file_says() {
        let hash = crate::model::Password::hash("pw");
        let basic = serde_json::json!({"username": "al", "password": hash}).to_string();
        let ks = space(&[
            ("consumers/alice", r#"{"username":"alice","groups":["g"]}"#),
            ("consumers/alice/key-auth/k1", r#"{"key":"secret-1"}"#),
            ("consumers/alice/basic-auth/al", &basic),
            ("consumers/alice/jwt/j", r#"{"id":"j","key":"iss","secret":"s"}"#),
        ]);
        let snap = ks.snapshot(4);
        assert!(snap.errors.is_empty(), "{:?}", snap.errors);
        let alice = &snap.config.credentials["alice"];
        assert_eq!(alice.key_auth["k1"].id, "k1", "the id comes from the key");
        assert!(alice.basic_auth["al"].password.verify(b"pw"));
        assert_eq!(snap.config.consumers["alice"].groups, ["g"]);
    }

    #[test]
    fn a_certificate_that_claims_a_taken_name_is_listed_under_its_key() {
        let cert = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().self_signed(&key).unwrap();
            serde_json::json!({ "cert": cert.pem(), "key": key.serialize_pem(), "snis": ["x.example", name] })
                .to_string()
        };
        let (a, b) = (cert("a.example"), cert("b.example"));
        let snap =
            space(&[("certificates/b", &b), ("certificates/a", &a), ("certificates/c", r#"{"cert":"","key":""}"#)])
                .snapshot(9);
        let errors: Vec<(&str, &str)> = snap.errors.iter().map(|e| (e.key.as_str(), e.message.as_str())).collect();
        assert_eq!(
            errors,
            [
                ("/g/certificates/c", "certificates/c.cert: holds no PEM certificate (not served)"),
                ("/g/certificates/b", "snis[0]: \"x.example\" is already served by certificates/a"),
            ]
        );
        assert_eq!(snap.config.certificates.len(), 2, "b still serves b.example");
    }

    #[test]
    fn bad_consumer_and_credential_values_are_listed() {
        let ks = space(&[
            ("consumers/alice", r#"{"username":"bob"}"#),
            ("consumers/carol", r#"{}"#),
            ("consumers/carol/key-auth/k", r#"{"id":"other","key":"x"}"#),
            ("consumers/carol/key-auth/sp", r#"{"key":"a b"}"#),
            ("consumers/carol/basic-auth/b", r#"{"username":"c","password":"plain-text"}"#),
            ("consumers/carol/jwt/j", r#"{"key":"iss","algorithm":"ES256","public_key":"nope"}"#),
            ("consumers/carol/oauth2/o", r#"{}"#),
        ]);
        let snap = ks.snapshot(7);
        assert!(snap.config.consumers.contains_key("carol") && !snap.config.consumers.contains_key("alice"));
        assert!(!snap.config.credentials.contains_key("carol"), "{:?}", snap.config.credentials);
        let messages: Vec<(&str, &str)> = snap.errors.iter().map(|e| (e.key.as_str(), e.message.as_str())).collect();
        let expect = [
            ("/g/consumers/alice", "consumers/alice.username: \"bob\" differs from the key's \"alice\""),
            (
                "/g/consumers/carol/basic-auth/b",
                "consumers/carol/basic-auth/b.password: must be stored as a salted hash",
            ),
            ("/g/consumers/carol/jwt/j", "consumers/carol/jwt/j.public_key: is not an EC public key"),
            ("/g/consumers/carol/key-auth/k", "consumers/carol/key-auth/k.id: \"other\" differs from the key's \"k\""),
            ("/g/consumers/carol/key-auth/sp", "consumers/carol/key-auth/sp.key: must be printable ASCII"),
            ("/g/consumers/carol/oauth2/o", "\"consumers/carol/oauth2/o\" is not a config key"),
        ];
        assert_eq!(messages.len(), expect.len(), "{messages:#?}");
        for ((key, message), (want_key, want)) in messages.iter().zip(expect) {
            assert_eq!(*key, want_key);
            assert!(message.starts_with(want), "{message:?} should start with {want:?}");
        }
        assert!(messages[1].1.contains("write it through the admin API or `gateway apply`"), "{messages:?}");
        assert!(messages.iter().all(|(_, m)| !m.contains("plain-text")), "the password is not repeated: {messages:?}");
    }

    #[test]
    fn dangling_credentials_are_inactive_and_listed() {
        let ks = space(&[("consumers/x.y", "{}"), ("consumers/ghost/key-auth/k", r#"{"key":"x"}"#)]);
        let snap = ks.snapshot(2);
        assert!(snap.config.credentials.is_empty());
        assert_eq!(snap.errors.len(), 1, "{:?}", snap.errors);
        assert_eq!(snap.errors[0].key, "/g/consumers/ghost/key-auth/k");
        assert_eq!(snap.errors[0].revision, Some(2));
        assert_eq!(snap.errors[0].message, "unknown consumer \"ghost\"");
    }

    #[test]
    fn of_two_credentials_with_one_key_the_later_written_is_the_error() {
        // Written in the other order of their keys, so that key order and revision order differ.
        let ks = space(&[
            ("consumers/a", "{}"),
            ("consumers/b", "{}"),
            ("consumers/b/key-auth/k", r#"{"key":"shared"}"#),
            ("consumers/a/key-auth/k", r#"{"key":"shared"}"#),
            ("consumers/b/jwt/j", r#"{"key":"iss","secret":"1"}"#),
            ("consumers/a/jwt/j.2", r#"{"key":"iss","secret":"2"}"#),
        ]);
        let snap = ks.snapshot(6);
        assert!(snap.config.credentials["b"].key_auth.contains_key("k"));
        assert!(!snap.config.credentials.contains_key("a"), "{:?}", snap.config.credentials);
        let errors: Vec<_> = snap.errors.iter().map(|e| (e.key.as_str(), e.revision, e.message.as_str())).collect();
        assert_eq!(
            errors,
            [
                (
                    "/g/consumers/a/key-auth/k",
                    Some(4),
                    "key: the same key-auth key as consumers/b/key-auth/k; each must be unique"
                ),
                ("/g/consumers/a/jwt/j.2", Some(6), "key: the same jwt key as consumers/b/jwt/j; each must be unique"),
            ]
        );
        // Read whole, in key order, the same is served.
        let mut whole = KeySpace::new();
        let mut keys: Vec<_> = [(4, "consumers/a/key-auth/k"), (2, "consumers/b/key-auth/k")].to_vec();
        keys.sort_by_key(|(_, k)| *k);
        whole.put("/g/consumers/a", "consumers/a", b"{}", 1);
        whole.put("/g/consumers/b", "consumers/b", b"{}", 1);
        for (rev, key) in keys {
            whole.put(&format!("/g/{key}"), key, br#"{"key":"shared"}"#, rev);
        }
        assert!(whole.snapshot(6).config.credentials["b"].key_auth.contains_key("k"));
    }
}
