//! Reading what this node serves, as it applied it: entities, status, target health; and the
//! health reset, which acts on this node.

use super::Admin;
use crate::proxy::{json_error, ProxyBody};
use crate::runtime::Runtime;
use crate::settings::ConfigSource;
use cluster::MemberState;
use config_sync::etcd::Connection;
use config_sync::model::{Certificate, Credential, CredentialKind};
use http::{Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

impl Admin {
    /// The resource at `segments`: None for an unknown path, `Err` for a known kind of path
    /// naming something absent.
    pub(super) fn resource(&self, rt: &Runtime, segments: &[&str]) -> Option<Result<Value, String>> {
        let config = &rt.snapshot.config;
        Some(match segments {
            ["status"] => Ok(self.status(rt)),
            ["cluster", "members"] => Ok(self.members()),
            ["services"] => Ok(list(config.services.values())),
            ["services", name] => one(config.services.get(*name), "service", name),
            ["routes"] => Ok(list(config.routes.values())),
            ["routes", name] => one(config.routes.get(*name), "route", name),
            ["upstreams"] => Ok(list(config.upstreams.values())),
            ["upstreams", name] => one(config.upstreams.get(*name), "upstream", name),
            ["upstreams", name, "targets"] => match config.upstreams.get(*name) {
                Some(_) => Ok(json!({ "data": config.targets_of(name).map(|t| target(name, t)).collect::<Vec<_>>() })),
                None => Err(format!("upstream {name:?} not found")),
            },
            ["upstreams", name, "health"] => crate::cluster_link::upstream_health(rt, &self.node_id, name)
                .ok_or_else(|| format!("upstream {name:?} not found")),
            ["consumers"] => Ok(list(config.consumers.values())),
            ["consumers", name] => one(config.consumers.get(*name), "consumer", name),
            ["consumers", name, kind] if CredentialKind::parse(kind).is_some() => match config.consumers.get(*name) {
                Some(_) => {
                    let kind = CredentialKind::parse(kind).expect("checked by the guard");
                    let credentials = config.credentials.get(*name).into_iter().flat_map(|c| c.iter());
                    let data: Vec<Value> =
                        credentials.filter(|c| c.kind() == kind).map(|c| credential(name, &c)).collect();
                    Ok(json!({ "data": data }))
                }
                None => Err(format!("consumer {name:?} not found")),
            },
            ["consumers", name, kind, id] if CredentialKind::parse(kind).is_some() => {
                let kind = CredentialKind::parse(kind).expect("checked by the guard");
                match config.credential(name, kind, id) {
                    Some(found) => Ok(credential(name, &found)),
                    None => Err(format!("{kind} credential {id:?} of consumer {name:?} not found")),
                }
            }
            ["certificates"] => {
                Ok(json!({ "data": config.certificates.values().map(certificate).collect::<Vec<_>>() }))
            }
            ["certificates", name] => {
                config.certificates.get(*name).map(certificate).ok_or_else(|| format!("certificate {name:?} not found"))
            }
            ["ca_certificates"] => Ok(list(config.ca_certificates.values())),
            ["ca_certificates", name] => one(config.ca_certificates.get(*name), "CA certificate", name),
            ["upstreams", name, "targets", t] => match config.targets.get(*name).and_then(|targets| targets.get(*t)) {
                Some(found) => Ok(target(name, found)),
                None => Err(format!("target {t:?} of upstream {name:?} not found")),
            },
            _ => return None,
        })
    }

    /// Every member as this node sees it.
    fn members(&self) -> Value {
        let members = match &self.cluster {
            Some(cluster) => cluster.members().borrow().clone(),
            None => Vec::new(),
        };
        let data: Vec<Value> = members
            .iter()
            .map(|m| json!({ "id": m.id, "addr": m.addr.to_string(), "state": m.state.as_str(), "incarnation": m.incarnation }))
            .collect();
        json!({ "data": data })
    }

    /// Members by state, for `/status`.
    fn cluster_summary(&self) -> Value {
        let Some(cluster) = &self.cluster else { return json!({ "members": 1, "gossip": "off" }) };
        let members = cluster.members().borrow().clone();
        let count = |state: MemberState| members.iter().filter(|m| m.state == state).count();
        json!({
            "members": count(MemberState::Alive),
            "suspect": count(MemberState::Suspect),
            "down": count(MemberState::Down),
            "gossip": cluster.local_addr().to_string(),
        })
    }

    fn status(&self, rt: &Runtime) -> Value {
        let snapshot = &rt.snapshot;
        json!({
            "node_id": self.node_id,
            "config": {
                "source": match self.source { ConfigSource::File => "file", ConfigSource::Etcd => "etcd" },
                "version": snapshot.version,
                "hash": snapshot.hash,
                "applied_at": rfc3339(rt.applied_at),
                "errors": snapshot.errors,
            },
            "etcd": match &self.etcd {
                None => "disabled".to_owned(),
                Some(link) => match &link.status.borrow().connection {
                    Connection::Connecting => "connecting".to_owned(),
                    Connection::Connected => "connected".to_owned(),
                    Connection::Disconnected { .. } => "disconnected".to_owned(),
                },
            },
            "etcd_error": self.etcd.as_ref().and_then(|link| match &link.status.borrow().connection {
                Connection::Disconnected { error } => Some(error.clone()),
                _ => None,
            }),
            "redis": match self.limiters.redis_state() {
                None => "disabled",
                Some(true) => "connected",
                Some(false) => "disconnected",
            },
            "cluster": self.cluster_summary(),
        })
    }
}

/// Why an operator's health set names no target this node serves: the 404's answer.
pub(super) fn unknown_target(rt: &Runtime, upstream: &str, target: &str) -> Option<Response<ProxyBody>> {
    let Some(state) = rt.upstreams.get(upstream) else {
        return Some(json_error(StatusCode::NOT_FOUND, &format!("upstream {upstream:?} not found")));
    };
    if !state.targets.iter().any(|t| &*t.authority == target) {
        return Some(json_error(
            StatusCode::NOT_FOUND,
            &format!("target {target:?} of upstream {upstream:?} not found"),
        ));
    }
    None
}

fn list<'a, T: Serialize + 'a>(items: impl Iterator<Item = &'a T>) -> Value {
    json!({ "data": items.map(shown).collect::<Vec<_>>() })
}

fn one<T: Serialize>(item: Option<&T>, kind: &str, name: &str) -> Result<Value, String> {
    item.map(shown).ok_or_else(|| format!("{kind} {name:?} not found"))
}

/// An entity as reads show it: the passwords of its `http-log` endpoints redacted.
fn shown<T: Serialize>(item: &T) -> Value {
    let mut value = serde_json::to_value(item).unwrap_or(Value::Null);
    config_sync::model::redact_secrets(&mut value);
    value
}

fn target(upstream: &str, target: &config_sync::model::Target) -> Value {
    json!({ "target": target.target, "weight": target.weight, "upstream": upstream })
}

/// A credential as reads show it: with its consumer, and without its secret.
fn credential(consumer: &str, credential: &Credential) -> Value {
    let mut value = credential.to_json(false);
    value["consumer"] = Value::String(consumer.to_owned());
    value
}

/// A certificate as reads show it: without its private key, with when it expires.
fn certificate(certificate: &Certificate) -> Value {
    let mut value = serde_json::to_value(certificate).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        fields.remove("key");
        if let Ok(loaded) = certificate.load() {
            fields.insert("expires_at".into(), Value::String(rfc3339(loaded.not_after)));
        }
    }
    value
}

/// `2026-11-21T07:41:15.123Z`.
fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, secs) = ((since.as_secs() / 86_400) as i64, since.as_secs() % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_246_875_123);
        assert_eq!(rfc3339(t), "2026-11-21T07:41:15.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
    }
}
