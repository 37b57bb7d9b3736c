//! TLS on the proxy listener: the server config (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`,
//! session resumption by tickets and by id), with certificates picked per handshake from the
//! config in force; and TLS to `https://` services (`client`).

mod client;
mod store;

pub use client::UpstreamTls;
pub use store::{CertificateStore, Certificates};

use rustls::crypto::ring;
use rustls::server::ServerSessionMemoryCache;
use rustls::ServerConfig;
use std::sync::Arc;

/// Sessions remembered for resumption by id (TLS 1.2 clients without tickets), about 200 bytes each.
const SESSION_CACHE: usize = 10_000;

/// The rustls server config of the TLS proxy listener, asking `certificates` at each handshake.
pub fn server_config(certificates: Arc<Certificates>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = ring::Ticketer::new()?;
    Ok(Arc::new(config))
}
