//! The client of a request.

use http::HeaderValue;
use std::net::SocketAddr;

/// What is known of the client of a request, with the header values made from it
/// once per connection rather than once per request.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The port the client connected to.
    pub local_port: u16,
    /// Whether the connection is TLS (the `proxy_listen_tls` listener).
    pub https: bool,
    /// The client's IP as text (an IPv4-mapped IPv6 address as IPv4).
    ip: HeaderValue,
    /// The port the client used, as text: `local_port`, or what a trusted proxy named.
    port: HeaderValue,
    /// When a trusted proxy named the client: the IP that connected (the TCP peer, or the PROXY
    /// protocol source), which `X-Forwarded-For` appends, as Kong's `realip_remote_addr`.
    proxied_by: Option<HeaderValue>,
}

impl ClientInfo {
    /// A client at `peer` that connected to `local_port`.
    pub fn new(peer: SocketAddr, local_port: u16) -> ClientInfo {
        let ip = HeaderValue::try_from(peer.ip().to_canonical().to_string()).expect("an IP address is a valid header");
        ClientInfo { peer, local_port, https: false, ip, port: HeaderValue::from(local_port), proxied_by: None }
    }

    /// This client, on a TLS connection.
    pub fn over_tls(self) -> ClientInfo {
        ClientInfo { https: true, ..self }
    }

    /// This client, as a trusted proxy says: it connected to `port` (the proxy's port).
    pub fn forwarded_to_port(self, port: u16) -> ClientInfo {
        ClientInfo { port: HeaderValue::from(port), ..self }
    }

    /// The client at `real` that this connection's trusted peer named (`crate::client_address`).
    pub fn behind_proxy(&self, real: SocketAddr) -> ClientInfo {
        let client = ClientInfo::new(real, self.local_port);
        ClientInfo { proxied_by: Some(self.ip.clone()), port: self.port.clone(), https: self.https, ..client }
    }

    /// The client's IP as text.
    pub fn ip_text(&self) -> &str {
        self.ip.to_str().expect("made from an IP address")
    }

    /// The client's IP as a header value (`X-Real-IP`, `X-Forwarded-For`).
    pub fn ip_value(&self) -> &HeaderValue {
        &self.ip
    }

    /// The IP that connected to this node (a trusted proxy's, when one named the client), as a
    /// header value.
    pub fn connected_value(&self) -> &HeaderValue {
        self.proxied_by.as_ref().unwrap_or(&self.ip)
    }

    /// The scheme the client used, as a header value (`X-Forwarded-Proto`).
    pub fn scheme_value(&self) -> HeaderValue {
        HeaderValue::from_static(if self.https { "https" } else { "http" })
    }

    /// The port the client used, as a header value (`X-Forwarded-Port`).
    pub fn port_value(&self) -> &HeaderValue {
        &self.port
    }
}
