//! Certificates made by the test (a private CA and the leaves it signs, with rcgen), and a TLS
//! client that says which certificate it was served: one connection, HTTP/1.1 or h2 by ALPN.

use crate::http::Reply;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A private certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM: what clients trust.
    pub pem: String,
}

/// A certificate chain and its key, PEM, as a certificate entity holds them.
pub struct Leaf {
    /// The leaf, then its issuers up to (not including) the root.
    pub chain: String,
    /// The leaf's private key.
    pub key: String,
    /// The leaf, DER: what a client sees first.
    pub der: CertificateDer<'static>,
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).expect("empty SANs");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a P-256 key");
        let cert = params.self_signed(&key).expect("a self-signed CA");
        Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A leaf for `names` (DNS names), valid from yesterday for a year.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, |_| {})
    }

    /// A leaf for `names` that expired in 2021.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn leaf_with(&self, names: &[&str], adjust: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("DNS names");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        adjust(&mut params);
        let key = KeyPair::generate().expect("a P-256 key");
        let cert = params.signed_by(&key, &self.issuer).expect("a leaf signed by the CA");
        Leaf { chain: cert.pem(), key: key.serialize_pem(), der: cert.der().clone() }
    }

    /// A server config presenting `leaf`; with `clients`, it demands a client certificate that
    /// CA issued.
    pub fn server_config(leaf: &Leaf, clients: Option<&Ca>) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3");
        let builder = match clients {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("the CA's PEM")).expect("a CA");
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .expect("a client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(leaf.chain.as_bytes()).collect::<Result<_, _>>().expect("the chain's PEM");
        let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("the key's PEM");
        Arc::new(builder.with_single_cert(chain, key).expect("a certificate and its key"))
    }

    /// A client config that trusts this CA only, offering `alpn`.
    pub fn client_config(&self, alpn: &[&str]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        let der = CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("the CA's PEM");
        roots.add(der).expect("a CA certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

/// A TLS connection to `addr` that sent `sni`.
pub async fn connect(addr: SocketAddr, config: Arc<ClientConfig>, sni: &str) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
    TlsConnector::from(config).connect(name, tcp).await
}

/// The leaf certificate the server presented on `stream`.
pub fn served(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    let (_, session) = stream.get_ref();
    session.peer_certificates().expect("a server certificate")[0].clone().into_owned()
}

/// The protocol ALPN chose on `stream`, as text.
pub fn alpn(stream: &TlsStream<TcpStream>) -> String {
    let (_, session) = stream.get_ref();
    String::from_utf8_lossy(session.alpn_protocol().unwrap_or_default()).into_owned()
}

/// One connection's request sender, HTTP/1.1 or h2 as ALPN chose.
pub enum Sender {
    /// HTTP/1.1.
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    /// HTTP/2.
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    /// Speaks the protocol ALPN chose on `stream`.
    pub async fn over(stream: TlsStream<TcpStream>) -> Sender {
        let h2 = alpn(&stream) == "h2";
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.expect("an h2 handshake");
            tokio::spawn(connection);
            Sender::Http2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await.expect("an HTTP/1.1 handshake");
            tokio::spawn(connection);
            Sender::Http1(sender)
        }
    }

    /// GET `https://<authority><path>` on this connection, read whole.
    pub async fn get(&mut self, authority: &str, path: &str) -> Reply {
        let uri = format!("https://{authority}{path}");
        let response = match self {
            // A sender takes a request only once the one before it is done.
            Sender::Http1(s) => {
                let request = Request::get(path).header("host", authority).body(Full::default()).expect("a request");
                match s.ready().await {
                    Ok(()) => s.send_request(request).await,
                    Err(e) => Err(e),
                }
            }
            Sender::Http2(s) => match s.ready().await {
                Ok(()) => s.send_request(Request::get(&uri).body(Full::default()).expect("a request")).await,
                Err(e) => Err(e),
            },
        };
        let response = response.unwrap_or_else(|e| panic!("GET {uri}: {e}"));
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap_or_else(|e| panic!("reading {uri}: {e}")).to_bytes();
        Reply { status: parts.status, headers: parts.headers, body }
    }
}
