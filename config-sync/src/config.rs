//! A whole config: every entity by name, and the checks that span entities.

use crate::model::{
    CaCertificate, Certificate, Consumer, Credential, CredentialKind, Credentials, Plugins, Route, Service, Target,
    Upstream,
};
use crate::validate::{Errors, FieldError};
use serde::Serialize;
use std::collections::BTreeMap;

/// Every entity of a config, keyed by name. Ordered maps, so that two equal configs serialize
/// (and hash) the same.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Config {
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// Routes by name.
    pub routes: BTreeMap<String, Route>,
    /// Upstreams by name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Targets by upstream name, then by `host:port`.
    pub targets: BTreeMap<String, BTreeMap<String, Target>>,
    /// Plugins that apply to every route (a service's or route's own config wins).
    pub plugins: Plugins,
    /// Consumers by username.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub consumers: BTreeMap<String, Consumer>,
    /// Credentials by consumer username.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, Credentials>,
    /// TLS certificates the proxy serves, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub certificates: BTreeMap<String, Certificate>,
    /// CA certificates upstreams are verified against, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ca_certificates: BTreeMap<String, CaCertificate>,
}

/// An entity a reference check can find at fault.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntityRef {
    /// A service.
    Service(String),
    /// A route.
    Route(String),
    /// A target of an upstream.
    Target(String, String),
    /// A credential: consumer username, kind, id.
    Credential(String, CredentialKind, String),
    /// A consumer.
    Consumer(String),
    /// A global plugin, by its name.
    Plugin(String),
}

impl EntityRef {
    /// The entity's path, as errors name it: `routes/r`, `consumers/u/key-auth/k`.
    pub fn path(&self) -> String {
        match self {
            EntityRef::Service(name) => format!("services/{name}"),
            EntityRef::Route(name) => format!("routes/{name}"),
            EntityRef::Target(upstream, name) => format!("upstreams/{upstream}/targets/{name}"),
            EntityRef::Credential(username, kind, id) => format!("consumers/{username}/{kind}/{id}"),
            EntityRef::Consumer(username) => format!("consumers/{username}"),
            EntityRef::Plugin(name) => format!("plugins/{name}"),
        }
    }
}

impl Config {
    /// Runs every entity's own checks, under paths like `routes/orders.paths[1]`.
    pub fn validate_entities(&self, errors: &mut Errors) {
        for (name, s) in &self.services {
            s.validate(&format!("services/{name}"), errors);
        }
        for (name, r) in &self.routes {
            r.validate(&format!("routes/{name}"), errors);
        }
        for (name, u) in &self.upstreams {
            u.validate(&format!("upstreams/{name}"), errors);
        }
        for (upstream, targets) in &self.targets {
            for (name, t) in targets {
                t.validate(&format!("upstreams/{upstream}/targets/{name}"), errors);
            }
        }
        self.plugins.validate("plugins", errors);
        for (name, c) in &self.consumers {
            c.validate(&format!("consumers/{name}"), errors);
        }
        for (username, credentials) in &self.credentials {
            for credential in credentials.iter() {
                credential.validate(&format!("consumers/{username}/{}/{}", credential.kind(), credential.id()), errors);
            }
        }
        for (name, c) in &self.certificates {
            c.validate(&format!("certificates/{name}"), errors);
        }
        for (name, c) in &self.ca_certificates {
            c.validate(&format!("ca_certificates/{name}"), errors);
        }
    }

    /// The certificates that name a server name another already names, or that are a second
    /// `default`: which would serve could not be told. The first by name keeps it; the others
    /// are listed (and still serve their other names).
    pub fn conflicting_certificates(&self) -> Vec<FieldError> {
        let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
        let mut default: Option<&str> = None;
        let mut found = Vec::new();
        for (name, cert) in &self.certificates {
            for (i, sni) in cert.snis.iter().enumerate() {
                match owner.get(sni.as_str()) {
                    Some(first) => found.push(FieldError {
                        path: format!("certificates/{name}.snis[{i}]"),
                        message: format!("{sni:?} is already served by certificates/{first}"),
                    }),
                    None => {
                        owner.insert(sni, name);
                    }
                }
            }
            if cert.default {
                match default {
                    Some(first) => found.push(FieldError {
                        path: format!("certificates/{name}.default"),
                        message: format!("certificates/{first} is already the default"),
                    }),
                    None => default = Some(name),
                }
            }
        }
        found
    }

