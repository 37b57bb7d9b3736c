//! The certificates a node serves, by server name, swapped whole with the config.
//!
//! A client's SNI picks a certificate: an exact name first, then a wildcard (`*.example.com`
//! covers one label in front of `example.com`), then the default certificate; with none of these
//! the handshake fails. Handshakes under way keep the certificate they picked; the next picks
//! from the new set, so a rotation drops no connection.

use arc_swap::ArcSwap;
use config_sync::model::{Certificate, LoadedCertificate};
use config_sync::Config;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

/// The certificates of one config, indexed for the handshake.
#[derive(Default)]
pub struct CertificateStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the name after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// Every certificate loaded, by name, with what it was loaded from.
    loaded: HashMap<String, (Certificate, LoadedCertificate)>,
}

impl CertificateStore {
    /// The certificates of `config`; those equal to one of `previous` are not parsed again.
    /// A name two certificates claim goes to the first by name, as config validation says.
    pub fn build(config: &Config, previous: &CertificateStore) -> CertificateStore {
        let mut store = CertificateStore::default();
        for (name, certificate) in &config.certificates {
            let loaded = match previous.loaded.get(name) {
                Some((was, loaded)) if was == certificate => loaded.clone(),
                _ => match certificate.load() {
                    Ok(loaded) => loaded,
                    // Validated when read, so only a clock that passed its expiry since.
                    Err((field, message)) => {
                        tracing::warn!(certificate = %name, field, %message, "certificate not served");
                        continue;
                    }
                },
            };
            for sni in &certificate.snis {
                let (names, sni) = match sni.strip_prefix("*.") {
                    Some(rest) => (&mut store.wildcard, rest),
                    None => (&mut store.exact, sni.as_str()),
                };
                names.entry(sni.to_owned()).or_insert_with(|| loaded.key.clone());
            }
            if certificate.default && store.default.is_none() {
                store.default = Some(loaded.key.clone());
            }
            store.loaded.insert(name.clone(), (certificate.clone(), loaded));
        }
        store
    }

    /// The certificate for a client that sent `sni`.
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = sni.and_then(|sni| {
            let lower;
            let sni = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
                lower = sni.to_ascii_lowercase();
                lower.as_str()
            } else {
                sni
            };
            self.exact.get(sni).or_else(|| {
                let (_, parent) = sni.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        found.or(self.default.as_ref()).cloned()
    }

    /// Each certificate's name and when its leaf expires.
    pub fn expiries(&self) -> impl Iterator<Item = (&str, SystemTime)> {
        self.loaded.iter().map(|(name, (_, loaded))| (name.as_str(), loaded.not_after))
    }

    /// Whether there is no certificate at all.
    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty()
    }
}

/// The certificate set in force, which the TLS listener asks at each handshake.
#[derive(Default)]
pub struct Certificates {
    current: ArcSwap<CertificateStore>,
    /// Served when the config has nothing for a client (`proxy_tls_self_signed`).
    fallback: OnceLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// The set in force.
    pub fn load(&self) -> Arc<CertificateStore> {
        self.current.load_full()
    }

    /// Serves the certificates of `config` from the next handshake on.
    pub fn update(&self, config: &Config) {
        let next = CertificateStore::build(config, &self.current.load());
        self.current.store(Arc::new(next));
    }

    /// Serves a self-signed certificate for `name`, made now, to every client the config has no
    /// certificate for (a config's own default still comes first). Once per node.
    pub fn fall_back_to_self_signed(&self, name: &str) -> Result<(), String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .and_then(|params| params.self_signed(&key))
            .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::try_from(key.serialize_der()).map_err(str::to_owned)?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| e.to_string())?;
        let certified = Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer));
        self.fallback.set(certified).map_err(|_| "a fallback certificate is already set".to_owned())
    }
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").field("count", &self.current.load().loaded.len()).finish()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let picked = self.current.load().pick(hello.server_name()).or_else(|| self.fallback.get().cloned());
        if picked.is_none() {
            tracing::debug!(sni = hello.server_name().unwrap_or(""), "no certificate for the client's server name");
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn certificate(name: &str, snis: &[&str], default: bool) -> Certificate {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![format!("{name}.test")]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        Certificate {
            name: name.into(),
            cert: cert.pem(),
            key: key.serialize_pem(),
            snis: snis.iter().map(|s| s.to_string()).collect(),
            default,
        }
    }

    fn config(certificates: Vec<Certificate>) -> Config {
        Config { certificates: certificates.into_iter().map(|c| (c.name.clone(), c)).collect(), ..Config::default() }
    }

    /// The name of the certificate a client sending `sni` gets.
    fn picked(store: &CertificateStore, sni: Option<&str>) -> Option<String> {
        let key = store.pick(sni)?;
        let (name, _) = store.loaded.iter().find(|(_, (_, loaded))| Arc::ptr_eq(&loaded.key, &key))?;
        Some(name.clone())
    }

    #[test]
    fn exact_names_win_over_wildcards_and_the_default_takes_the_rest() {
        let store = CertificateStore::build(
            &config(vec![
                certificate("exact", &["api.example.com"], false),
                certificate("wild", &["*.example.com"], false),
                certificate("fallback", &[], true),
            ]),
            &CertificateStore::default(),
        );
        assert_eq!(picked(&store, Some("api.example.com")).as_deref(), Some("exact"));
        assert_eq!(picked(&store, Some("API.Example.COM")).as_deref(), Some("exact"));
        assert_eq!(picked(&store, Some("web.example.com")).as_deref(), Some("wild"));
        // One label only, as in certificates.
        assert_eq!(picked(&store, Some("a.b.example.com")).as_deref(), Some("fallback"));
        assert_eq!(picked(&store, Some("example.com")).as_deref(), Some("fallback"));
        assert_eq!(picked(&store, None).as_deref(), Some("fallback"));
    }

    #[test]
    fn without_a_default_an_unknown_name_gets_nothing() {
        let store = CertificateStore::build(
            &config(vec![certificate("exact", &["api.example.com"], false)]),
            &CertificateStore::default(),
        );
        assert!(store.pick(Some("other.example.com")).is_none());
        assert!(store.pick(None).is_none());
    }

    #[test]
    fn the_first_by_name_keeps_a_name_two_claim() {
        let store = CertificateStore::build(
            &config(vec![certificate("b", &["x.example"], true), certificate("a", &["x.example"], true)]),
            &CertificateStore::default(),
        );
        assert_eq!(picked(&store, Some("x.example")).as_deref(), Some("a"));
        assert_eq!(picked(&store, None).as_deref(), Some("a"));
    }

    #[test]
    fn unchanged_certificates_are_not_loaded_again() {
        let first = config(vec![certificate("a", &["a.example"], false), certificate("b", &["b.example"], false)]);
        let before = CertificateStore::build(&first, &CertificateStore::default());
        let mut second = first.clone();
        second.certificates.insert("b".into(), certificate("b", &["b.example"], false));
        let after = CertificateStore::build(&second, &before);
        assert!(Arc::ptr_eq(&before.loaded["a"].1.key, &after.loaded["a"].1.key));
        assert!(!Arc::ptr_eq(&before.loaded["b"].1.key, &after.loaded["b"].1.key));
    }
}
