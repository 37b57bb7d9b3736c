//! Writing entities to etcd through the admin API (`config_source = etcd`).
//!
//! A `PUT` validates the body as the entity its path names, and writes the key only if what it
//! refers to exists in etcd at that moment (one transaction); any problem is a 400 naming the
//! field at fault, and nothing is written. A `DELETE` refuses to remove what other entities still
//! use in etcd, and deletes in a transaction that fails if a possible user was written since it
//! looked (then it looks again), so that a route and the removal of its service, written through
//! two nodes at once, cannot both land. Both answer with the etcd revision; with `?wait=1` they
//! answer once this node has applied that revision.
//!
//! Consumers and credentials: a credential is written only if its consumer exists in etcd, and
//! not if another credential already holds its key (or basic-auth username); a plain basic-auth
//! password is hashed before it is written; answers never carry a secret. A consumer is deleted
//! with its credentials.

use super::{json_response, EtcdLink};
use crate::proxy::{json_error, ProxyBody};
use crate::runtime::Live;
use config_sync::etcd::{parse_submitted, Deleted, Entity, EntityKey, WriteError};
use config_sync::model::{Credential, CredentialKind, Plugins, Service};
use http::{Response, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// How long `?wait=1` waits for this node to apply a write.
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// What a write needs.
pub struct Context<'a> {
    /// etcd.
    pub link: &'a EtcdLink,
    /// To wait for the write to apply.
    pub live: &'a Live,
    /// `?wait=1`.
    pub wait: bool,
}

/// The entity key an admin path names, if it names one.
pub fn entity_key(segments: &[&str]) -> Option<EntityKey> {
    Some(match *segments {
        ["services", name] => EntityKey::Service(name.to_owned()),
        ["routes", name] => EntityKey::Route(name.to_owned()),
        ["upstreams", name] => EntityKey::Upstream(name.to_owned()),
        ["upstreams", upstream, "targets", target] => EntityKey::Target(upstream.to_owned(), target.to_owned()),
        ["consumers", username] => EntityKey::Consumer(username.to_owned()),
        ["certificates", name] => EntityKey::Certificate(name.to_owned()),
        ["ca_certificates", name] => EntityKey::CaCertificate(name.to_owned()),
        ["consumers", username, kind, id] => {
            EntityKey::Credential(username.to_owned(), CredentialKind::parse(kind)?, id.to_owned())
        }
        _ => return None,
    })
}

/// `PUT`: validate, check references, write.
pub async fn put(cx: &Context<'_>, key: &EntityKey, body: &[u8]) -> Response<ProxyBody> {
    let entity = match parse_submitted(&key.path(), body) {
        Ok((_, entity)) => entity,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, &message),
    };
    if let Entity::Credential(credential) = entity {
        return put_credential(cx, key, credential).await;
    }
    // What the entity refers to must exist in etcd when it is written: checked in the same
    // transaction, so neither this node's view nor a concurrent delete can let a dangling
    // reference through.
    let (value, mut requires) = match &entity {
        Entity::Route(route) => (to_json(route), vec![EntityKey::Service(route.service.clone())]),
        Entity::Target(target) => {
            let EntityKey::Target(upstream, _) = key else { unreachable!("a target key") };
            (to_json(target), vec![EntityKey::Upstream(upstream.clone())])
        }
        Entity::Service(service) => {
            let cas = service.ca_certificates.iter().map(|ca| EntityKey::CaCertificate(ca.clone()));
            let client = service.client_certificate.iter().map(|c| EntityKey::Certificate(c.clone()));
            let fallback = service.fallback_upstream.iter().map(|u| EntityKey::Upstream(u.clone()));
            (to_json(service), cas.chain(client).chain(fallback).collect())
        }
        Entity::Upstream(upstream) => (to_json(upstream), vec![]),
        Entity::Plugin(plugins) => (to_json(plugins), vec![]),
        Entity::Consumer(consumer) => (to_json(consumer), vec![]),
        Entity::Certificate(certificate) => (to_json(certificate), vec![]),
        Entity::CaCertificate(ca) => (to_json(ca), vec![]),
        Entity::Credential(_) => unreachable!("written by put_credential"),
    };
    // The upstreams its plugins name (`traffic-split`).
    let plugins = match &entity {
        Entity::Route(route) => Some(&route.plugins),
        Entity::Service(service) => Some(&service.plugins),
        Entity::Consumer(consumer) => Some(&consumer.plugins),
        Entity::Plugin(plugins) => Some(plugins),
        _ => None,
    };
    for (_, upstream) in plugins.into_iter().flat_map(|p| p.upstreams()) {
        let upstream = EntityKey::Upstream(upstream.to_owned());
        if !requires.contains(&upstream) {
            requires.push(upstream);
        }
    }
    match cx.link.writer.put(key, &value, &requires).await {
        Ok(Some(revision)) => {
            let mut shown = value;
            if let (EntityKey::Certificate(_), Value::Object(fields)) = (key, &mut shown) {
                // A private key goes in, never out.
                fields.remove("key");
            }
            config_sync::model::redact_secrets(&mut shown);
            answer(cx, revision, json!({ "revision": revision, "data": shown })).await
        }
        Ok(None) => {
            let missing: Vec<String> = requires.iter().map(EntityKey::path).collect();
            let field = match key {
                EntityKey::Route(_) if requires.len() == 1 => format!("{}.service", key.path()),
                _ => key.path(),
            };
            let message = match &missing[..] {
                [one] => format!("{field}: {one} does not exist"),
                many => format!("{field}: one of {} does not exist", many.join(", ")),
            };
            json_error(StatusCode::BAD_REQUEST, &message)
        }
        Err(e) => write_failed(&e),
    }
}

