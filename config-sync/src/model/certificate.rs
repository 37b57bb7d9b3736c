//! TLS certificates the proxy listener serves (each with the server names it is for), and CA
//! certificates that upstreams are verified against.
//!
//! A certificate is checked whole when it is read: the PEM chain parses, leaf first and each
//! certificate issued by the next; the private key is one rustls can sign with and belongs to the
//! leaf; the leaf has not expired. [`Certificate::load`] gives the gateway what it serves, from
//! the same parse.

use super::check_name;
use crate::validate::Errors;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// A certificate chain and its key, served to clients whose SNI is one of `snis`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// In etcd, the last key segment; the body may repeat it.
    #[serde(default)]
    pub name: String,
    /// PEM: the leaf first, then the intermediates that issued it, in order.
    pub cert: String,
    /// The leaf's private key, PEM (PKCS#8, PKCS#1 or SEC1). A secret.
    pub key: String,
    /// Server names: `api.example.com`, or `*.example.com` for any one label in front of
    /// `example.com`. An exact name wins over a wildcard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snis: Vec<String>,
    /// Served when the client sends no SNI, or one no certificate names.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("name", &self.name)
            .field("snis", &self.snis)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

/// A CA certificate (or a bundle of them), PEM, that upstream certificates may chain to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaCertificate {
    /// In etcd, the last key segment; the body may repeat it.
    #[serde(default)]
    pub name: String,
    /// PEM, one certificate or more.
    pub cert: String,
}

/// A certificate ready to serve.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The chain and the key that signs for it.
    pub key: Arc<CertifiedKey>,
    /// When the leaf expires.
    pub not_after: SystemTime,
}

impl Certificate {
    /// Checks every field, as [`Certificate::load`] would, under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        check_name(&self.name, &format!("{path}.name"), errors);
        for (i, sni) in self.snis.iter().enumerate() {
            if let Err(message) = check_sni(sni) {
                errors.push(format!("{path}.snis[{i}]"), message);
            }
        }
        if let Err((field, message)) = self.parse(SystemTime::now()) {
            errors.push(format!("{path}.{field}"), message);
        }
    }

    /// The chain and key, ready to serve; the field at fault and why, when they are not.
    pub fn load(&self) -> Result<Loaded, (&'static str, String)> {
        self.parse(SystemTime::now())
    }

    /// As [`Certificate::load`], but an expired leaf loads too: for one already accepted and in
    /// use (a client certificate), which an unrelated config change must not take away.
    pub fn load_even_if_expired(&self) -> Result<Loaded, (&'static str, String)> {
        self.parse(SystemTime::UNIX_EPOCH)
    }

    fn parse(&self, now: SystemTime) -> Result<Loaded, (&'static str, String)> {
        let chain = certificates(&self.cert).map_err(|m| ("cert", m))?;
        let not_after = check_chain(&chain, now).map_err(|m| ("cert", m))?;
        let key = PrivateKeyDer::from_pem_slice(self.key.as_bytes())
            .map_err(|_| ("key", "is not a PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned()))?;
        let signer = any_supported_type(&key).map_err(|e| ("key", format!("cannot sign with it: {e}")))?;
        let key = CertifiedKey::new(chain, signer);
        key.keys_match().map_err(|_| ("key", "does not match the certificate".to_owned()))?;
        Ok(Loaded { key: Arc::new(key), not_after })
    }
}

impl CaCertificate {
    /// Checks every field under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        check_name(&self.name, &format!("{path}.name"), errors);
        if let Err(message) = self.certificates() {
            errors.push(format!("{path}.cert"), message);
        }
    }

    /// The certificates, DER.
    pub fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let certs = certificates(&self.cert)?;
        for (i, der) in certs.iter().enumerate() {
            X509Certificate::from_der(der).map_err(|e| format!("certificate {i} does not parse: {e}"))?;
        }
        Ok(certs)
    }
}

/// The PEM certificates in `pem`, in order; an error when there is none or one is not base64.
fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

