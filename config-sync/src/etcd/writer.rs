//! Writing config to etcd: one key at a time (the admin API), or a whole declarative file in
//! one transaction (`gateway apply`), and reading it all back (`gateway dump`).

use super::keys::prefix_end;
use super::keys::{normalize_prefix, EntityKey};
use super::keyspace::{parse_entity, Entity, KeySpace};
use super::read::{read_prefix, ReadError};
use super::watcher::EtcdConfig;
use crate::config::Config;
use crate::model::{Credential, CredentialKind, Password};
use etcd_client::{Client, Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Why a write or read failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// etcd refused or could not be reached.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// etcd did not answer in time; a write may or may not have happened.
    #[error("etcd did not answer within {0:?}; the write may or may not have been made")]
    Timeout(Duration),
    /// Another writer changed the prefix between the read and the transaction.
    #[error("the config in etcd changed while applying; nothing was written, run it again")]
    Conflict,
    /// etcd refused the transaction for its size.
    #[error(
        "etcd refused a transaction of {0} operations (its --max-txn-ops is lower, 128 by default); \
         raise it to apply this file in one transaction"
    )]
    TooLarge(usize),
}

/// What [`EtcdWriter::delete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Deleted, at this revision.
    Done(u64),
    /// There was no such entity.
    NotFound,
    /// Something under the `unchanged` prefix was written since: nothing was deleted.
    Changed,
}

/// One key as read: value, the revision it was last written at, and its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The value.
    pub value: Vec<u8>,
    /// When it was last written.
    pub mod_revision: i64,
    /// Its lease (0: none).
    pub lease: i64,
}

/// What `apply` would do, or did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Keys created (relative to the prefix).
    pub created: Vec<String>,
    /// Keys whose value changed.
    pub changed: Vec<String>,
    /// Keys deleted.
    pub deleted: Vec<String>,
    /// The revision written at; None for a dry run or when nothing changed.
    pub revision: Option<u64>,
}

impl ApplyReport {
    /// Whether nothing differs.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.changed.is_empty() && self.deleted.is_empty()
    }
}

/// A connection for writing config under a prefix. Cheap to clone.
#[derive(Clone)]
pub struct EtcdWriter {
    client: Client,
    prefix: String,
    timeout: Duration,
}

