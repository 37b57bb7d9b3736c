//! A whole config: every entity by name, and the checks that span entities.

use crate::model::{Plugins, Route, Service, Target, Upstream};
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
}

/// An entity a reference check can find at fault.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntityRef {
    /// A route.
    Route(String),
    /// A target of an upstream.
    Target(String, String),
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
    }

    /// The entities that refer to something missing: a route to an unknown service, targets of
    /// an unknown upstream. A service whose url host is not an upstream is not at fault: that
    /// host is a literal address.
    pub fn dangling(&self) -> Vec<(EntityRef, FieldError)> {
        let mut found = Vec::new();
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
        found
    }

    /// Every problem in the config, entity checks and references alike; empty when valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Errors::default();
        self.validate_entities(&mut errors);
        errors.extend(self.dangling().into_iter().map(|(_, e)| e));
        errors.into_vec()
    }

    /// Removes the entities `dangling` names, so what is left can be served.
    pub fn remove(&mut self, entity: &EntityRef) {
        match entity {
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
        }
    }

    /// The targets of `upstream`, in `host:port` order.
    pub fn targets_of(&self, upstream: &str) -> impl Iterator<Item = &Target> {
        self.targets.get(upstream).into_iter().flat_map(|t| t.values())
    }
}
