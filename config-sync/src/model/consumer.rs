//! Consumers (who calls the APIs) and their credentials: key-auth keys, basic-auth passwords and
//! jwt secrets.
//!
//! Secrets (a key-auth `key`, a basic-auth `password`, a jwt `secret`) never show in `Debug`, so
//! that a config logged whole does not leak them.

use super::{check_name, Plugins};
use crate::validate::Errors;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// Who calls the APIs: credentials identify a consumer, and its plugins win over every other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// The consumer's name; in etcd it is the last key segment and the body may repeat it.
    #[serde(default)]
    pub username: String,
    /// An identifier of the operator's own, passed upstream as `X-Consumer-Custom-ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// Groups, for the acl plugin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Plugins for this consumer's requests; they win over the route's, service's and global ones.
    #[serde(default, skip_serializing_if = "Plugins::is_empty")]
    pub plugins: Plugins,
}

/// A key-auth credential: an API key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthCredential {
    /// The credential's id, an entity name; in etcd the last key segment.
    #[serde(default)]
    pub id: String,
    /// The key clients send. Unique across every consumer.
    pub key: String,
}

/// A basic-auth credential: a username and a password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthCredential {
    /// The credential's id, an entity name; in etcd the last key segment.
    #[serde(default)]
    pub id: String,
    /// The username clients send. Unique across every consumer.
    pub username: String,
    /// The password: an argon2 hash in etcd, possibly plain in a declarative file.
    pub password: Password,
}

/// A basic-auth password: a plain JSON string in config, read as a hash when it is an argon2 PHC
/// string (`$argon2id$v=19$...`), as plain text otherwise.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// An argon2 PHC string.
    Hashed(String),
    /// The password itself.
    Plain(String),
}

/// A jwt credential: which tokens it verifies (by their `iss`) and with what.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSecret {
    /// The credential's id, an entity name; in etcd the last key segment.
    #[serde(default)]
    pub id: String,
    /// The value of the token's `iss` claim (the plugin's `key_claim_name`) this secret matches.
    /// Unique across every consumer.
    pub key: String,
    /// The signing algorithm. Default HS256.
    #[serde(default)]
    pub algorithm: JwtAlgorithm,
    /// The HMAC secret, for HS256, HS384 and HS512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The PEM public key, for RS256 and ES256.
    #[serde(default, alias = "rsa_public_key", skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// A jwt signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256.
    #[default]
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

/// A consumer's credentials, each kind by credential id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Credentials {
    /// key-auth credentials.
    #[serde(rename = "key-auth", skip_serializing_if = "BTreeMap::is_empty")]
    pub key_auth: BTreeMap<String, KeyAuthCredential>,
    /// basic-auth credentials.
    #[serde(rename = "basic-auth", skip_serializing_if = "BTreeMap::is_empty")]
    pub basic_auth: BTreeMap<String, BasicAuthCredential>,
    /// jwt credentials.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub jwt: BTreeMap<String, JwtSecret>,
}

/// The kinds of credential, as they are named in etcd keys and admin paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialKind {
    /// `key-auth`.
    KeyAuth,
    /// `basic-auth`.
    BasicAuth,
    /// `jwt`.
    Jwt,
}

/// One credential of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A key-auth key.
    KeyAuth(KeyAuthCredential),
    /// A basic-auth username and password.
    BasicAuth(BasicAuthCredential),
    /// A jwt secret or public key.
    Jwt(JwtSecret),
}

/// What a secret is replaced with where it must not show.
pub const REDACTED: &str = "<redacted>";

/// The longest key-auth key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

impl Consumer {
    /// Pushes every problem with this consumer onto `errors`, under `path` (`consumers/<name>`).
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        check_name(&self.username, &format!("{path}.username"), errors);
        if self.custom_id.as_deref() == Some("") {
            errors.push(format!("{path}.custom_id"), "may not be empty (leave it out instead)");
        }
        for (i, group) in self.groups.iter().enumerate() {
            if group.trim().is_empty() {
                errors.push(format!("{path}.groups[{i}]"), "may not be empty");
            }
        }
        self.plugins.validate_on_consumer(&format!("{path}.plugins"), errors);
    }
}