/// `PUT` of a credential: its password hashed, refused if another credential holds its key,
/// written if its consumer exists; the answer shows it without its secret.
async fn put_credential(cx: &Context<'_>, key: &EntityKey, credential: Credential) -> Response<ProxyBody> {
    let EntityKey::Credential(username, ..) = key else { unreachable!("a credential key") };
    let credential = match credential {
        Credential::BasicAuth(mut basic) => {
            basic.password = basic.password.hashed();
            Credential::BasicAuth(basic)
        }
        other => other,
    };
    // A clash written meanwhile through another node is caught by the nodes: the later of the
    // two is listed as a bad value and not served.
    let (snapshot, _) = match cx.link.writer.read_config().await {
        Ok(read) => read,
        Err(e) => return write_failed(&e),
    };
    if let Some(holder) = holder_of(&snapshot.config, username, &credential) {
        let field = credential.kind().identity_field();
        let message = format!("{}.{field}: already used by {holder}; each must be unique", key.path());
        return json_error(StatusCode::BAD_REQUEST, &message);
    }
    let requires = EntityKey::Consumer(username.clone());
    match cx.link.writer.put(key, &credential.to_json(true), std::slice::from_ref(&requires)).await {
        Ok(Some(revision)) => {
            let mut data = credential.to_json(false);
            data["consumer"] = Value::String(username.clone());
            answer(cx, revision, json!({ "revision": revision, "data": data })).await
        }
        Ok(None) => {
            let message = format!("{}: consumer {username:?} does not exist; create it first", key.path());
            json_error(StatusCode::BAD_REQUEST, &message)
        }
        Err(e) => write_failed(&e),
    }
}

/// The other credential of `config` with the same kind and key (or username) as `credential`,
/// as `consumers/<u>/<kind>/<id>`.
fn holder_of(config: &config_sync::Config, username: &str, credential: &Credential) -> Option<String> {
    let kind = credential.kind();
    config.credentials.iter().find_map(|(owner, credentials)| {
        credentials
            .iter()
            .filter(|c| c.kind() == kind && c.identity() == credential.identity())
            .find(|c| !(owner == username && c.id() == credential.id()))
            .map(|c| format!("consumers/{owner}/{kind}/{}", c.id()))
    })
}

