//! Every consumer and credential of a snapshot, indexed for the lookups the auth plugins make.
//! Built once per snapshot; a credential's secret is turned into what checking it needs (a
//! parsed public key) here, not per request.

use crate::plugins::identity::ConsumerEntry;
use crate::plugins::pipeline::Chain;
use base64::Engine as _;
use config_sync::model::{JwtAlgorithm, Password, Plugins};
use config_sync::Config;
use http::HeaderValue;
use jsonwebtoken::DecodingKey;
use ring::hmac;
use std::collections::HashMap;
use std::sync::Arc;

/// A consumer of the index: what an identity carries, and its own plugins.
pub(crate) struct KnownConsumer {
    pub(crate) entry: Arc<ConsumerEntry>,
    /// The consumer's own plugin configs; none when it has none.
    pub(crate) plugins: Option<Arc<Chain>>,
}

/// A credential's id, and as a header value.
#[derive(Clone)]
pub(crate) struct CredentialId {
    pub(crate) id: Arc<str>,
    pub(crate) value: Option<HeaderValue>,
}

impl CredentialId {
    fn new(id: &str) -> CredentialId {
        CredentialId { id: Arc::from(id), value: HeaderValue::from_str(id).ok() }
    }
}

/// A basic-auth credential.
pub(crate) struct BasicEntry {
    pub(crate) consumer: Arc<KnownConsumer>,
    pub(crate) id: CredentialId,
    pub(crate) password: Password,
}

/// A JWT credential, its key ready for checking signatures.
pub(crate) struct JwtEntry {
    pub(crate) consumer: Arc<KnownConsumer>,
    pub(crate) id: CredentialId,
    pub(crate) algorithm: jsonwebtoken::Algorithm,
    /// The HS secret's HMAC keys, made once.
    pub(crate) hmac: Option<HmacKeys>,
    /// The RS or ES public key.
    pub(crate) public_key: Option<DecodingKey>,
}

/// An HS secret as HMAC keys: as configured, and decoded from base64 (for a plugin with
/// `secret_is_base64`; none when it is not base64).
pub(crate) struct HmacKeys {
    pub(crate) plain: hmac::Key,
    pub(crate) base64: Option<hmac::Key>,
}

impl HmacKeys {
    fn new(algorithm: JwtAlgorithm, secret: &str) -> Option<HmacKeys> {
        let algorithm = match algorithm {
            JwtAlgorithm::HS256 => hmac::HMAC_SHA256,
            JwtAlgorithm::HS384 => hmac::HMAC_SHA384,
            JwtAlgorithm::HS512 => hmac::HMAC_SHA512,
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => return None,
        };
        let decoded = base64::engine::general_purpose::STANDARD.decode(secret).ok();
        Some(HmacKeys {
            plain: hmac::Key::new(algorithm, secret.as_bytes()),
            base64: decoded.map(|d| hmac::Key::new(algorithm, &d)),
        })
    }
}

/// The index.
#[derive(Default)]
pub(crate) struct Consumers {
    by_name: HashMap<String, Arc<KnownConsumer>>,
    keys: HashMap<String, (Arc<KnownConsumer>, CredentialId)>,
    basic: HashMap<String, Arc<BasicEntry>>,
    jwt: HashMap<String, Arc<JwtEntry>>,
}

impl Consumers {
    /// Indexes `config`'s consumers; `chain` compiles a consumer's own plugins.
    pub(crate) fn build(config: &Config, chain: impl Fn(&str, &Plugins) -> Chain) -> Consumers {
        let mut index = Consumers::default();
        for (name, consumer) in &config.consumers {
            let value = |text: &str| HeaderValue::from_str(text).ok();
            let groups = consumer.groups.clone();
            let entry = ConsumerEntry {
                username: Arc::from(name.as_str()),
                // Names are checked to be [A-Za-z0-9._~-]: always a valid header value.
                username_value: value(name).unwrap_or(HeaderValue::from_static("")),
                custom_id_value: consumer.custom_id.as_deref().and_then(value),
                groups_value: (!groups.is_empty()).then(|| value(&groups.join(", "))).flatten(),
                groups,
            };
            let plugins = Some(chain(name, &consumer.plugins)).filter(|c| !c.is_empty()).map(Arc::new);
            index.by_name.insert(name.clone(), Arc::new(KnownConsumer { entry: Arc::new(entry), plugins }));
        }
        for (owner, credentials) in &config.credentials {
            // Snapshot::new leaves out credentials whose consumer is missing.
            let Some(consumer) = index.by_name.get(owner).cloned() else { continue };
            for (id, credential) in &credentials.key_auth {
                index.keys.insert(credential.key.clone(), (consumer.clone(), CredentialId::new(id)));
            }
            for (id, credential) in &credentials.basic_auth {
                let entry = BasicEntry {
                    consumer: consumer.clone(),
                    id: CredentialId::new(id),
                    password: credential.password.clone(),
                };
                index.basic.insert(credential.username.clone(), Arc::new(entry));
            }
            for (id, credential) in &credentials.jwt {
                let algorithm = match credential.algorithm {
                    JwtAlgorithm::HS256 => jsonwebtoken::Algorithm::HS256,
                    JwtAlgorithm::HS384 => jsonwebtoken::Algorithm::HS384,
                    JwtAlgorithm::HS512 => jsonwebtoken::Algorithm::HS512,
                    JwtAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
                    JwtAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
                };
                let pem = credential.public_key.as_deref().map(str::as_bytes);
                let public_key = match credential.algorithm {
                    JwtAlgorithm::RS256 => pem.and_then(|p| DecodingKey::from_rsa_pem(p).ok()),
                    JwtAlgorithm::ES256 => pem.and_then(|p| DecodingKey::from_ec_pem(p).ok()),
                    _ => None,
                };
                let entry = JwtEntry {
                    consumer: consumer.clone(),
                    id: CredentialId::new(id),
                    algorithm,
                    hmac: credential.secret.as_deref().and_then(|s| HmacKeys::new(credential.algorithm, s)),
                    public_key,
                };
                index.jwt.insert(credential.key.clone(), Arc::new(entry));
            }
        }
        index
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<&Arc<KnownConsumer>> {
        self.by_name.get(name)
    }

    /// The consumer and credential id of a key-auth key.
    pub(crate) fn by_key(&self, key: &str) -> Option<&(Arc<KnownConsumer>, CredentialId)> {
        self.keys.get(key)
    }

    /// The basic-auth credential of a user name.
    pub(crate) fn by_basic_username(&self, username: &str) -> Option<&Arc<BasicEntry>> {
        self.basic.get(username)
    }

    /// The JWT credential whose key is `key` (the token's `iss`, or the configured claim).
    pub(crate) fn by_jwt_key(&self, key: &str) -> Option<&Arc<JwtEntry>> {
        self.jwt.get(key)
    }
}