impl CredentialKind {
    /// Every kind, in key order.
    pub const ALL: [CredentialKind; 3] = [CredentialKind::KeyAuth, CredentialKind::BasicAuth, CredentialKind::Jwt];

    /// The kind's name in etcd keys and admin paths: `key-auth`, `basic-auth`, `jwt`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::KeyAuth => "key-auth",
            CredentialKind::BasicAuth => "basic-auth",
            CredentialKind::Jwt => "jwt",
        }
    }

    /// The kind named `name` in a key or path.
    pub fn parse(name: &str) -> Option<CredentialKind> {
        CredentialKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The field that identifies a credential of this kind to the plugins, unique across the
    /// config: key-auth `key`, basic-auth `username`, jwt `key`.
    pub fn identity_field(self) -> &'static str {
        match self {
            CredentialKind::BasicAuth => "username",
            CredentialKind::KeyAuth | CredentialKind::Jwt => "key",
        }
    }

    /// The field that holds the secret, which reads and dumps hide.
    pub fn secret_field(self) -> &'static str {
        match self {
            CredentialKind::KeyAuth => "key",
            CredentialKind::BasicAuth => "password",
            CredentialKind::Jwt => "secret",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Credential {
    /// The credential's kind.
    pub fn kind(&self) -> CredentialKind {
        match self {
            Credential::KeyAuth(_) => CredentialKind::KeyAuth,
            Credential::BasicAuth(_) => CredentialKind::BasicAuth,
            Credential::Jwt(_) => CredentialKind::Jwt,
        }
    }

    /// The credential's id.
    pub fn id(&self) -> &str {
        match self {
            Credential::KeyAuth(c) => &c.id,
            Credential::BasicAuth(c) => &c.id,
            Credential::Jwt(c) => &c.id,
        }
    }

    /// What identifies it across the config (see [`CredentialKind::identity_field`]).
    pub fn identity(&self) -> &str {
        match self {
            Credential::KeyAuth(c) => &c.key,
            Credential::BasicAuth(c) => &c.username,
            Credential::Jwt(c) => &c.key,
        }
    }

    /// Pushes every problem onto `errors`, under `path` (`consumers/<u>/<kind>/<id>`).
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        check_name(self.id(), &format!("{path}.id"), errors);
        match self {
            Credential::KeyAuth(c) => c.check(path, errors),
            Credential::BasicAuth(c) => c.check(path, errors),
            Credential::Jwt(c) => c.check(path, errors),
        }
    }

    /// Deserializes a credential of `kind` from its JSON.
    pub fn from_value(
        kind: CredentialKind,
        value: serde_json::Value,
        path: &str,
    ) -> Result<Credential, crate::FieldError> {
        use crate::validate::from_value;
        Ok(match kind {
            CredentialKind::KeyAuth => Credential::KeyAuth(from_value(value, path)?),
            CredentialKind::BasicAuth => Credential::BasicAuth(from_value(value, path)?),
            CredentialKind::Jwt => Credential::Jwt(from_value(value, path)?),
        })
    }

    /// The credential as JSON; with `with_secrets` false, its secret reads `<redacted>`.
    pub fn to_json(&self, with_secrets: bool) -> serde_json::Value {
        let mut value = match self {
            Credential::KeyAuth(c) => serde_json::to_value(c),
            Credential::BasicAuth(c) => serde_json::to_value(c),
            Credential::Jwt(c) => serde_json::to_value(c),
        }
        .expect("credentials serialize");
        if !with_secrets {
            if let Some(secret) = value.get_mut(self.kind().secret_field()) {
                *secret = serde_json::Value::String(REDACTED.to_owned());
            }
        }
        value
    }

    /// The id a declarative file implies for a credential written without one: for key-auth the
    /// first 16 hex digits of the key's SHA-256, for basic-auth the username, for jwt the key.
    pub fn default_id(kind: CredentialKind, identity: &str) -> String {
        match kind {
            CredentialKind::KeyAuth => {
                Sha256::digest(identity.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
            }
            CredentialKind::BasicAuth | CredentialKind::Jwt => identity.to_owned(),
        }
    }
}

impl KeyAuthCredential {
    fn check(&self, path: &str, errors: &mut Errors) {
        let at = format!("{path}.key");
        if self.key.is_empty() {
            errors.push(at, "is required");
        } else if self.key.len() > MAX_KEY_LEN {
            errors.push(at, format!("must be at most {MAX_KEY_LEN} bytes long"));
        } else if !self.key.bytes().all(|b| b.is_ascii_graphic()) {
            errors.push(at, "must be printable ASCII without spaces");
        }
    }
}

impl BasicAuthCredential {
    fn check(&self, path: &str, errors: &mut Errors) {
        if self.username.is_empty() {
            errors.push(format!("{path}.username"), "is required");
        } else if self.username.contains(':') {
            errors.push(format!("{path}.username"), "may not contain ':'");
        }
        match &self.password {
            Password::Plain(p) if p.is_empty() => errors.push(format!("{path}.password"), "is required"),
            Password::Hashed(h) if PasswordHash::new(h).is_err() => {
                errors.push(format!("{path}.password"), "starts with $argon2 but is not an argon2 PHC string")
            }
            _ => {}
        }
    }
}

impl JwtSecret {
    fn check(&self, path: &str, errors: &mut Errors) {
        if self.key.is_empty() {
            errors.push(format!("{path}.key"), "is required");
        }
        match self.algorithm {
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512 => {
                if self.secret.as_deref().is_none_or(str::is_empty) {
                    errors.push(format!("{path}.secret"), format!("is required for {:?}", self.algorithm));
                }
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                let at = format!("{path}.public_key");
                match self.public_key.as_deref().filter(|k| !k.is_empty()) {
                    None => errors.push(at, format!("is required for {:?}", self.algorithm)),
                    Some(pem) => {
                        let parsed = match self.algorithm {
                            JwtAlgorithm::RS256 => jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()),
                            _ => jsonwebtoken::DecodingKey::from_ec_pem(pem.as_bytes()),
                        };
                        if let Err(e) = parsed {
                            let kind = if self.algorithm == JwtAlgorithm::RS256 { "an RSA" } else { "an EC" };
                            errors.push(at, format!("is not {kind} public key in PEM: {e}"));
                        }
                    }
                }
            }
        }
    }
}