/// `DELETE`: refuse while something uses the entity, then delete (an upstream with its
/// targets). What uses it is read from etcd, and the delete is made only if nothing that could
/// use it was written since that read; a user written meanwhile (through any node) makes it read
/// and check again.
pub async fn delete(cx: &Context<'_>, key: &EntityKey) -> Response<ProxyBody> {
    // Routes use services; services use upstreams (by the host of their URL, and as their
    // `fallback_upstream`), CA certificates
    // and client certificates; the plugins of routes, services, consumers and global ones use
    // upstreams (`traffic-split`), so an upstream's users may be anywhere under the prefix.
    let users_under = match key {
        EntityKey::Service(_) => Some("routes/"),
        EntityKey::Upstream(_) => Some(""),
        EntityKey::Certificate(_) | EntityKey::CaCertificate(_) => Some("services/"),
        _ => None,
    };
    for _ in 0..DELETE_ATTEMPTS {
        let unchanged = match users_under {
            Some(prefix) => {
                let (snapshot, revision) = match cx.link.writer.read_config().await {
                    Ok(read) => read,
                    Err(e) => return write_failed(&e),
                };
                let users = users_of(&snapshot.config, key);
                if !users.is_empty() {
                    let message =
                        format!("{} is used by {}; change or delete those first", key.path(), users.join(", "));
                    return json_error(StatusCode::BAD_REQUEST, &message);
                }
                Some((prefix, revision))
            }
            None => None,
        };
        match cx.link.writer.delete(key, unchanged).await {
            Ok(Deleted::Done(revision)) => return answer(cx, revision, json!({ "revision": revision })).await,
            Ok(Deleted::NotFound) => {
                return json_error(StatusCode::NOT_FOUND, &format!("{} not found in etcd", key.path()))
            }
            Ok(Deleted::Changed) => continue,
            Err(e) => return write_failed(&e),
        }
    }
    let message = format!("{} was not deleted: what could use it kept changing; try again", key.path());
    json_error(StatusCode::CONFLICT, &message)
}

/// How many times a delete reads and checks again when a possible user was written meanwhile.
const DELETE_ATTEMPTS: usize = 5;

/// The entities of `config` that use `key`, as `kind/name`.
fn users_of(config: &config_sync::Config, key: &EntityKey) -> Vec<String> {
    match key {
        EntityKey::Service(name) => {
            config.routes.values().filter(|r| &r.service == name).map(|r| format!("routes/{}", r.name)).collect()
        }
        EntityKey::Upstream(name) => {
            let by_url = |s: &Service| {
                s.parsed_url().is_ok_and(|u| &u.host == name && u.port.is_none())
                    || s.fallback_upstream.as_ref() == Some(name)
            };
            let split = |plugins: &Plugins| plugins.upstreams().any(|(_, u)| u == name);
            let mut users = services_where(config, |s| by_url(s) || split(&s.plugins));
            users.extend(config.routes.iter().filter(|(_, r)| split(&r.plugins)).map(|(n, _)| format!("routes/{n}")));
            let consumers = config.consumers.iter().filter(|(_, c)| split(&c.plugins));
            users.extend(consumers.map(|(n, _)| format!("consumers/{n}")));
            let global = config.plugins.upstreams().filter(|(_, u)| u == name);
            users.extend(global.map(|(field, _)| format!("plugins/{}", field.split('.').next().unwrap_or_default())));
            users.dedup();
            users
        }
        EntityKey::Certificate(name) => services_where(config, |s| s.client_certificate.as_ref() == Some(name)),
        EntityKey::CaCertificate(name) => services_where(config, |s| s.ca_certificates.contains(name)),
        _ => Vec::new(),
    }
}

/// The services of `config` that `uses` says use something, as `services/<name>`.
fn services_where(config: &config_sync::Config, uses: impl Fn(&Service) -> bool) -> Vec<String> {
    config.services.values().filter(|s| uses(s)).map(|s| format!("services/{}", s.name)).collect()
}

/// 200 with `body`; with `?wait=1`, once this node applied `revision` (504 if it does not in
/// time: the write stands).
async fn answer(cx: &Context<'_>, revision: u64, body: Value) -> Response<ProxyBody> {
    if cx.wait && !cx.live.wait_applied(revision, WAIT_LIMIT).await {
        let message = format!("written at revision {revision}, but not applied on this node within {WAIT_LIMIT:?}");
        return json_response(StatusCode::GATEWAY_TIMEOUT, &json!({ "message": message, "revision": revision }));
    }
    json_response(StatusCode::OK, &body)
}

/// 504 when etcd did not answer (the write may have been made: GET to see), 503 otherwise.
fn write_failed(error: &WriteError) -> Response<ProxyBody> {
    let status = match error {
        WriteError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    json_error(status, &error.to_string())
}

fn to_json<T: serde::Serialize>(entity: &T) -> Value {
    serde_json::to_value(entity).expect("entities serialize")
}
