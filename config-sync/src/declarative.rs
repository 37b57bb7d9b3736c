//! The declarative file: the whole config in one YAML (or JSON) document, nested the way people
//! write it (`services:` with their `routes:`, `upstreams:` with their `targets:`, global
//! `plugins:`, `consumers:` with their `keyauth_credentials:`, `basicauth_credentials:` and
//! `jwt_secrets:`, decK's names), `certificates:` and `ca_certificates:`. Top-level `routes:` with
//! an explicit `service` are accepted too.
//!
//! A credential's `id` may be left out: it is then the first 16 hex digits of the SHA-256 of a
//! key-auth key, a basic-auth username, a jwt key. Basic-auth passwords may be plain (a node on
//! the file compares them as they are; `gateway apply` hashes them before they reach etcd).
//!
//! Parsing reports every problem in the file at once: each entity is read on its own, so a type
//! error in one service does not hide the errors in the next.

use crate::config::{Config, EntityRef};
use crate::model::{
    CaCertificate, Certificate, Consumer, Credential, CredentialKind, PluginConfig, Plugins, Route, Service, Target,
    Upstream, REDACTED,
};
use crate::validate::{from_value, Errors, FieldError};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Parses and fully validates a declarative document: entity checks and references.
pub fn parse(text: &str) -> Result<Config, Vec<FieldError>> {
    let root: Value = match serde_yaml_ng::from_str(text) {
        Ok(Value::Null) => return Ok(Config::default()),
        Ok(v) => v,
        Err(e) => return Err(vec![FieldError { path: "(file)".into(), message: e.to_string() }]),
    };
    let Value::Object(mut root) = root else {
        return Err(vec![FieldError { path: "(file)".into(), message: "must be a mapping at the top".into() }]);
    };
    let mut reader = Reader::default();
    let services = list(&mut root, "services", &mut reader.errors);
    let routes = list(&mut root, "routes", &mut reader.errors);
    let upstreams = list(&mut root, "upstreams", &mut reader.errors);
    let consumers = list(&mut root, "consumers", &mut reader.errors);
    let certificates = list(&mut root, "certificates", &mut reader.errors);
    let ca_certificates = list(&mut root, "ca_certificates", &mut reader.errors);
    if let Some(plugins) = root.remove("plugins") {
        if let Some(p) = reader.entity::<Plugins>(plugins, "plugins") {
            reader.config.plugins = p;
        }
    }
    for key in root.keys() {
        reader.errors.push(
            key.clone(),
            "unknown section; expected services, routes, upstreams, plugins, consumers, certificates or \
             ca_certificates",
        );
    }
    for (i, item) in services.into_iter().enumerate() {
        reader.service(item, i);
    }
    for (i, item) in routes.into_iter().enumerate() {
        reader.route(item, format!("routes[{i}]"), None);
    }
    for (i, item) in upstreams.into_iter().enumerate() {
        reader.upstream(item, i);
    }
    for (i, item) in consumers.into_iter().enumerate() {
        reader.consumer(item, i);
    }
    for (i, item) in certificates.into_iter().enumerate() {
        reader.certificate(item, i);
    }
    for (i, item) in ca_certificates.into_iter().enumerate() {
        reader.ca_certificate(item, i);
    }
    let Reader { config, mut errors, broken, broken_consumers, .. } = reader;
    config.validate_entities(&mut errors);
    // A route nested under a service that did not parse is not also "dangling": its service's
    // own error already says what is wrong.
    let dangling = config.dangling().into_iter().filter(|(entity, error)| match entity {
        EntityRef::Route(name) => {
            error.path != format!("routes/{name}.service") || !broken.contains(&config.routes[name].service)
        }
        EntityRef::Credential(username, ..) => !broken_consumers.contains(username),
        EntityRef::Service(_) | EntityRef::Target(..) | EntityRef::Consumer(_) | EntityRef::Plugin(_) => true,
    });
    errors.extend(dangling.map(|(_, e)| e));
    errors.extend(config.duplicate_credentials(|_| 0).into_iter().map(|(_, e)| e));
    errors.extend(config.conflicting_certificates());
    errors.into_result(config)
}