impl Password {
    /// An argon2id hash of `plain`, with a random salt and the crate's default parameters.
    pub fn hash(plain: &str) -> Password {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).expect("the OS gives random bytes");
        let hash = Argon2::default()
            .hash_password_with_salt(plain.as_bytes(), &salt)
            .expect("argon2 with its default parameters hashes any password with a 16-byte salt");
        Password::Hashed(hash.to_string())
    }

    /// Whether `candidate` is this password: by argon2 for a hash, in constant time for plain.
    pub fn verify(&self, candidate: &[u8]) -> bool {
        match self {
            Password::Hashed(hash) => match PasswordHash::new(hash) {
                Ok(parsed) => Argon2::default().verify_password(candidate, &parsed).is_ok(),
                Err(_) => false,
            },
            Password::Plain(plain) => constant_time_eq(plain.as_bytes(), candidate),
        }
    }

    /// The password hashed: a plain one is hashed, a hash stays as it is.
    pub fn hashed(self) -> Password {
        match self {
            Password::Plain(plain) => Password::hash(&plain),
            hashed => hashed,
        }
    }

    /// Whether it is a hash.
    pub fn is_hashed(&self) -> bool {
        matches!(self, Password::Hashed(_))
    }

    /// As written in config.
    pub fn as_str(&self) -> &str {
        match self {
            Password::Hashed(s) | Password::Plain(s) => s,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Serialize for Password {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Password, D::Error> {
        let s = String::deserialize(deserializer)?;
        Ok(if s.starts_with("$argon2") { Password::Hashed(s) } else { Password::Plain(s) })
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::Hashed(_) => f.write_str("Hashed(..)"),
            Password::Plain(_) => f.write_str("Plain(..)"),
        }
    }
}

impl fmt::Debug for KeyAuthCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyAuthCredential").field("id", &self.id).field("key", &REDACTED).finish()
    }
}

impl fmt::Debug for BasicAuthCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuthCredential")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSecret")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("algorithm", &self.algorithm)
            .field("secret", &self.secret.as_ref().map(|_| REDACTED))
            .field("public_key", &self.public_key)
            .finish()
    }
}