impl EtcdWriter {
    /// Connects to etcd. The connection is made lazily by the client, so this fails only on
    /// bad endpoints; every call has its own timeout.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdWriter, WriteError> {
        let client = Client::connect(&config.endpoints, Some(config.connect_options())).await?;
        Ok(EtcdWriter { client, prefix: normalize_prefix(&config.prefix), timeout: config.request_timeout })
    }

    /// Writes one entity's JSON at its key, if every entity of `requires` (what it refers to)
    /// exists in etcd at that moment: the revision of the write, or None when one does not.
    pub async fn put(&self, key: &EntityKey, value: &Value, requires: &[EntityKey]) -> Result<Option<u64>, WriteError> {
        let mut client = self.client.clone();
        let bytes = serde_json::to_vec(value).expect("JSON values serialize");
        // etcd-client wants the conditions before the operations.
        let mut txn = Txn::new();
        if !requires.is_empty() {
            let exist = requires.iter().map(|r| Compare::version(r.under(&self.prefix), CompareOp::Greater, 0));
            txn = txn.when(exist.collect::<Vec<_>>());
        }
        let txn = txn.and_then([TxnOp::put(key.under(&self.prefix), bytes, None)]);
        let response = self.timed(client.txn(txn)).await?;
        Ok(response.succeeded().then(|| response.header().map_or(0, |h| h.revision().max(0) as u64)))
    }

    /// Deletes one entity; an upstream goes with its targets, a consumer with its credentials,
    /// in one transaction. With
    /// `unchanged` (a relative prefix such as `routes/`, and a revision), only if nothing under
    /// that prefix was written after that revision: the check the caller made of what uses the
    /// entity, at that revision, still holds.
    pub async fn delete(&self, key: &EntityKey, unchanged: Option<(&str, u64)>) -> Result<Deleted, WriteError> {
        let mut client = self.client.clone();
        let full = key.under(&self.prefix);
        let mut ops = vec![TxnOp::delete(full.clone(), None)];
        let children = match key {
            EntityKey::Upstream(_) => Some(format!("{full}/targets/")),
            EntityKey::Consumer(_) => Some(format!("{full}/")),
            _ => None,
        };
        if let Some(children) = children {
            ops.push(TxnOp::delete(children.clone(), Some(DeleteOptions::new().with_range(prefix_end(&children)))));
        }
        // Only when the entity itself exists: an upstream that is not there keeps the targets
        // registered under its name.
        let mut compares = vec![Compare::version(full.clone(), CompareOp::Greater, 0)];
        if let Some((relative, revision)) = unchanged {
            let range = format!("{}/{relative}", self.prefix);
            let end = prefix_end(&range);
            compares.push(Compare::mod_revision(range, CompareOp::Less, revision as i64 + 1).with_range(end));
        }
        // On failure, whether the entity exists tells the two conditions apart.
        let txn = Txn::new().when(compares).and_then(ops).or_else([TxnOp::get(full, None)]);
        let response = self.timed(client.txn(txn)).await?;
        let revision = response.header().map_or(0, |h| h.revision().max(0) as u64);
        if response.succeeded() {
            return Ok(Deleted::Done(revision));
        }
        let exists = response.op_responses().into_iter().any(|op| match op {
            TxnOpResponse::Get(get) => !get.kvs().is_empty(),
            _ => false,
        });
        Ok(if exists { Deleted::Changed } else { Deleted::NotFound })
    }

    /// Every key under the prefix (relative), read page by page at one revision, and that
    /// revision.
    pub async fn read_all(&self) -> Result<(BTreeMap<String, StoredKey>, u64), WriteError> {
        let mut kv = self.client.kv_client().max_decoding_message_size(super::watcher::MAX_MESSAGE);
        let base = format!("{}/", self.prefix);
        let (kvs, at) = read_prefix(&mut kv, &base, self.timeout).await.map_err(|e| match e {
            ReadError::Etcd(e) => WriteError::Etcd(e),
            ReadError::Timeout(limit) => WriteError::Timeout(limit),
        })?;
        let mut keys = BTreeMap::new();
        for kv in &kvs {
            let Some(key) = std::str::from_utf8(kv.key()).ok().and_then(|k| k.strip_prefix(base.as_str())) else {
                continue;
            };
            keys.insert(
                key.to_owned(),
                StoredKey { value: kv.value().to_vec(), mod_revision: kv.mod_revision(), lease: kv.lease() },
            );
        }
        Ok((keys, at.max(0) as u64))
    }

    /// The config etcd holds now, as a node would serve it, with the problems of bad keys.
    pub async fn read_config(&self) -> Result<(crate::Snapshot, u64), WriteError> {
        let (keys, revision) = self.read_all().await?;
        let mut keyspace = KeySpace::new();
        for (relative, stored) in &keys {
            keyspace.put(&format!("{}/{relative}", self.prefix), relative, &stored.value, stored.mod_revision as u64);
        }
        Ok((keyspace.snapshot(revision), revision))
    }

    /// Makes the prefix hold exactly `config`, in one transaction that fails, writing nothing, if
    /// anything under the prefix changed since it was read. Keys are compared by what they mean,
    /// not by their bytes, and a key rewritten keeps its lease. With `dry_run`, only says what it
    /// would do.
    ///
    /// Plain basic-auth passwords are hashed before they are written; one that verifies against
    /// the hash etcd holds for its credential keeps that hash, so that applying the same file
    /// twice changes nothing.
    pub async fn apply(&self, config: &Config, dry_run: bool) -> Result<ApplyReport, WriteError> {
        let (current, read_at) = self.read_all().await?;
        let desired = desired_keys(&with_hashed_passwords(config, &current));
        let base = format!("{}/", self.prefix);
        let mut report = ApplyReport::default();
        // Nothing under the prefix created or written since the read...
        let mut compares = vec![
            Compare::mod_revision(base.clone(), CompareOp::Less, read_at as i64 + 1).with_range(prefix_end(&base))
        ];
        // ...and nothing deleted.
        for (key, stored) in &current {
            compares.push(Compare::mod_revision(format!("{base}{key}"), CompareOp::Equal, stored.mod_revision));
        }
        let mut ops = Vec::new();
        for (key, value) in &desired {
            let full = format!("{base}{key}");
            let bytes = serde_json::to_vec(value).expect("JSON values serialize");
            let mut options = None;
            match current.get(key) {
                None => report.created.push(key.clone()),
                Some(stored) if same_entity(key, &stored.value, &bytes) => continue,
                Some(stored) => {
                    report.changed.push(key.clone());
                    if stored.lease != 0 {
                        options = Some(PutOptions::new().with_lease(stored.lease));
                    }
                }
            }
            ops.push(TxnOp::put(full, bytes, options));
        }
        for key in current.keys().filter(|k| !desired.contains_key(*k)) {
            report.deleted.push(key.clone());
            ops.push(TxnOp::delete(format!("{base}{key}"), None));
        }
        if dry_run || report.is_empty() {
            return Ok(report);
        }
        let size = ops.len().max(compares.len());
        let mut client = self.client.clone();
        let response = match self.timed(client.txn(Txn::new().when(compares).and_then(ops))).await {
            Err(WriteError::Etcd(e)) if e.to_string().contains("too many operations") => {
                return Err(WriteError::TooLarge(size))
            }
            other => other?,
        };
        if !response.succeeded() {
            return Err(WriteError::Conflict);
        }
        report.revision = response.header().map(|h| h.revision().max(0) as u64);
        Ok(report)
    }

    async fn timed<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, WriteError> {
        tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| WriteError::Timeout(self.timeout))?
            .map_err(Into::into)
    }
}

