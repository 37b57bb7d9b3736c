//! The client's real address behind trusted proxies: nginx's realip module (`set_real_ip_from`,
//! `real_ip_header`, `real_ip_recursive`), as Kong's `trusted_ips`, `real_ip_header` and
//! `real_ip_recursive` settings expose it.
//!
//! Only a connection whose peer (the TCP peer, or the PROXY protocol source when the listener
//! expects one) is in `trusted_ips` may name another client, in `real_ip_header`. The header is
//! a list of addresses, oldest first (`client, proxy1, proxy2`), each an IP with or without a
//! port, IPv6 in brackets when it has one. Without `real_ip_recursive`, the rightmost entry is
//! the client. With it, entries are walked from the right, those that are themselves trusted
//! are skipped, and the first untrusted one is the client (the leftmost, if all are trusted).
//! An entry the walk reaches that is not an IP address, or a header over [`MAX_HEADER_BYTES`],
//! leaves the peer as the client. From an untrusted peer the header is ignored.
//!
//! The trust check is made once per connection; only a trusted peer's requests pay for reading
//! the header, and only a request that names another client gets a [`ClientInfo`] of its own.

use crate::exchange::ClientInfo;
use http::header::{HeaderMap, HeaderName};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// A longer `real_ip_header` (all its fields together) is not read: no honest chain of proxies
/// is that long, and the peer stays the client.
pub const MAX_HEADER_BYTES: usize = 4096;

/// `real_ip_header`'s value that names no header: the client is the connection's peer (the
/// PROXY protocol source), as nginx's `real_ip_header proxy_protocol`.
const PROXY_PROTOCOL: &str = "proxy_protocol";

/// Who a listener's clients are.
#[derive(Debug, Clone, Default)]
pub struct Addressing {
    /// Every connection begins with a PROXY protocol header naming its client (`proxy_protocol`).
    pub proxy_protocol: bool,
    /// Whose word about the client is taken, and where; None when nobody's is (`trusted_ips`
    /// empty, the default).
    pub real_ip: Option<Arc<RealIp>>,
}

impl Addressing {
    /// From the settings `trusted_ips`, `real_ip_header`, `real_ip_recursive` and
    /// `proxy_protocol`; the error names the bad setting.
    pub fn new(real_ip: RealIp, proxy_protocol: bool) -> Addressing {
        let real_ip = (!real_ip.trusts_none()).then(|| Arc::new(real_ip));
        Addressing { proxy_protocol, real_ip }
    }
}

/// The addresses whose word about the client is taken: `trusted_ips`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses CIDRs and single addresses, v4 and v6; the error names the first bad entry.
    /// Blank entries are skipped.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for entry in entries.into_iter().map(str::trim).filter(|e| !e.is_empty()) {
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => match entry.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => return Err(format!("`{entry}` is not an IP address or a CIDR")),
                },
            };
            nets.push(net);
        }
        Ok(TrustedProxies { nets })
    }

    /// Whether none are trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is trusted. An IPv4-mapped IPv6 address is taken as the IPv4 address it
    /// maps, so that `127.0.0.1/32` covers a dual-stack listener's `::ffff:127.0.0.1`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }
}

impl From<TrustedProxies> for Vec<IpNet> {
    fn from(trusted: TrustedProxies) -> Vec<IpNet> {
        trusted.nets
    }
}

/// How the client's address is found behind trusted proxies.
#[derive(Debug)]
pub struct RealIp {
    trusted: TrustedProxies,
    /// None for `real_ip_header = proxy_protocol`: no header is read.
    header: Option<HeaderName>,
    recursive: bool,
}

const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_PORT: &str = "x-forwarded-port";