/// Writes a config as a declarative document that [`parse`] reads back to the same config.
/// Fields equal to their defaults are left out, so the document reads like one a person wrote.
/// Without `with_secrets`, key-auth keys, basic-auth passwords, jwt secrets, the private
/// keys of certificates and the passwords in `http-log` endpoints read `<redacted>` (and such a document does not parse: it cannot be applied by mistake).
/// Credentials of consumers not in `config` are left out.
pub fn to_yaml(config: &Config, with_secrets: bool) -> String {
    let defaults = Defaults::new();
    let mut routes_by_service: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for route in config.routes.values() {
        let mut value = defaults.strip(route, &defaults.route);
        if config.services.contains_key(&route.service) {
            if let Value::Object(o) = &mut value {
                o.remove("service");
            }
        }
        let owner = if config.services.contains_key(&route.service) { route.service.as_str() } else { "" };
        routes_by_service.entry(owner).or_default().push(value);
    }
    let services: Vec<Value> = config
        .services
        .values()
        .map(|s| {
            let mut v = defaults.strip(s, &defaults.service);
            if let (Value::Object(o), Some(routes)) = (&mut v, routes_by_service.remove(s.name.as_str())) {
                o.insert("routes".into(), Value::Array(routes));
            }
            v
        })
        .collect();
    let upstreams: Vec<Value> = config
        .upstreams
        .values()
        .map(|u| {
            let mut v = defaults.strip(u, &defaults.upstream);
            let targets: Vec<Value> = config.targets_of(&u.name).map(|t| defaults.strip(t, &defaults.target)).collect();
            if let (Value::Object(o), false) = (&mut v, targets.is_empty()) {
                o.insert("targets".into(), Value::Array(targets));
            }
            v
        })
        .collect();
    let mut root = Map::new();
    root.insert("services".into(), Value::Array(services));
    if let Some(orphans) = routes_by_service.remove("") {
        root.insert("routes".into(), Value::Array(orphans));
    }
    root.insert("upstreams".into(), Value::Array(upstreams));
    if !config.plugins.is_empty() {
        let plugins = serde_json::to_value(&config.plugins).expect("entities serialize");
        root.insert("plugins".into(), defaults.plugins(plugins));
    }
    let consumers: Vec<Value> = config
        .consumers
        .values()
        .map(|c| {
            let mut v = defaults.strip(c, &Value::Object(Map::new()));
            let (Value::Object(o), Some(credentials)) = (&mut v, config.credentials.get(&c.username)) else { return v };
            for (field, kind) in CREDENTIAL_LISTS {
                let items: Vec<Value> =
                    credentials.iter().filter(|c| c.kind() == kind).map(|c| c.to_json(with_secrets)).collect();
                if !items.is_empty() {
                    o.insert(field.into(), Value::Array(items));
                }
            }
            v
        })
        .collect();
    if !consumers.is_empty() {
        root.insert("consumers".into(), Value::Array(consumers));
    }
    let certificates: Vec<Value> = config
        .certificates
        .values()
        .map(|c| {
            let mut v = serde_json::to_value(c).expect("entities serialize");
            if !with_secrets {
                v["key"] = Value::String(REDACTED.into());
            }
            v
        })
        .collect();
    if !certificates.is_empty() {
        root.insert("certificates".into(), Value::Array(certificates));
    }
    if !config.ca_certificates.is_empty() {
        let cas = config.ca_certificates.values().map(|c| serde_json::to_value(c).expect("entities serialize"));
        root.insert("ca_certificates".into(), Value::Array(cas.collect()));
    }
    let mut root = Value::Object(root);
    if !with_secrets {
        crate::model::redact_secrets(&mut root);
    }
    serde_yaml_ng::to_string(&root).expect("JSON values serialize to YAML")
}

/// The lists of credentials nested under a consumer, decK's names.
const CREDENTIAL_LISTS: [(&str, CredentialKind); 3] = [
    ("keyauth_credentials", CredentialKind::KeyAuth),
    ("basicauth_credentials", CredentialKind::BasicAuth),
    ("jwt_secrets", CredentialKind::Jwt),
];

/// What a secret written as `<redacted>` is told.
const REDACTED_SECRET: &str = "a redacted secret: dump with --with-secrets to get a file that applies";

/// Each entity as serialized with nothing set: what `to_yaml` leaves out.
struct Defaults {
    service: Value,
    route: Value,
    upstream: Value,
    target: Value,
    /// Each plugin's config with nothing set, by plugin name.
    plugins: Value,
}

/// Fields always written: what names an entity or is required.
const ALWAYS: [&str; 4] = ["name", "url", "service", "target"];

