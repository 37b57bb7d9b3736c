//! TLS on the proxy listener: the server config (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`,
//! session resumption by tickets and by id), with certificates picked per handshake from the
//! config in force; and TLS to `https://` services (`client`).

mod client;
mod store;

pub use client::UpstreamTls;
pub use store::{CertificateStore, Certificates};

use rustls::crypto::{ring, CryptoProvider};
use rustls::server::ServerSessionMemoryCache;
use rustls::ServerConfig;
use std::sync::Arc;

/// Sessions remembered for resumption by id (TLS 1.2 clients without tickets), about 200 bytes each.
const SESSION_CACHE: usize = 10_000;

/// The rustls server config of the TLS proxy listener, asking `certificates` at each handshake.
pub fn server_config(certificates: Arc<Certificates>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The order of `provider` decides, not the client's (which usually puts AES-256 first).
    config.ignore_client_order = true;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = ring::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// ring's suites in Mozilla's "intermediate" order: AES-128-GCM first. rustls (like OpenSSL)
/// would otherwise pick AES-256-GCM-SHA384 for TLS 1.3, and ring's SHA-384 has no vectorized
/// code on x86-64: it was the largest single cost of a full handshake (11% of the CPU of a
/// handshake-a-request load, `perf record`), above X25519.
fn provider() -> CryptoProvider {
    use ring::cipher_suite::*;
    CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..ring::default_provider()
    }
}