/// Whether a stored value means the same entity as `desired` (both at `key`): a target written
/// as `{}` equals one written with every default.
fn same_entity(key: &str, stored: &[u8], desired: &[u8]) -> bool {
    match (parse_entity(key, stored), parse_entity(key, desired)) {
        (Ok((_, a)), Ok((_, b))) => a == b,
        _ => stored == desired,
    }
}

/// `config` with every plain basic-auth password hashed: to the hash stored in `current` for the
/// same credential when the password verifies against it, else to a new one.
fn with_hashed_passwords(config: &Config, current: &BTreeMap<String, StoredKey>) -> Config {
    let mut config = config.clone();
    for (username, credentials) in &mut config.credentials {
        for (id, credential) in &mut credentials.basic_auth {
            let Password::Plain(plain) = &credential.password else { continue };
            let key = EntityKey::Credential(username.clone(), CredentialKind::BasicAuth, id.clone()).path();
            let stored = current.get(&key).and_then(|stored| match parse_entity(&key, &stored.value) {
                Ok((_, Entity::Credential(Credential::BasicAuth(stored)))) => Some(stored.password),
                _ => None,
            });
            credential.password = match stored {
                Some(hash) if hash.is_hashed() && hash.verify(plain.as_bytes()) => hash,
                _ => Password::hash(plain),
            };
        }
    }
    config
}