impl Defaults {
    fn new() -> Defaults {
        fn of<T: serde::de::DeserializeOwned + serde::Serialize>(fields: Value) -> Value {
            let entity: T = serde_json::from_value(fields).expect("an entity with only its required fields");
            serde_json::to_value(entity).expect("entities serialize")
        }
        Defaults {
            service: of::<Service>(serde_json::json!({ "url": "http://x" })),
            route: of::<Route>(serde_json::json!({})),
            upstream: of::<Upstream>(serde_json::json!({})),
            target: of::<Target>(serde_json::json!({})),
            plugins: of::<Plugins>(
                PluginConfig::NAMES.iter().map(|name| (name.to_string(), Value::Object(Map::new()))).collect(),
            ),
        }
    }

    /// `entity` as JSON without what equals `defaults`; its plugins keep every plugin set.
    fn strip<T: serde::Serialize>(&self, entity: &T, defaults: &Value) -> Value {
        let mut value = serde_json::to_value(entity).expect("entities serialize");
        let plugins = value.as_object_mut().and_then(|o| o.remove("plugins"));
        let mut value = without_defaults(value, defaults);
        if let (Value::Object(o), Some(plugins)) = (&mut value, plugins) {
            o.insert("plugins".into(), self.plugins(plugins));
        }
        value
    }

    /// A plugins map without each plugin's defaults; a plugin set with nothing but defaults
    /// stays, as `{}`.
    fn plugins(&self, plugins: Value) -> Value {
        let Value::Object(plugins) = plugins else { return plugins };
        let stripped = plugins
            .into_iter()
            .map(|(name, config)| {
                let stripped = match self.plugins.get(&name) {
                    Some(defaults) => without_defaults(config, defaults),
                    None => config,
                };
                (name, stripped)
            })
            .collect();
        Value::Object(stripped)
    }
}

/// `value` without the fields equal to those of `defaults`, recursively; an object left empty
/// goes too.
fn without_defaults(value: Value, defaults: &Value) -> Value {
    let (Value::Object(fields), Value::Object(default_fields)) = (&value, defaults) else { return value };
    let mut kept = Map::new();
    for (key, field) in fields {
        let Some(default) = default_fields.get(key).filter(|_| !ALWAYS.contains(&key.as_str())) else {
            kept.insert(key.clone(), field.clone());
            continue;
        };
        if default == field {
            continue;
        }
        let field = without_defaults(field.clone(), default);
        if !field.as_object().is_some_and(Map::is_empty) {
            kept.insert(key.clone(), field);
        }
    }
    Value::Object(kept)
}

/// Takes the list under `key`, or reports that it is not a list.
fn list(root: &mut Map<String, Value>, key: &str, errors: &mut Errors) -> Vec<Value> {
    match root.remove(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(key, "must be a list");
            Vec::new()
        }
    }
}

/// The config being read, with the problems found so far.
#[derive(Default)]
struct Reader {
    config: Config,
    errors: Errors,
    /// Where each name was first seen, to report duplicates.
    seen: BTreeMap<String, String>,
    /// Names of services that did not parse; their nested routes are still checked.
    broken: BTreeSet<String>,
    /// Usernames of consumers that did not parse; their credentials are still checked.
    broken_consumers: BTreeSet<String>,
}

impl Reader {
    fn entity<T: serde::de::DeserializeOwned>(&mut self, value: Value, at: &str) -> Option<T> {
        from_value(value, at).map_err(|e| self.errors.extend([e])).ok()
    }

    /// Where to report problems of an item: `services/orders` if it has a usable name, else
    /// `services[2]`.
    fn locate(item: &Value, kind: &str, index_path: &str, name_field: &str) -> String {
        match item.get(name_field).and_then(Value::as_str) {
            Some(name) if !name.is_empty() => format!("{kind}/{name}"),
            _ => index_path.to_owned(),
        }
    }

    fn first_seen(&mut self, key: String, at: &str) -> bool {
        if let Some(before) = self.seen.get(&key) {
            self.errors.push(at, format!("duplicate name (also at {before})"));
            false
        } else {
            self.seen.insert(key, at.to_owned());
            true
        }
    }