impl Credentials {
    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.key_auth.is_empty() && self.basic_auth.is_empty() && self.jwt.is_empty()
    }

    /// Every credential, by kind then id.
    pub fn iter(&self) -> impl Iterator<Item = Credential> + '_ {
        let keys = self.key_auth.values().cloned().map(Credential::KeyAuth);
        let basic = self.basic_auth.values().cloned().map(Credential::BasicAuth);
        let jwt = self.jwt.values().cloned().map(Credential::Jwt);
        keys.chain(basic).chain(jwt)
    }

    /// The credential of `kind` with `id`.
    pub fn get(&self, kind: CredentialKind, id: &str) -> Option<Credential> {
        match kind {
            CredentialKind::KeyAuth => self.key_auth.get(id).cloned().map(Credential::KeyAuth),
            CredentialKind::BasicAuth => self.basic_auth.get(id).cloned().map(Credential::BasicAuth),
            CredentialKind::Jwt => self.jwt.get(id).cloned().map(Credential::Jwt),
        }
    }

    /// Adds (or replaces) a credential, under its id.
    pub fn insert(&mut self, credential: Credential) {
        match credential {
            Credential::KeyAuth(c) => {
                self.key_auth.insert(c.id.clone(), c);
            }
            Credential::BasicAuth(c) => {
                self.basic_auth.insert(c.id.clone(), c);
            }
            Credential::Jwt(c) => {
                self.jwt.insert(c.id.clone(), c);
            }
        }
    }

    /// Removes the credential of `kind` with `id`.
    pub fn remove(&mut self, kind: CredentialKind, id: &str) {
        match kind {
            CredentialKind::KeyAuth => {
                self.key_auth.remove(id);
            }
            CredentialKind::BasicAuth => {
                self.basic_auth.remove(id);
            }
            CredentialKind::Jwt => {
                self.jwt.remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const RSA_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA4vJe7kP3pNPFmL4RQYti
x7QCSTS2JsMZfS96Lk9pNCi5XsLkP4rlvuYWdXzIMxj2SBngqiC0unARBvkq27TS
Lfx3fuZOGw9DlO3I2HfrdOt+eUlvqkIe2IbE8/8SKxTKGGr5YRHRRgJzBMC7o4Jq
/xiqMu1hsFQwmwwX0RohTYVbYTghEkAtSjWqlRx5qy6Ft2+bYQ0U1y3g03/f9DYR
5NFx8UlfcHaflfbfvGmQNwSB4NqMWyCOd1vcgXFq/YtdJUZJhuiqpfHN4yc4M/Fd
xMJM36njEmAZ378y8tYC7ntxFMmW5DeNt7zf+hdatAmbwVvSJRUN1y6pyppcEJol
FwIDAQAB
-----END PUBLIC KEY-----
";

    const EC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEBK9B11v6X4YGfmdLXa37mb3L+P7Q
sy/OH/vmGUjMbm5m0xhDBy4y55KdAPMGEIgFo5VIbbUWv0L9xYuYxnsZPQ==
-----END PUBLIC KEY-----
";

    fn errors_of(kind: CredentialKind, json: serde_json::Value) -> Vec<String> {
        let credential = Credential::from_value(kind, json, "c").unwrap();
        let mut errors = Errors::default();
        credential.validate("c", &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn consumers_are_checked_with_paths() {
        let c: Consumer =
            serde_json::from_str(r#"{"username":"a b","custom_id":"","groups":["ok",""],"plugins":{}}"#).unwrap();
        let mut errors = Errors::default();
        c.validate("consumers/a b", &mut errors);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["consumers/a b.username", "consumers/a b.custom_id", "consumers/a b.groups[1]"]);
        assert!(serde_json::from_str::<Consumer>(r#"{"username":"a","colour":1}"#).is_err());
        let bare = serde_json::to_value(Consumer { username: "a".into(), ..serde_json::from_str("{}").unwrap() });
        assert_eq!(bare.unwrap(), serde_json::json!({"username": "a"}), "empty fields are left out");
    }

    #[test]
    fn key_auth_keys_are_printable_ascii_without_spaces() {
        use serde_json::json;
        assert!(errors_of(CredentialKind::KeyAuth, json!({"id": "k", "key": "abc-123_~!"})).is_empty());
        for bad in ["", "a b", "é", "a\tb"] {
            let got = errors_of(CredentialKind::KeyAuth, json!({"id": "k", "key": bad}));
            assert!(got.len() == 1 && got[0].starts_with("c.key: "), "{bad:?}: {got:?}");
        }
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert!(errors_of(CredentialKind::KeyAuth, json!({"id": "k", "key": long}))[0].contains("at most 1024"));
        assert!(errors_of(CredentialKind::KeyAuth, json!({"id": "a/b", "key": "x"}))[0].starts_with("c.id: "));
    }

    #[test]
    fn basic_auth_needs_a_username_without_colon_and_a_password() {
        use serde_json::json;
        let got = errors_of(CredentialKind::BasicAuth, json!({"id": "b", "username": "a:b", "password": ""}));
        assert_eq!(got, ["c.username: may not contain ':'", "c.password: is required"]);
        let got = errors_of(CredentialKind::BasicAuth, json!({"id": "b", "username": "a", "password": "$argon2id$x"}));
        assert!(got[0].starts_with("c.password: starts with $argon2"), "{got:?}");
    }

    #[test]
    fn jwt_needs_the_secret_or_key_its_algorithm_uses() {
        use serde_json::json;
        assert!(errors_of(CredentialKind::Jwt, json!({"id": "j", "key": "iss", "secret": "s"})).is_empty());
        let rsa = json!({"id": "j", "key": "iss", "algorithm": "RS256", "rsa_public_key": RSA_PEM});
        assert!(errors_of(CredentialKind::Jwt, rsa).is_empty(), "Kong's rsa_public_key is read as public_key");
        let ec = json!({"id": "j", "key": "iss", "algorithm": "ES256", "public_key": EC_PEM});
        assert!(errors_of(CredentialKind::Jwt, ec).is_empty());
        let got = errors_of(CredentialKind::Jwt, json!({"id": "j", "key": "", "algorithm": "HS512"}));
        assert_eq!(got, ["c.key: is required", "c.secret: is required for HS512"]);
        let got =
            errors_of(CredentialKind::Jwt, json!({"id": "j", "key": "i", "algorithm": "RS256", "public_key": "nope"}));
        assert!(got[0].starts_with("c.public_key: is not an RSA public key in PEM"), "{got:?}");
        assert!(errors_of(CredentialKind::Jwt, json!({"id": "j", "key": "i", "algorithm": "ES256"}))[0]
            .starts_with("c.public_key: is required"));
        let bad = Credential::from_value(CredentialKind::Jwt, json!({"key": "i", "algorithm": "HS1"}), "c");
        assert!(bad.unwrap_err().to_string().starts_with("c.algorithm: unknown variant"));
    }

    #[test]
    fn passwords_hash_verify_and_read_back() {
        let hashed = Password::hash("s3cret");
        let Password::Hashed(phc) = &hashed else { panic!("a hash") };
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(hashed.verify(b"s3cret") && !hashed.verify(b"s3cre"));
        assert_ne!(Password::hash("s3cret"), hashed, "salted");
        let read: Password = serde_json::from_value(serde_json::json!(phc)).unwrap();
        assert_eq!(read, hashed);
        let plain: Password = serde_json::from_str(r#""s3cret""#).unwrap();
        assert_eq!(plain, Password::Plain("s3cret".into()));
        assert!(plain.verify(b"s3cret") && !plain.verify(b"other"));
        assert!(plain.hashed().verify(b"s3cret"));
        assert_eq!(hashed.clone().hashed(), hashed, "a hash stays");
        assert!(!format!("{:?}", Password::Plain("s3cret".into())).contains("s3cret"));
    }

    #[test]
    fn secrets_do_not_show_in_debug_or_redacted_json() {
        let key = Credential::KeyAuth(KeyAuthCredential { id: "k".into(), key: "topsecret".into() });
        assert!(!format!("{key:?}").contains("topsecret"));
        assert_eq!(key.to_json(false)["key"], REDACTED);
        assert_eq!(key.to_json(true)["key"], "topsecret");
        assert_eq!(Credential::default_id(CredentialKind::KeyAuth, "topsecret").len(), 16);
    }
}