impl RealIp {
    /// From the settings `trusted_ips`, `real_ip_header` and `real_ip_recursive`; the error
    /// says what is wrong with `header`.
    pub fn new(trusted_ips: &[IpNet], header: &str, recursive: bool) -> Result<RealIp, String> {
        let trusted = TrustedProxies { nets: trusted_ips.to_vec() };
        let header = if header.trim().eq_ignore_ascii_case(PROXY_PROTOCOL) {
            None
        } else {
            let name = HeaderName::from_bytes(header.trim().as_bytes())
                .map_err(|_| format!("`{header}` is not a header name"))?;
            Some(name)
        };
        Ok(RealIp { trusted, header, recursive })
    }

    /// Whether a peer at `ip` is trusted to name the client; when none is, the node never
    /// looks at the header.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.contains(ip)
    }

    /// Whether no peer is trusted (`trusted_ips` empty).
    pub fn trusts_none(&self) -> bool {
        self.trusted.is_empty()
    }

    /// The client of a request from the trusted peer `connection` carrying `headers`: the
    /// connection's own `ClientInfo` (shared, nothing made) unless the headers say otherwise.
    /// As in Kong, a trusted proxy's word is taken on three things: the client's address
    /// (`real_ip_header`), `X-Forwarded-Proto: https` (it ended TLS: for routes' `protocols` and
    /// the `X-Forwarded-Proto` sent upstream), and `X-Forwarded-Port` (the port its client used).
    pub fn client(&self, connection: &Arc<ClientInfo>, headers: &HeaderMap) -> Arc<ClientInfo> {
        let https = !connection.https
            && headers.get(X_FORWARDED_PROTO).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        let port = headers
            .get(X_FORWARDED_PORT)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u16>().ok())
            .filter(|&port| port != 0 && port != connection.local_port);
        let real = self.resolve(headers).filter(|real| real.ip().to_canonical() != connection.peer.ip().to_canonical());
        if real.is_none() && !https && port.is_none() {
            return connection.clone();
        }
        let mut client = match real {
            Some(real) => connection.behind_proxy(real),
            None => (**connection).clone(),
        };
        if https {
            client = client.over_tls();
        }
        if let Some(port) = port {
            client = client.forwarded_to_port(port);
        }
        Arc::new(client)
    }

    /// The client that `headers` name (every field of the header, in the order they came, is
    /// one list), or None when the peer stays the client. The port is 0 when the entry has none.
    pub fn resolve(&self, headers: &HeaderMap) -> Option<SocketAddr> {
        let fields = headers.get_all(self.header.as_ref()?);
        if fields.iter().map(|v| v.len()).sum::<usize>() > MAX_HEADER_BYTES {
            return None;
        }
        let mut entries = fields
            .iter()
            .rev()
            .map(|v| v.as_bytes())
            .flat_map(|field| field.rsplit(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|entry| !entry.is_empty());
        let mut found = None;
        for entry in &mut entries {
            let addr = parse_entry(entry)?;
            found = Some(addr);
            if !self.recursive || !self.trusted.contains(addr.ip()) {
                break;
            }
        }
        found
    }
}