    /// The entities that refer to something missing: a route to an unknown service, targets of
    /// an unknown upstream, a service to an unknown CA or client certificate, a plugin (on a
    /// route, a service, a consumer, or global) to an unknown upstream (`traffic-split`), a service
    /// to an unknown `fallback_upstream`. A
    /// service whose url host is not an upstream is not at fault: that host is a literal address.
    pub fn dangling(&self) -> Vec<(EntityRef, FieldError)> {
        let mut found = self.unknown_plugin_upstreams();
        for (name, service) in &self.services {
            let unknown_cas =
                service.ca_certificates.iter().enumerate().filter(|(_, ca)| !self.ca_certificates.contains_key(*ca));
            for (i, ca) in unknown_cas {
                let error = FieldError {
                    path: format!("services/{name}.ca_certificates[{i}]"),
                    message: format!("unknown CA certificate {ca:?}"),
                };
                found.push((EntityRef::Service(name.clone()), error));
            }
            if let Some(fallback) = service.fallback_upstream.as_ref().filter(|u| !self.upstreams.contains_key(*u)) {
                let error = FieldError {
                    path: format!("services/{name}.fallback_upstream"),
                    message: format!("unknown upstream {fallback:?}"),
                };
                found.push((EntityRef::Service(name.clone()), error));
            }
            if let Some(cert) = service.client_certificate.as_ref().filter(|c| !self.certificates.contains_key(*c)) {
                let error = FieldError {
                    path: format!("services/{name}.client_certificate"),
                    message: format!("unknown certificate {cert:?}"),
                };
                found.push((EntityRef::Service(name.clone()), error));
            }
        }
        for (name, route) in &self.routes {
            if !route.service.is_empty() && !self.services.contains_key(&route.service) {
                let error = FieldError {
                    path: format!("routes/{name}.service"),
                    message: format!("unknown service {:?}", route.service),
                };
                found.push((EntityRef::Route(name.clone()), error));
            }
        }
        for (upstream, targets) in &self.targets {
            if !self.upstreams.contains_key(upstream) {
                for name in targets.keys() {
                    let error = FieldError {
                        path: format!("upstreams/{upstream}/targets/{name}"),
                        message: format!("unknown upstream {upstream:?}"),
                    };
                    found.push((EntityRef::Target(upstream.clone(), name.clone()), error));
                }
            }
        }
        for (username, credentials) in &self.credentials {
            if !self.consumers.contains_key(username) {
                for credential in credentials.iter() {
                    let entity = EntityRef::Credential(username.clone(), credential.kind(), credential.id().to_owned());
                    let error = FieldError { path: entity.path(), message: format!("unknown consumer {username:?}") };
                    found.push((entity, error));
                }
            }
        }
        found
    }

    /// The entities whose plugins name an upstream that is not configured: the route, service or
    /// consumer carrying the plugin, or the global plugin itself (a global plugin left out leaves
    /// every route as it would be without it, rather than every route left out).
    fn unknown_plugin_upstreams(&self) -> Vec<(EntityRef, FieldError)> {
        let routes = self.routes.iter().map(|(name, r)| (EntityRef::Route(name.clone()), &r.plugins));
        let services = self.services.iter().map(|(name, s)| (EntityRef::Service(name.clone()), &s.plugins));
        let consumers = self.consumers.iter().map(|(name, c)| (EntityRef::Consumer(name.clone()), &c.plugins));
        let mut found = Vec::new();
        for (entity, plugins) in routes.chain(services).chain(consumers) {
            for (field, upstream) in plugins.upstreams().filter(|(_, u)| !self.upstreams.contains_key(*u)) {
                let path = format!("{}.plugins.{field}", entity.path());
                found.push((entity.clone(), FieldError { path, message: format!("unknown upstream {upstream:?}") }));
            }
        }
        for (field, upstream) in self.plugins.upstreams().filter(|(_, u)| !self.upstreams.contains_key(*u)) {
            let name = field.split('.').next().unwrap_or_default().to_owned();
            let error =
                FieldError { path: format!("plugins/{field}"), message: format!("unknown upstream {upstream:?}") };
            found.push((EntityRef::Plugin(name), error));
        }
        found
    }