    fn take_children(&mut self, item: &mut Value, field: &str, at: &str) -> Vec<Value> {
        match item.as_object_mut().and_then(|o| o.remove(field)) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(children)) => children,
            Some(_) => {
                self.errors.push(format!("{at}.{field}"), "must be a list");
                Vec::new()
            }
        }
    }

    fn service(&mut self, mut item: Value, index: usize) {
        let at = Self::locate(&item, "services", &format!("services[{index}]"), "name");
        let routes = self.take_children(&mut item, "routes", &at);
        let name = item.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        match self.entity::<Service>(item, &at) {
            Some(service) => {
                if self.first_seen(format!("services/{}", service.name), &at) {
                    self.config.services.insert(service.name.clone(), service);
                }
            }
            None => {
                self.broken.insert(name.clone());
            }
        }
        for (i, route) in routes.into_iter().enumerate() {
            self.route(route, format!("{at}.routes[{i}]"), Some(&name));
        }
    }

    fn route(&mut self, mut item: Value, index_path: String, service: Option<&str>) {
        let at = Self::locate(&item, "routes", &index_path, "name");
        if let (Some(service), Some(fields)) = (service, item.as_object_mut()) {
            match fields.get("service").and_then(Value::as_str) {
                None => {
                    fields.insert("service".into(), Value::String(service.to_owned()));
                }
                Some(named) if named == service => {}
                Some(named) => {
                    self.errors.push(
                        format!("{at}.service"),
                        format!("names {named:?} but the route is nested under {service:?}"),
                    );
                    return;
                }
            }
        }
        let Some(route) = self.entity::<Route>(item, &at) else { return };
        if self.first_seen(format!("routes/{}", route.name), &at) {
            self.config.routes.insert(route.name.clone(), route);
        }
    }

    fn upstream(&mut self, mut item: Value, index: usize) {
        let at = Self::locate(&item, "upstreams", &format!("upstreams[{index}]"), "name");
        let targets = self.take_children(&mut item, "targets", &at);
        let Some(upstream) = self.entity::<Upstream>(item, &at) else { return };
        for (i, target) in targets.into_iter().enumerate() {
            let t_at = Self::locate(&target, &format!("{at}/targets"), &format!("{at}.targets[{i}]"), "target");
            let Some(target) = self.entity::<Target>(target, &t_at) else { continue };
            if self.first_seen(t_at.clone(), &t_at) {
                self.config.targets.entry(upstream.name.clone()).or_default().insert(target.target.clone(), target);
            }
        }
        if self.first_seen(format!("upstreams/{}", upstream.name), &at) {
            self.config.upstreams.insert(upstream.name.clone(), upstream);
        }
    }

    fn consumer(&mut self, mut item: Value, index: usize) {
        let at = Self::locate(&item, "consumers", &format!("consumers[{index}]"), "username");
        let lists = CREDENTIAL_LISTS.map(|(field, kind)| (field, kind, self.take_children(&mut item, field, &at)));
        let username = item.get("username").and_then(Value::as_str).unwrap_or_default().to_owned();
        match self.entity::<Consumer>(item, &at) {
            Some(consumer) => {
                if self.first_seen(format!("consumers/{}", consumer.username), &at) {
                    self.config.consumers.insert(consumer.username.clone(), consumer);
                }
            }
            None => {
                self.broken_consumers.insert(username.clone());
            }
        }
        for (field, kind, items) in lists {
            for (i, item) in items.into_iter().enumerate() {
                self.credential(item, kind, &username, format!("{at}.{field}[{i}]"));
            }
        }
    }

    fn certificate(&mut self, item: Value, index: usize) {
        let at = Self::locate(&item, "certificates", &format!("certificates[{index}]"), "name");
        if item.get("key").and_then(Value::as_str) == Some(REDACTED) {
            return self.errors.push(format!("{at}.key"), REDACTED_SECRET);
        }
        let Some(certificate) = self.entity::<Certificate>(item, &at) else { return };
        if self.first_seen(format!("certificates/{}", certificate.name), &at) {
            self.config.certificates.insert(certificate.name.clone(), certificate);
        }
    }

    fn ca_certificate(&mut self, item: Value, index: usize) {
        let at = Self::locate(&item, "ca_certificates", &format!("ca_certificates[{index}]"), "name");
        let Some(ca) = self.entity::<CaCertificate>(item, &at) else { return };
        if self.first_seen(format!("ca_certificates/{}", ca.name), &at) {
            self.config.ca_certificates.insert(ca.name.clone(), ca);
        }
    }

    fn credential(&mut self, mut item: Value, kind: CredentialKind, username: &str, index_path: String) {
        if let Some(fields) = item.as_object_mut() {
            let implied = match (fields.get("id"), fields.get(kind.identity_field()).and_then(Value::as_str)) {
                (None, Some(identity)) => Some(Credential::default_id(kind, identity)),
                _ => None,
            };
            if let Some(id) = implied {
                fields.insert("id".into(), Value::String(id));
            }
        }
        let at = match item.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() && !username.is_empty() => format!("consumers/{username}/{kind}/{id}"),
            _ => index_path,
        };
        if item.get(kind.secret_field()).and_then(Value::as_str) == Some(REDACTED) {
            self.errors.push(format!("{at}.{}", kind.secret_field()), REDACTED_SECRET);
            return;
        }
        let credential = match Credential::from_value(kind, item, &at) {
            Ok(c) => c,
            Err(e) => return self.errors.extend([e]),
        };
        if self.first_seen(at.clone(), &at) {
            self.config.credentials.entry(username.to_owned()).or_default().insert(credential);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
services:
  - name: orders
    url: http://orders-up/v1
    retries: 3
    routes:
      - name: orders
        paths: [/orders]
        plugins:
          rate-limiting: { minute: 100, limit_by: ip }
upstreams:
  - name: orders-up
    algorithm: round-robin
    healthchecks:
      passive: { unhealthy: { tcp_failures: 2, http_failures: 3 } }
    targets:
      - { target: "10.0.0.5:8080", weight: 100 }
      - { target: "10.0.0.6:8080" }
plugins:
  proxy-cache: { cache_ttl: 30 }
"#;

    #[test]
    fn the_contract_example_parses() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(config.routes["orders"].service, "orders");
        assert_eq!(config.services["orders"].retries, 3);
        assert_eq!(config.targets["orders-up"].len(), 2);
        assert_eq!(config.targets["orders-up"]["10.0.0.6:8080"].weight, 100);
        assert!(config.plugins.get("proxy-cache").is_some());
    }

    #[test]
    fn dump_then_parse_round_trips() {
        let config = parse(EXAMPLE).unwrap();
        let yaml = to_yaml(&config, false);
        assert_eq!(parse(&yaml).unwrap(), config);
        assert!(!yaml.contains("connect_timeout"), "defaults are left out:\n{yaml}");
        assert!(yaml.contains("tcp_failures: 2"), "what was set stays:\n{yaml}");
        let bare = parse(
            "services: [{ name: a, url: 'http://x', plugins: { proxy-cache: {} }, routes: [{ name: r, paths: [/] }] }]",
        )
        .unwrap();
        let yaml = to_yaml(&bare, false);
        assert!(yaml.contains("proxy-cache: {}"), "a plugin with only defaults stays set:\n{yaml}");
        assert_eq!(parse(&yaml).unwrap(), bare);
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let text = r#"
services:
  - name: orders
    url: http://orders-up
    retries: many
    routes:
      - { name: under-broken, paths: [nope] }
  - name: users
    url: ftp://users
    routes:
      - name: orders
        paths: [/ok, "~(bad"]
      - name: users
        paths: [/u]
        colour: blue
routes:
  - name: lost
    service: nobody
    paths: [/lost]
upstreams:
  - name: orders-up
    targets: [{ target: "nope" }, { target: "a:1", weight: 70000 }]
extra: 1
"#;
        let errors = parse(text).unwrap_err();
        let got: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let expect = [
            "extra: unknown section",
            "services/orders.retries: invalid type",
            "routes/under-broken.paths[0]: a path prefix must start with /",
            "routes/users.colour: unknown field `colour`",
            "services/users.url: \"ftp://users\" must start with http://",
            "routes/orders.paths[1]: invalid regex",
            "upstreams/orders-up/targets/nope.target: must be host:port",
            "upstreams/orders-up/targets/a:1.weight: must be 0 to 65535",
            "routes/lost.service: unknown service \"nobody\"",
        ];
        for e in expect {
            assert!(got.iter().any(|g| g.starts_with(e)), "missing {e:?} in {got:#?}");
        }
        assert_eq!(got.len(), expect.len(), "{got:#?}");
    }

    #[test]
    fn a_traffic_split_round_trips_and_an_unknown_upstream_is_refused_with_its_path() {
        let text = r#"
services:
  - name: orders
    url: http://orders-v1
    routes:
      - name: orders
        paths: [/orders]
        plugins:
          traffic-split:
            rules:
              - match: { headers: { x-canary: "1" } }
                weighted_upstreams: [{ upstream: orders-v2 }]
              - weighted_upstreams: [{ upstream: orders-v2, weight: 10 }, { weight: 90 }]
upstreams:
  - { name: orders-v1, targets: [{ target: "10.0.0.1:80" }] }
  - { name: orders-v2, targets: [{ target: "10.0.0.2:80" }] }
"#;
        let config = parse(text).unwrap();
        let yaml = to_yaml(&config, false);
        assert_eq!(parse(&yaml).unwrap(), config, "{yaml}");
        assert!(yaml.contains("x-canary: '1'") || yaml.contains("x-canary: \"1\""), "{yaml}");
        let errors =
            parse(&text.replace("upstream: orders-v2, weight: 10", "upstream: orders-v3, weight: 10")).unwrap_err();
        let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            ["routes/orders.plugins.traffic-split.rules[1].weighted_upstreams[0].upstream: unknown upstream \"orders-v3\""]
        );
        let errors = parse(&text.replace("weight: 90", "weight: 0").replace("weight: 10", "weight: 0")).unwrap_err();
        let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            ["routes/orders.plugins.traffic-split.rules[1].weighted_upstreams: the weights are all zero: the rule's \
              requests could go nowhere"]
        );
    }

    #[test]
    fn duplicates_and_mismatched_nesting_are_errors() {
        let text = r#"
services:
  - { name: a, url: "http://x", routes: [{ name: r, paths: [/], service: b }] }
  - { name: a, url: "http://y" }
"#;
        let got: Vec<String> = parse(text).unwrap_err().iter().map(|e| e.to_string()).collect();
        assert!(got.iter().any(|g| g.starts_with("routes/r.service: names \"b\"")), "{got:?}");
        assert!(got.iter().any(|g| g.starts_with("services/a: duplicate name")), "{got:?}");
    }

    #[test]
    fn yaml_syntax_errors_say_where() {
        let errors = parse("services: [").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("line"), "{}", errors[0]);
    }

    const CONSUMERS: &str = r#"