/// The keys (relative to the prefix) and JSON values that hold `config`, the same layout a node
/// reads: one key per service, route, upstream, target, global plugin, consumer and credential.
pub fn desired_keys(config: &Config) -> BTreeMap<String, Value> {
    fn to_value<T: serde::Serialize>(entity: &T) -> Value {
        serde_json::to_value(entity).expect("entities serialize")
    }
    let mut keys = BTreeMap::new();
    for (name, service) in &config.services {
        keys.insert(EntityKey::Service(name.clone()).path(), to_value(service));
    }
    for (name, route) in &config.routes {
        keys.insert(EntityKey::Route(name.clone()).path(), to_value(route));
    }
    for (name, upstream) in &config.upstreams {
        keys.insert(EntityKey::Upstream(name.clone()).path(), to_value(upstream));
    }
    for (upstream, targets) in &config.targets {
        for (name, target) in targets {
            keys.insert(EntityKey::Target(upstream.clone(), name.clone()).path(), to_value(target));
        }
    }
    if let Value::Object(plugins) = serde_json::to_value(&config.plugins).expect("entities serialize") {
        for (name, value) in plugins {
            keys.insert(EntityKey::Plugin(name).path(), value);
        }
    }
    for (name, consumer) in &config.consumers {
        keys.insert(EntityKey::Consumer(name.clone()).path(), to_value(consumer));
    }
    for (username, credentials) in &config.credentials {
        for credential in credentials.iter() {
            let key = EntityKey::Credential(username.clone(), credential.kind(), credential.id().to_owned());
            keys.insert(key.path(), credential.to_json(true));
        }
    }
    for (name, certificate) in &config.certificates {
        keys.insert(EntityKey::Certificate(name.clone()).path(), to_value(certificate));
    }
    for (name, ca) in &config.ca_certificates {
        keys.insert(EntityKey::CaCertificate(name.clone()).path(), to_value(ca));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_keys_read_back_as_the_same_config() {
        let config = crate::declarative::parse(
            r#"
services:
  - { name: a, url: "http://up/v1", routes: [{ name: r, paths: [/a] }] }
upstreams:
  - { name: up, targets: [{ target: "10.0.0.1:80", weight: 5 }] }
plugins:
  proxy-cache: { cache_ttl: 30 }
"#,
        )
        .unwrap();
        let keys = desired_keys(&config);
        let names: Vec<&str> = keys.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["plugins/proxy-cache", "routes/r", "services/a", "upstreams/up", "upstreams/up/targets/10.0.0.1:80"]
        );
        let mut ks = KeySpace::new();
        for (key, value) in &keys {
            ks.put(key, key, &serde_json::to_vec(value).unwrap(), 1);
        }
        assert_eq!(ks.snapshot(1).config, config);
    }

    #[test]
    fn consumers_and_credentials_are_keys_and_read_back() {
        let config = crate::declarative::parse(
            r#"
consumers:
  - username: alice
    keyauth_credentials: [{ id: k, key: the-key }]
    basicauth_credentials: [{ username: al, password: pw }]
"#,
        )
        .unwrap();
        let stored = BTreeMap::new();
        let hashed = with_hashed_passwords(&config, &stored);
        let keys = desired_keys(&hashed);
        let names: Vec<&str> = keys.keys().map(String::as_str).collect();
        assert_eq!(names, ["consumers/alice", "consumers/alice/basic-auth/al", "consumers/alice/key-auth/k"]);
        let password = keys["consumers/alice/basic-auth/al"]["password"].as_str().unwrap();
        assert!(password.starts_with("$argon2id$"), "{password}");
        let mut ks = KeySpace::new();
        for (key, value) in &keys {
            ks.put(key, key, &serde_json::to_vec(value).unwrap(), 1);
        }
        let snap = ks.snapshot(1);
        assert!(snap.errors.is_empty(), "{:?}", snap.errors);
        assert_eq!(snap.config, hashed);
    }

    #[test]
    fn a_plain_password_that_verifies_keeps_the_stored_hash() {
        let text = "consumers: [{ username: a, basicauth_credentials: [{ id: b, username: u, password: pw }] }]";
        let config = crate::declarative::parse(text).unwrap();
        let first = desired_keys(&with_hashed_passwords(&config, &BTreeMap::new()));
        let stored: BTreeMap<String, StoredKey> = first
            .iter()
            .map(|(k, v)| (k.clone(), StoredKey { value: serde_json::to_vec(v).unwrap(), mod_revision: 1, lease: 0 }))
            .collect();
        let again = desired_keys(&with_hashed_passwords(&config, &stored));
        assert_eq!(again, first, "the same hash, so nothing to change");
        let other = crate::declarative::parse(&text.replace("pw", "new-pw")).unwrap();
        let changed = desired_keys(&with_hashed_passwords(&other, &stored));
        assert_ne!(changed["consumers/a/basic-auth/b"], first["consumers/a/basic-auth/b"]);
    }
}
