//! Immutable, versioned snapshots of the config a node serves.

use crate::config::{Config, EntityRef};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt::Write;

/// A problem that keeps part of the config from being served, as `/status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// Where: an etcd key, or an entity path such as `routes/orders.service`.
    pub key: String,
    /// The etcd revision of the value at fault, when it came from etcd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// What is wrong.
    pub message: String,
}

/// One version of the config, whole and immutable: what a node serves between two changes.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// For etcd, the revision this snapshot reflects; for a file, 1 at start and one more per
    /// reload.
    pub version: u64,
    /// Hex SHA-256 of the served config: equal on two nodes exactly when they serve the same.
    pub hash: String,
    /// The entities served. Entities with dangling references are not in it.
    pub config: Config,
    /// What was left out, and why.
    pub errors: Vec<ConfigError>,
}

impl Snapshot {
    /// Builds a snapshot: entities that refer to missing ones are taken out and listed in
    /// `errors` beside the `errors` given (those of values that did not parse or validate).
    pub fn new(mut config: Config, version: u64, mut errors: Vec<ConfigError>) -> Snapshot {
        // Until nothing dangles: the routes of a service left out dangle in turn.
        loop {
            let dangling = config.dangling();
            if dangling.is_empty() {
                break;
            }
            for (entity, error) in dangling {
                config.remove(&entity);
                errors.push(ConfigError { key: error.path, revision: None, message: error.message });
            }
        }
        let hash = hash(&config);
        Snapshot { version, hash, config, errors }
    }

    /// This snapshot less one route or service (and the routes of that service), with why
    /// listed: for what validated but cannot be served (a route the router would not compile, a
    /// service whose TLS settings do not load).
    pub fn without(&self, entity: &EntityRef, message: String) -> Snapshot {
        let mut config = self.config.clone();
        config.remove(entity);
        let mut errors = self.errors.clone();
        errors.push(ConfigError { key: entity.path(), revision: None, message });
        Snapshot::new(config, self.version, errors)
    }

    /// The snapshot of a node with no config yet.
    pub fn empty() -> Snapshot {
        Snapshot::new(Config::default(), 0, Vec::new())
    }
}

fn hash(config: &Config) -> String {
    // Config holds only ordered maps and plain fields, so equal configs give equal bytes.
    let bytes = serde_json::to_vec(config).expect("a Config always serializes: string keys only");
    let digest = Sha256::digest(&bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Route, Service};

    fn service(name: &str) -> Service {
        serde_json::from_value(serde_json::json!({"name": name, "url": "http://x"})).unwrap()
    }

    fn route(name: &str, service: &str) -> Route {
        serde_json::from_value(serde_json::json!({"name": name, "service": service, "paths": ["/"]})).unwrap()
    }

    #[test]
    fn equal_configs_hash_equal_and_different_ones_do_not() {
        let mut a = Config::default();
        a.services.insert("s".into(), service("s"));
        let b = a.clone();
        assert_eq!(Snapshot::new(a.clone(), 1, vec![]).hash, Snapshot::new(b, 7, vec![]).hash);
        let mut c = a.clone();
        c.services.get_mut("s").unwrap().retries = 1;
        assert_ne!(Snapshot::new(a, 1, vec![]).hash, Snapshot::new(c, 1, vec![]).hash);
    }

    #[test]
    fn dangling_routes_are_left_out_and_listed() {
        let mut config = Config::default();
        config.services.insert("s".into(), service("s"));
        config.routes.insert("ok".into(), route("ok", "s"));
        config.routes.insert("lost".into(), route("lost", "nope"));
        let snap = Snapshot::new(config, 3, vec![]);
        assert!(snap.config.routes.contains_key("ok"));
        assert!(!snap.config.routes.contains_key("lost"));
        assert_eq!(snap.errors.len(), 1);
        assert_eq!(snap.errors[0].key, "routes/lost.service");
        assert!(snap.errors[0].message.contains("unknown service"));
    }

    #[test]
    fn a_service_naming_an_unknown_ca_is_left_out_with_its_routes() {
        let mut config = Config::default();
        let mut s = service("s");
        s.url = "https://x".into();
        s.ca_certificates = vec!["nope".into()];
        config.services.insert("s".into(), s);
        config.routes.insert("r".into(), route("r", "s"));
        let snap = Snapshot::new(config, 1, vec![]);
        assert!(snap.config.services.is_empty() && snap.config.routes.is_empty());
        let keys: Vec<&str> = snap.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["services/s.ca_certificates[0]", "routes/r.service"]);
    }

    #[test]
    fn a_traffic_split_to_an_unknown_upstream_leaves_out_what_carries_it() {
        let split = |upstream: &str| serde_json::json!({"traffic-split": {"rules": [{"weighted_upstreams": [{"upstream": upstream}, {}]}]}});
        let mut config = Config::default();
        let upstream = serde_json::from_value(serde_json::json!({"name": "v2"})).unwrap();
        config.upstreams.insert("v2".into(), upstream);
        config.services.insert("s".into(), service("s"));
        let mut bad_service = service("bad-s");
        bad_service.plugins = serde_json::from_value(split("gone")).unwrap();
        config.services.insert("bad-s".into(), bad_service);
        config.routes.insert("under-bad-s".into(), route("under-bad-s", "bad-s"));
        for (name, upstream) in [("ok", "v2"), ("bad", "nope")] {
            let mut r = route(name, "s");
            r.plugins = serde_json::from_value(split(upstream)).unwrap();
            config.routes.insert(name.into(), r);
        }
        let consumer = serde_json::json!({"username": "ann", "plugins": split("gone")});
        config.consumers.insert("ann".into(), serde_json::from_value(consumer).unwrap());
        config.plugins = serde_json::from_value(split("gone")).unwrap();

        let snap = Snapshot::new(config, 1, vec![]);
        let routes: Vec<&str> = snap.config.routes.keys().map(String::as_str).collect();
        assert_eq!(routes, ["ok"]);
        assert_eq!(snap.config.services.keys().collect::<Vec<_>>(), ["s"]);
        assert!(snap.config.consumers.is_empty());
        assert!(snap.config.plugins.is_empty(), "the global plugin is left out, not every route");
        let errors: Vec<String> = snap.errors.iter().map(|e| format!("{}: {}", e.key, e.message)).collect();
        assert_eq!(
            errors,
            [
                "routes/bad.plugins.traffic-split.rules[0].weighted_upstreams[0].upstream: unknown upstream \"nope\"",
                "services/bad-s.plugins.traffic-split.rules[0].weighted_upstreams[0].upstream: unknown upstream \"gone\"",
                "consumers/ann.plugins.traffic-split.rules[0].weighted_upstreams[0].upstream: unknown upstream \"gone\"",
                "plugins/traffic-split.rules[0].weighted_upstreams[0].upstream: unknown upstream \"gone\"",
                "routes/under-bad-s.service: unknown service \"bad-s\"",
            ]
        );
    }

    #[test]
    fn a_config_without_consumers_hashes_as_before_they_existed() {
        let json = serde_json::to_string(&Config::default()).unwrap();
        assert_eq!(json, r#"{"services":{},"routes":{},"upstreams":{},"targets":{},"plugins":{}}"#);
    }
}