consumers:
  - username: alice
    custom_id: A-1
    groups: [admins]
    plugins:
      rate-limiting: { minute: 10 }
    keyauth_credentials:
      - key: alice-key
      - { id: second, key: alice-key-2 }
    basicauth_credentials:
      - { username: alice, password: s3cret }
    jwt_secrets:
      - { key: alice-iss, secret: hmac-secret }
      - { id: rsa, key: alice-rsa, algorithm: RS256, rsa_public_key: "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEBK9B11v6X4YGfmdLXa37mb3L+P7Q\nsy/OH/vmGUjMbm5m0xhDBy4y55KdAPMGEIgFo5VIbbUWv0L9xYuYxnsZPQ==\n-----END PUBLIC KEY-----\n" }
  - username: bob
"#;

    #[test]
    fn consumers_nest_their_credentials_with_implied_ids() {
        use crate::model::{CredentialKind, Password};
        let text = CONSUMERS.replace("algorithm: RS256", "algorithm: ES256");
        let config = parse(&text).unwrap();
        assert_eq!(config.consumers["alice"].groups, ["admins"]);
        assert!(config.consumers.contains_key("bob"));
        let alice = &config.credentials["alice"];
        let implied = Credential::default_id(CredentialKind::KeyAuth, "alice-key");
        assert_eq!(implied.len(), 16);
        assert_eq!(alice.key_auth[&implied].key, "alice-key");
        assert_eq!(alice.basic_auth["alice"].password, Password::Plain("s3cret".into()), "plain in a file");
        assert_eq!(alice.jwt["alice-iss"].secret.as_deref(), Some("hmac-secret"));
        assert!(alice.jwt["rsa"].public_key.is_some());
        assert!(!config.credentials.contains_key("bob"));
    }

    #[test]
    fn consumers_round_trip_with_secrets_and_are_redacted_without() {
        let text = CONSUMERS.replace("algorithm: RS256", "algorithm: ES256");
        let config = parse(&text).unwrap();
        let full = to_yaml(&config, true);
        assert_eq!(parse(&full).unwrap(), config, "{full}");
        assert!(full.contains("keyauth_credentials") && full.contains("s3cret"), "{full}");
        let redacted = to_yaml(&config, false);
        for secret in ["alice-key", "s3cret", "hmac-secret"] {
            assert!(!redacted.contains(&format!(" {secret}\n")), "{secret} shows in:\n{redacted}");
        }
        assert!(redacted.contains("BEGIN PUBLIC KEY"), "public keys are not secrets:\n{redacted}");
        let errors = parse(&redacted).unwrap_err();
        let got: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 4, "two keys, a password, a secret: {got:#?}");
        assert!(got.iter().all(|e| e.contains("a redacted secret: dump with --with-secrets")), "{got:#?}");
        assert!(got.iter().any(|e| e.starts_with("consumers/alice/basic-auth/alice.password: ")), "{got:#?}");
        assert!(!to_yaml(&Config::default(), false).contains("consumers"));
    }

    /// A self-signed certificate for `name` and its key, PEM.
    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn certificates_round_trip_with_their_keys_and_are_redacted_without() {
        let (cert, key) = self_signed("api.example.com");
        let (ca, _) = self_signed("ca");
        let text = format!(
            "certificates: [{{ name: api, cert: {}, key: {}, snis: [api.example.com], default: true }}]\n\
             ca_certificates: [{{ name: ca, cert: {} }}]\n",
            serde_json::json!(cert),
            serde_json::json!(key),
            serde_json::json!(ca)
        );
        let config = parse(&text).unwrap();
        assert!(config.certificates["api"].default);
        assert_eq!(config.ca_certificates["ca"].cert, ca);
        let full = to_yaml(&config, true);
        assert_eq!(parse(&full).unwrap(), config, "{full}");
        let redacted = to_yaml(&config, false);
        assert!(!redacted.contains("PRIVATE KEY"), "{redacted}");
        let got: Vec<String> = parse(&redacted).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            ["certificates/api.key: a redacted secret: dump with --with-secrets to get a file that applies"]
        );
    }

    #[test]
    fn two_certificates_for_one_name_or_two_defaults_are_refused() {
        let (a, a_key) = self_signed("a.example");
        let (b, b_key) = self_signed("b.example");
        let text = format!(
            "certificates:\n\
             - {{ name: a, cert: {}, key: {}, snis: [x.example, a.example], default: true }}\n\
             - {{ name: b, cert: {}, key: {}, snis: [b.example, x.example], default: true }}\n",
            serde_json::json!(a),
            serde_json::json!(a_key),
            serde_json::json!(b),
            serde_json::json!(b_key)
        );
        let got: Vec<String> = parse(&text).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "certificates/b.snis[1]: \"x.example\" is already served by certificates/a",
                "certificates/b.default: certificates/a is already the default"
            ]
        );
    }

    #[test]
    fn credential_errors_say_where_and_duplicates_across_consumers_are_refused() {
        let text = r#"
consumers:
  - username: alice
    keyauth_credentials: [{ id: k, key: "has space" }, { id: dup, key: shared }]
    basicauth_credentials: [{ username: "a:b", password: x }, { id: p, username: same, password: x }]
  - username: bob
    keyauth_credentials: [{ id: dup, key: shared }]
    basicauth_credentials: [{ id: p, username: same, password: y }]
    jwt_secrets: [{ id: j, key: iss, algorithm: RS256 }, { key: iss2, colour: red, secret: x }]
  - username: "bad name"
    custom_id: 7
    keyauth_credentials: [{ key: k-of-broken }]
"#;
        let got: Vec<String> = parse(text).unwrap_err().iter().map(|e| e.to_string()).collect();
        let expect = [
            "consumers/alice/key-auth/k.key: must be printable ASCII",
            "consumers/alice/basic-auth/a:b.id: name \"a:b\" has ':'",
            "consumers/alice/basic-auth/a:b.username: may not contain ':'",
            "consumers/bob/jwt/j.public_key: is required for RS256",
            "consumers/bob/jwt/iss2.colour: unknown field",
            "consumers/bad name.custom_id: invalid type",
            "consumers/bob/key-auth/dup.key: the same key-auth key as consumers/alice/key-auth/dup",
            "consumers/bob/basic-auth/p.username: the same basic-auth username as consumers/alice/basic-auth/p",
        ];
        for e in expect {
            assert!(got.iter().any(|g| g.starts_with(e)), "missing {e:?} in {got:#?}");
        }
        assert_eq!(got.len(), expect.len(), "{got:#?}");
    }
}