    /// The credentials that share what identifies them with another of their kind (a key-auth
    /// `key`, a basic-auth `username`, a jwt `key`): a plugin could not tell whose they are. Of
    /// each such group the credential of the lowest `rank` (then the first by consumer and id)
    /// is kept; the others are listed. Credentials of unknown consumers are not counted (they
    /// are [`Config::dangling`]).
    pub fn duplicate_credentials(&self, rank: impl Fn(&EntityRef) -> u64) -> Vec<(EntityRef, FieldError)> {
        let mut by_identity: BTreeMap<(CredentialKind, &str), Vec<(u64, EntityRef)>> = BTreeMap::new();
        for (username, credentials) in self.credentials.iter().filter(|(u, _)| self.consumers.contains_key(*u)) {
            for (kind, id, identity) in identities(credentials) {
                let entity = EntityRef::Credential(username.clone(), kind, id.to_owned());
                by_identity.entry((kind, identity)).or_default().push((rank(&entity), entity));
            }
        }
        let mut found = Vec::new();
        for ((kind, _), mut group) in by_identity.into_iter().filter(|(_, group)| group.len() > 1) {
            group.sort();
            let kept = group[0].1.path();
            for (_, entity) in group.into_iter().skip(1) {
                let field = kind.identity_field();
                let error = FieldError {
                    path: format!("{}.{field}", entity.path()),
                    message: format!("the same {kind} {field} as {kept}; each must be unique"),
                };
                found.push((entity, error));
            }
        }
        found
    }

    /// Every problem in the config, entity checks and references alike; empty when valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Errors::default();
        self.validate_entities(&mut errors);
        errors.extend(self.dangling().into_iter().map(|(_, e)| e));
        errors.extend(self.duplicate_credentials(|_| 0).into_iter().map(|(_, e)| e));
        errors.extend(self.conflicting_certificates());
        errors.into_vec()
    }

    /// Removes the entities `dangling` names, so what is left can be served.
    pub fn remove(&mut self, entity: &EntityRef) {
        match entity {
            EntityRef::Service(name) => {
                self.services.remove(name);
            }
            EntityRef::Route(name) => {
                self.routes.remove(name);
            }
            EntityRef::Target(upstream, name) => {
                if let Some(targets) = self.targets.get_mut(upstream) {
                    targets.remove(name);
                    if targets.is_empty() {
                        self.targets.remove(upstream);
                    }
                }
            }
            EntityRef::Credential(username, kind, id) => {
                if let Some(credentials) = self.credentials.get_mut(username) {
                    credentials.remove(*kind, id);
                    if credentials.is_empty() {
                        self.credentials.remove(username);
                    }
                }
            }
            EntityRef::Consumer(username) => {
                self.consumers.remove(username);
            }
            EntityRef::Plugin(name) => self.plugins.remove(name),
        }
    }

    /// The credential of `kind` with `id` of consumer `username`.
    pub fn credential(&self, username: &str, kind: CredentialKind, id: &str) -> Option<Credential> {
        self.credentials.get(username)?.get(kind, id)
    }

    /// The targets of `upstream`, in `host:port` order.
    pub fn targets_of(&self, upstream: &str) -> impl Iterator<Item = &Target> {
        self.targets.get(upstream).into_iter().flat_map(|t| t.values())
    }
}

/// Each credential's kind, id and identity (its key or username).
fn identities(credentials: &Credentials) -> impl Iterator<Item = (CredentialKind, &str, &str)> {
    let keys = credentials.key_auth.values().map(|c| (CredentialKind::KeyAuth, c.id.as_str(), c.key.as_str()));
    let basic =
        credentials.basic_auth.values().map(|c| (CredentialKind::BasicAuth, c.id.as_str(), c.username.as_str()));
    let jwt = credentials.jwt.values().map(|c| (CredentialKind::Jwt, c.id.as_str(), c.key.as_str()));
    keys.chain(basic).chain(jwt)
}
