//! TLS to upstreams: what an `https://` service connects with. The upstream's certificate is
//! verified against the service's CA certificates (or the system's roots) and the name the
//! service sends as SNI, unless `tls_verify` is off; with `client_certificate` the gateway
//! presents that certificate (mTLS). A handshake that fails is a failed connection, never a
//! fallback to plain text.

use config_sync::model::Service;
use config_sync::Config;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock};
use tokio_rustls::TlsConnector;

/// How a service's connections speak TLS.
pub struct UpstreamTls {
    connector: TlsConnector,
    /// `tls_server_name`; none: each target's host.
    server_name: Option<ServerName<'static>>,
    /// Equal for two services that connect alike: pooled connections are shared by it.
    pub id: u64,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls").field("server_name", &self.server_name).field("id", &self.id).finish()
    }
}

/// The keys of the settings' ids: random per process, so that no config can be made to
/// collide with another's.
static ID_KEYS: LazyLock<std::collections::hash_map::RandomState> = LazyLock::new(Default::default);

/// The system's roots, read once (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured).
static SYSTEM_ROOTS: LazyLock<Arc<RootCertStore>> = LazyLock::new(|| {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "a system root certificate could not be read");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system root certificates loaded");
    Arc::new(roots)
});

impl UpstreamTls {
    /// The TLS settings of `service` (an `https://` one), with the certificates it names from
    /// `config`; why not, when one of them does not load. Settings equal to ones `reuse` still
    /// has are taken from it, with their session cache: a config change elsewhere costs no
    /// upstream a full handshake.
    pub fn new(
        service: &Service,
        config: &Config,
        reuse: impl Fn(u64) -> Option<Arc<UpstreamTls>>,
    ) -> Result<Arc<UpstreamTls>, String> {
        let mut cas = Vec::with_capacity(service.ca_certificates.len());
        for name in &service.ca_certificates {
            let ca = config.ca_certificates.get(name).ok_or_else(|| format!("unknown CA certificate {name:?}"))?;
            cas.push((name, ca));
        }
        let client = match &service.client_certificate {
            None => None,
            Some(name) => {
                Some((name, config.certificates.get(name).ok_or_else(|| format!("unknown certificate {name:?}"))?))
            }
        };
        // What sets the connections apart, each field framed (lengths and option tags), hashed
        // with keys of this process: equal settings share pooled connections.
        let pems: Vec<&str> = cas.iter().map(|(_, ca)| ca.cert.as_str()).collect();
        let identity = client.map(|(_, cert)| (cert.cert.as_str(), cert.key.as_str()));
        let http2 = service.speaks_http2();
        let id = ID_KEYS.hash_one((service.tls_verify, &service.tls_server_name, pems, identity, http2));
        if let Some(same) = reuse(id) {
            return Ok(same);
        }
        let roots = match (service.tls_verify, cas.is_empty()) {
            (false, _) => None,
            (true, true) => Some(SYSTEM_ROOTS.clone()),
            (true, false) => {
                let mut roots = RootCertStore::empty();
                for (name, ca) in cas {
                    for der in ca.certificates().map_err(|e| format!("CA certificate {name:?}: {e}"))? {
                        roots.add(der).map_err(|e| format!("CA certificate {name:?}: {e}"))?;
                    }
                }
                Some(Arc::new(roots))
            }
        };
        let key = match client {
            None => None,
            // Accepted when it was written; expiring since must not take the service away.
            Some((name, cert)) => Some(
                cert.load_even_if_expired().map_err(|(field, e)| format!("certificate {name:?}: {field}: {e}"))?.key,
            ),
        };
        let alpn = if http2 { Alpn::H2 } else { Alpn::Http11 };
        UpstreamTls::build(roots, key, service.tls_server_name.as_deref(), id, alpn).map(Arc::new)
    }

    /// The TLS settings of active `https` probes: the system's roots (or no verification), the
    /// name `sni` or the target's host.
    pub fn probe(verify: bool, sni: Option<&str>) -> Result<UpstreamTls, String> {
        UpstreamTls::build(verify.then(|| SYSTEM_ROOTS.clone()), None, sni, 0, Alpn::Http11)
    }

    /// The TLS settings of active `grpc` probes over TLS: as [`UpstreamTls::probe`], with ALPN `h2`.
    pub fn probe_h2(verify: bool, sni: Option<&str>) -> Result<UpstreamTls, String> {
        UpstreamTls::build(verify.then(|| SYSTEM_ROOTS.clone()), None, sni, 0, Alpn::H2)
    }

    /// Verification against `roots` (none: no verification), `client` presented when asked.
    fn build(
        roots: Option<Arc<RootCertStore>>,
        client: Option<Arc<CertifiedKey>>,
        server_name: Option<&str>,
        id: u64,
        alpn: Alpn,
    ) -> Result<UpstreamTls, String> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match roots {
            None => builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
            Some(roots) => builder.with_root_certificates(roots),
        };
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some(key) => builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key))),
        };
        // Only the one protocol the service speaks is offered: an upstream that cannot speak it
        // fails the handshake rather than answer in another.
        config.alpn_protocols = vec![match alpn {
            Alpn::Http11 => b"http/1.1".to_vec(),
            Alpn::H2 => b"h2".to_vec(),
        }];
        let server_name = match server_name {
            Some(name) => Some(ServerName::try_from(name.to_owned()).map_err(|e| format!("tls_server_name: {e}"))?),
            None => None,
        };
        Ok(UpstreamTls { connector: TlsConnector::from(Arc::new(config)), server_name, id })
    }

    /// The TLS handshake on `stream`, to the target at `authority` (`host:port`).
    pub async fn connect<S>(&self, authority: &str, stream: S) -> std::io::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => target_name(authority)?,
        };
        self.connector.connect(name, stream).await
    }
}

/// The protocol offered in the handshake.
#[derive(Clone, Copy)]
enum Alpn {
    Http11,
    H2,
}

/// The host of `host:port` (`[v6]:port`) as a server name.
fn target_name(authority: &str) -> std::io::Result<ServerName<'static>> {
    let host = match authority.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => authority,
    };
    ServerName::try_from(host.to_owned()).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// `tls_verify: false`: any certificate, any name. The handshake's signatures are still
/// checked, so the peer holds the key of the certificate it showed.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names() {
        assert_eq!(target_name("api.internal:443").unwrap(), ServerName::try_from("api.internal").unwrap());
        assert!(matches!(target_name("10.0.0.1:443").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(target_name("[::1]:8443").unwrap(), ServerName::IpAddress(_)));
    }
}