/// Checks that each certificate parses and is issued by the next, and that the leaf has not
/// expired; when the leaf expires.
fn check_chain(chain: &[CertificateDer<'_>], now: SystemTime) -> Result<SystemTime, String> {
    let parsed = chain
        .iter()
        .enumerate()
        .map(|(i, der)| match X509Certificate::from_der(der) {
            Ok((_, cert)) => Ok(cert),
            Err(e) => Err(format!("certificate {i} does not parse: {e}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer() != pair[1].subject() {
            return Err(format!(
                "the chain is out of order: certificate {i} ({}) is not issued by certificate {} ({}); \
                 put the leaf first, then each issuer",
                pair[0].subject(),
                i + 1,
                pair[1].subject()
            ));
        }
    }
    let leaf = &parsed[0];
    let seconds = leaf.validity().not_after.timestamp();
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    if not_after <= now {
        return Err(format!("expired at {} ({})", leaf.validity().not_after, leaf.subject()));
    }
    Ok(not_after)
}

/// Checks a server name: lowercase DNS labels, or `*.` and at least two labels.
fn check_sni(sni: &str) -> Result<(), String> {
    let name = sni.strip_prefix("*.").unwrap_or(sni);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if sni.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{sni:?} is not a server name: lowercase labels of a-z, 0-9 and -, joined by dots"));
    }
    if sni.starts_with("*.") && !name.contains('.') {
        return Err(format!("{sni:?}: a wildcard needs at least two labels after it, as *.example.com"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        for good in ["api.example.com", "*.example.com", "localhost", "a-1.b2"] {
            assert!(check_sni(good).is_ok(), "{good}");
        }
        for bad in ["API.example.com", "*.com", "a..b", "-a.b", "a.*.b", "*", "", "a b", "ex_ample.com"] {
            assert!(check_sni(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn what_is_not_pem_is_told() {
        assert_eq!(certificates("nothing here").unwrap_err(), "holds no PEM certificate");
        let cert = Certificate {
            name: "c".into(),
            cert: "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".into(),
            key: String::new(),
            snis: vec![],
            default: false,
        };
        let mut errors = Errors::default();
        cert.validate("certificates/c", &mut errors);
        let errors = errors.into_vec();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "certificates/c.cert");
    }

    /// A CA, an intermediate it signs, and a leaf for `a.example` the intermediate signs: the
    /// three PEMs and the leaf's key.
    fn chain(not_after: Option<(i32, u8, u8)>) -> ([String; 3], String) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_params = |name: &str| {
            let mut p = CertificateParams::new(Vec::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            p
        };
        let root_key = KeyPair::generate().unwrap();
        let root = ca_params("root").self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(ca_params("root"), root_key);
        let mid_key = KeyPair::generate().unwrap();
        let mid = ca_params("mid").signed_by(&mid_key, &root_issuer).unwrap();
        let mid_issuer = Issuer::new(ca_params("mid"), mid_key);
        let mut leaf_params = CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        leaf_params.distinguished_name.push(DnType::CommonName, "a.example");
        if let Some((y, m, d)) = not_after {
            leaf_params.not_before = rcgen::date_time_ymd(y - 1, m, d);
            leaf_params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &mid_issuer).unwrap();
        ([leaf.pem(), mid.pem(), root.pem()], leaf_key.serialize_pem())
    }

    fn problems(cert: &str, key: &str) -> Vec<String> {
        let certificate =
            Certificate { name: "c".into(), cert: cert.into(), key: key.into(), snis: vec![], default: false };
        let mut errors = Errors::default();
        certificate.validate("certificates/c", &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_chain_in_order_with_its_key_loads() {
        let ([leaf, mid, _], key) = chain(None);
        assert_eq!(problems(&format!("{leaf}{mid}"), &key), Vec::<String>::new());
        let certificate =
            Certificate { name: "c".into(), cert: format!("{leaf}{mid}"), key, snis: vec![], default: false };
        let loaded = certificate.load().unwrap();
        assert_eq!(loaded.key.cert.len(), 2);
        assert!(loaded.not_after > SystemTime::now());
    }

    #[test]
    fn a_chain_out_of_order_is_refused() {
        let ([leaf, mid, root], key) = chain(None);
        let got = problems(&format!("{mid}{leaf}"), &key);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("certificates/c.cert: the chain is out of order: certificate 0"), "{got:?}");
        // A gap (the leaf, then the root that did not issue it) is out of order too.
        let got = problems(&format!("{leaf}{root}"), &key);
        assert!(got[0].contains("out of order"), "{got:?}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let ([leaf, ..], _) = chain(None);
        let (_, other_key) = chain(None);
        assert_eq!(problems(&leaf, &other_key), ["certificates/c.key: does not match the certificate"]);
        let got = problems(&leaf, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        assert!(got[0].starts_with("certificates/c.key: cannot sign with it"), "{got:?}");
        assert!(problems(&leaf, "not a key")[0].starts_with("certificates/c.key: is not a PEM private key"));
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let ([leaf, ..], key) = chain(Some((2021, 1, 1)));
        let got = problems(&leaf, &key);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("certificates/c.cert: expired at"), "{got:?}");
    }

    #[test]
    fn a_certificate_in_use_loads_after_it_expires() {
        let ([leaf, ..], key) = chain(Some((2021, 1, 1)));
        let certificate = Certificate { name: "c".into(), cert: leaf, key, snis: vec![], default: false };
        assert!(certificate.load().unwrap_err().1.starts_with("expired at"));
        let loaded = certificate.load_even_if_expired().unwrap();
        assert!(loaded.not_after < SystemTime::now());
    }

    #[test]
    fn ca_certificates_parse_or_say_why() {
        let ([_, mid, root], _) = chain(None);
        let ca = CaCertificate { name: "ca".into(), cert: format!("{root}{mid}") };
        assert_eq!(ca.certificates().unwrap().len(), 2);
        let bad = CaCertificate { name: "ca".into(), cert: "junk".into() };
        let mut errors = Errors::default();
        bad.validate("ca_certificates/ca", &mut errors);
        assert_eq!(errors.into_vec()[0].to_string(), "ca_certificates/ca.cert: holds no PEM certificate");
    }

    #[test]
    fn debug_shows_no_key() {
        let cert = Certificate {
            name: "c".into(),
            cert: String::new(),
            key: "SECRET".into(),
            snis: vec!["a.example".into()],
            default: true,
        };
        assert!(!format!("{cert:?}").contains("SECRET"));
    }
}