/// An address in a forwarding header: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:443`.
fn parse_entry(entry: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let ip = text.strip_prefix('[')?.strip_suffix(']')?.parse::<Ipv6Addr>().ok()?;
    Some(SocketAddr::new(IpAddr::V6(ip), 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real_ip(trusted: &[&str], recursive: bool) -> RealIp {
        let trusted: Vec<IpNet> = TrustedProxies::parse(trusted.iter().copied()).unwrap().into();
        RealIp::new(&trusted, "X-Forwarded-For", recursive).unwrap()
    }

    #[test]
    fn a_trusted_proxy_that_ended_tls_makes_the_client_https() {
        let r = real_ip(&["127.0.0.1/32"], true);
        let connection = Arc::new(ClientInfo::new("127.0.0.1:5000".parse().unwrap(), 8000));
        let mut headers = HeaderMap::new();
        assert!(!r.client(&connection, &headers).https);
        headers.insert("x-forwarded-proto", http::HeaderValue::from_static("HTTPS"));
        assert!(r.client(&connection, &headers).https);
        headers.insert("x-forwarded-for", http::HeaderValue::from_static("203.0.113.7"));
        let client = r.client(&connection, &headers);
        assert!(client.https && client.ip_text() == "203.0.113.7");
        headers.insert("x-forwarded-proto", http::HeaderValue::from_static("http"));
        assert!(!r.client(&connection, &headers).https);
    }

    #[test]
    fn a_trusted_proxy_names_the_port_its_client_used() {
        let r = real_ip(&["127.0.0.1/32"], true);
        let connection = Arc::new(ClientInfo::new("127.0.0.1:5000".parse().unwrap(), 8000));
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-port", http::HeaderValue::from_static("443"));
        let client = r.client(&connection, &headers);
        assert_eq!((client.port_value().as_bytes(), client.local_port), (&b"443"[..], 8000));
        for bad in ["", "0", "65536", "443x", "-1"] {
            headers.insert("x-forwarded-port", http::HeaderValue::from_static(bad));
            assert!(Arc::ptr_eq(&r.client(&connection, &headers), &connection), "{bad}");
        }
    }

    fn header(fields: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for field in fields {
            headers.append("x-forwarded-for", http::HeaderValue::from_bytes(field).unwrap());
        }
        headers
    }

    fn resolve(r: &RealIp, fields: &[&str]) -> Option<String> {
        let fields: Vec<&[u8]> = fields.iter().map(|f| f.as_bytes()).collect();
        r.resolve(&header(&fields)).map(|a| a.ip().to_string())
    }

    #[test]
    fn entries_are_cidrs_or_addresses_of_either_family() {
        let t = TrustedProxies::parse(["10.0.0.0/8", " 192.168.1.7 ", "2001:db8::/32", "::1", "", "172.16.5.4/12"])
            .unwrap();
        for yes in ["10.1.2.3", "192.168.1.7", "2001:db8::5", "::1", "172.31.0.1", "::ffff:10.9.9.9"] {
            assert!(t.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in ["11.0.0.1", "192.168.1.8", "2001:db9::1", "::2", "172.32.0.1"] {
            assert!(!t.contains(no.parse().unwrap()), "{no}");
        }
        assert!(TrustedProxies::parse([]).unwrap().is_empty());
        for bad in ["10.0.0.0/33", "10.0.0", "example.com", "::1/129", "1.2.3.4:80"] {
            let e = TrustedProxies::parse(["127.0.0.1", bad]).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_header_is_a_header_name_or_proxy_protocol() {
        let e = RealIp::new(&[], "bad header", true).unwrap_err();
        assert_eq!(e, "`bad header` is not a header name");
        assert!(RealIp::new(&[], "proxy_protocol", true).unwrap().header.is_none());
    }

    #[test]
    fn recursive_skips_trusted_entries_from_the_right() {
        let r = real_ip(&["10.0.0.0/8"], true);
        assert_eq!(resolve(&r, &["203.0.113.7"]).as_deref(), Some("203.0.113.7"));
        assert_eq!(resolve(&r, &["1.1.1.1, 203.0.113.7, 10.0.0.2, 10.0.0.3"]).as_deref(), Some("203.0.113.7"));
        // Fields of the header repeated are one list, in order.
        assert_eq!(resolve(&r, &["1.1.1.1, 203.0.113.7", "10.0.0.2"]).as_deref(), Some("203.0.113.7"));
        // All trusted: the leftmost.
        assert_eq!(resolve(&r, &["10.0.0.9, 10.0.0.2"]).as_deref(), Some("10.0.0.9"));
        // Empty entries and spaces are nothing.
        assert_eq!(resolve(&r, &[" ,203.0.113.7 ,, 10.0.0.2 ,"]).as_deref(), Some("203.0.113.7"));
        assert_eq!(resolve(&r, &[]), None);
        assert_eq!(resolve(&r, &[" , "]), None);
    }

    #[test]
    fn not_recursive_takes_the_rightmost() {
        let r = real_ip(&["10.0.0.0/8"], false);
        assert_eq!(resolve(&r, &["1.1.1.1, 203.0.113.7, 10.0.0.2"]).as_deref(), Some("10.0.0.2"));
        assert_eq!(resolve(&r, &["1.1.1.1", "203.0.113.7"]).as_deref(), Some("203.0.113.7"));
        // Only the rightmost is looked at.
        assert_eq!(resolve(&r, &["garbage, 203.0.113.7"]).as_deref(), Some("203.0.113.7"));
    }

    #[test]
    fn ports_brackets_and_ipv6() {
        let r = real_ip(&["2001:db8::/32", "10.0.0.1"], true);
        let got = r.resolve(&header(&[b"203.0.113.7:4711, 10.0.0.1:80"])).unwrap();
        assert_eq!(got, "203.0.113.7:4711".parse().unwrap());
        assert_eq!(resolve(&r, &["2001:db9::7, 2001:db8::1"]).as_deref(), Some("2001:db9::7"));
        assert_eq!(resolve(&r, &["[2001:db9::7]:443, [2001:db8::1]"]).as_deref(), Some("2001:db9::7"));
        assert_eq!(resolve(&r, &["[2001:db9::7], [2001:db8::1]:8080"]).as_deref(), Some("2001:db9::7"));
        assert_eq!(resolve(&r, &["::ffff:198.51.100.1"]).as_deref(), Some("::ffff:198.51.100.1"));
    }

    #[test]
    fn garbage_the_walk_reaches_leaves_the_peer() {
        let r = real_ip(&["10.0.0.0/8"], true);
        for garbage in [
            "unknown",
            "203.0.113.7, not-an-ip",
            "203.0.113.7, 10.0.0.2 10.0.0.3",
            "1.2.3.4, bogus, 10.0.0.2",
            "[203.0.113.7]",
            "[2001:db8::1",
            "2001:db8::1]:80",
            "1.2.3.4:99999",
            "1.2.3.4/24",
            "\u{e9}t\u{e9}",
        ] {
            assert_eq!(resolve(&r, &[garbage]), None, "{garbage}");
        }
        // Not valid UTF-8.
        assert_eq!(r.resolve(&header(&[b"1.2.3.\xff"])), None);
        // Garbage left of the client is not looked at.
        assert_eq!(resolve(&r, &["bogus, 203.0.113.7, 10.0.0.2"]).as_deref(), Some("203.0.113.7"));
    }

    #[test]
    fn an_oversized_header_is_not_read() {
        let r = real_ip(&["10.0.0.0/8"], true);
        let long = vec!["10.0.0.1"; MAX_HEADER_BYTES / 8].join(",") + ",203.0.113.7";
        assert_eq!(resolve(&r, &[&long]), None);
        let split = ["10.0.0.1,".repeat(MAX_HEADER_BYTES / 16), "203.0.113.7".into()];
        assert_eq!(resolve(&r, &[&split[0], &split[1]]).as_deref(), Some("203.0.113.7"));
        let over = ["10.0.0.1,".repeat(MAX_HEADER_BYTES / 9 + 1), "203.0.113.7".into()];
        assert_eq!(resolve(&r, &[&over[0], &over[1]]), None);
    }

    #[test]
    fn a_request_gets_its_own_client_only_when_it_names_another() {
        let r = real_ip(&["127.0.0.1"], true);
        let connection = Arc::new(ClientInfo::new("127.0.0.1:5000".parse().unwrap(), 8000));
        let mut headers = HeaderMap::new();
        assert!(Arc::ptr_eq(&r.client(&connection, &headers), &connection));
        headers.insert("x-forwarded-for", "127.0.0.1".parse().unwrap());
        assert!(Arc::ptr_eq(&r.client(&connection, &headers), &connection));
        headers.insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
        let client = r.client(&connection, &headers);
        assert_eq!(client.ip_text(), "203.0.113.7");
        assert_eq!(client.local_port, 8000);
        let by_protocol = RealIp::new(&["127.0.0.1/32".parse().unwrap()], "proxy_protocol", true).unwrap();
        assert!(Arc::ptr_eq(&by_protocol.client(&connection, &headers), &connection));
    }
}
