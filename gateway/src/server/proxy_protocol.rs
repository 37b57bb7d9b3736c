//! The PROXY protocol (HAProxy's, v1 text and v2 binary), for a listener behind a load balancer
//! that passes on the client's address that way (setting `proxy_protocol`).
//!
//! Every connection must begin with a header, read whole under the header read timeout before
//! anything else, and parsed by the `ppp` crate. Its source address then stands for the TCP
//! peer everywhere (and is subject to `trusted_ips` as the peer would be). `LOCAL` (v2) and
//! `UNKNOWN` (v1) keep the TCP peer, as do v2 `PROXY` headers of the unspecified family. A
//! connection whose header is missing, malformed, cut short, too slow, or names a family or
//! transport other than TCP over IPv4 or IPv6 is closed without a word.

use super::read_ahead::ReadAhead;
use ppp::v1;
use ppp::v2;
use ppp::{HeaderResult, PartialResult as _};
use std::net::SocketAddr;
use std::time::Duration;

/// The longest header there can be: v2's 16 fixed bytes and a 16-bit length (v1's is 107).
const MAX_HEADER: usize = 16 + u16::MAX as usize;

/// Why a connection was closed before HTTP.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// No whole header within the timeout.
    #[error("no whole PROXY protocol header within {0:?}")]
    TimedOut(Duration),
    /// The client closed, or the read failed, before the header ended.
    #[error("the connection ended before its PROXY protocol header did")]
    Closed,
    /// Not a header, or one that does not parse.
    #[error("not a PROXY protocol header: {0}")]
    Malformed(String),
    /// A header for another kind of connection (UDP, a UNIX socket).
    #[error("a PROXY protocol header for something other than TCP over IPv4 or IPv6")]
    Unsupported,
}

/// Reads the PROXY header that `stream` (from `peer`) begins with, leaving whatever came after
/// it unread; the client's address it names.
pub async fn accept(stream: &mut ReadAhead, peer: SocketAddr, timeout: Duration) -> Result<SocketAddr, Refused> {
    let read = async {
        loop {
            match parse(stream.unread(), peer) {
                Parsed::Incomplete => {}
                Parsed::Done { source, len } => {
                    stream.consume(len);
                    return Ok(source);
                }
                Parsed::Bad(refused) => return Err(refused),
            }
            let room = MAX_HEADER - stream.unread().len();
            if room == 0 {
                return Err(Refused::Malformed("too long".into()));
            }
            match stream.read_more(512.min(room)).await {
                Ok(0) | Err(_) => return Err(Refused::Closed),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| Refused::TimedOut(timeout))?
}

enum Parsed {
    Incomplete,
    Done { source: SocketAddr, len: usize },
    Bad(Refused),
}

/// v1's longest line, CRLF included.
const MAX_V1_LINE: usize = 107;

fn parse(buf: &[u8], peer: SocketAddr) -> Parsed {
    // A v1 line is judged whole: cut just after a space, ppp would take the empty field that
    // follows for a bad port rather than one still to come.
    let unfinished_line =
        buf.len() < MAX_V1_LINE && !buf.contains(&b'\n') && (b"PROXY ".starts_with(buf) || buf.starts_with(b"PROXY "));
    if unfinished_line {
        return Parsed::Incomplete;
    }
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return Parsed::Incomplete;
    }
    match result {
        HeaderResult::V1(Ok(header)) => {
            let source = match header.addresses {
                v1::Addresses::Tcp4(a) => SocketAddr::new(a.source_address.into(), a.source_port),
                v1::Addresses::Tcp6(a) => SocketAddr::new(a.source_address.into(), a.source_port),
                v1::Addresses::Unknown => peer,
            };
            Parsed::Done { source, len: header.header.len() }
        }
        HeaderResult::V2(Ok(header)) => {
            let source = match (header.command, header.protocol, header.addresses) {
                (v2::Command::Local, _, _) | (v2::Command::Proxy, _, v2::Addresses::Unspecified) => peer,
                (v2::Command::Proxy, v2::Protocol::Stream | v2::Protocol::Unspecified, v2::Addresses::IPv4(a)) => {
                    SocketAddr::new(a.source_address.into(), a.source_port)
                }
                (v2::Command::Proxy, v2::Protocol::Stream | v2::Protocol::Unspecified, v2::Addresses::IPv6(a)) => {
                    SocketAddr::new(a.source_address.into(), a.source_port)
                }
                _ => return Parsed::Bad(Refused::Unsupported),
            };
            Parsed::Done { source, len: header.len() }
        }
        HeaderResult::V1(Err(e)) => Parsed::Bad(Refused::Malformed(e.to_string())),
        HeaderResult::V2(Err(e)) => Parsed::Bad(Refused::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::read_ahead::tests::pair;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    const PEER: &str = "127.0.0.1:40000";

    fn peer() -> SocketAddr {
        PEER.parse().unwrap()
    }

    fn done(buf: &[u8]) -> (SocketAddr, usize) {
        match parse(buf, peer()) {
            Parsed::Done { source, len } => (source, len),
            Parsed::Incomplete => panic!("incomplete: {buf:?}"),
            Parsed::Bad(e) => panic!("refused ({e}): {buf:?}"),
        }
    }

    fn refused(buf: &[u8]) -> bool {
        matches!(parse(buf, peer()), Parsed::Bad(_))
    }

    fn incomplete(buf: &[u8]) -> bool {
        matches!(parse(buf, peer()), Parsed::Incomplete)
    }

    fn v2(command: u8, family_protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        out.push(command);
        out.push(family_protocol);
        out.extend((payload.len() as u16).to_be_bytes());
        out.extend(payload);
        out
    }

    const V4_PAYLOAD: [u8; 12] = [203, 0, 113, 7, 10, 0, 0, 1, 0x12, 0x34, 0, 80];

    #[test]
    fn v1_lines() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 4660 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(done(line), ("203.0.113.7:4660".parse().unwrap(), 41));
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 4660 80\r\n";
        assert_eq!(done(line), ("[2001:db8::7]:4660".parse().unwrap(), line.len()));
        assert_eq!(done(b"PROXY UNKNOWN\r\n"), (peer(), 15));
        assert_eq!(done(b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\nrest").0, peer());
    }

    #[test]
    fn v1_lines_cut_short_wait_for_more() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 4660 80\r\n";
        for end in 1..line.len() {
            assert!(incomplete(&line[..end]), "{:?}", String::from_utf8_lossy(&line[..end]));
        }
        assert!(incomplete(b""));
    }

    #[test]
    fn v1_lies_are_refused() {
        for lie in [
            &b"PROXY TCP4 203.0.113.999 10.0.0.1 4660 80\r\n"[..],
            b"PROXY TCP4 2001:db8::7 2001:db8::1 4660 80\r\n",
            b"PROXY TCP6 203.0.113.7 10.0.0.1 4660 80\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 99999 80\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 04660 80\r\n",
            b"PROXY UDP4 203.0.113.7 10.0.0.1 4660 80\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 4660 80\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"proxy TCP4 203.0.113.7 10.0.0.1 4660 80\r\n",
            b"PROXY TCP4 \xff\xfe 10.0.0.1 4660 80\r\n",
        ] {
            assert!(refused(lie), "{:?}", String::from_utf8_lossy(lie));
        }
        // No CRLF within 107 bytes.
        let long = format!("PROXY TCP4 203.0.113.7 10.0.0.1 4660 80{}", " ".repeat(80));
        assert!(refused(long.as_bytes()));
    }

    #[test]
    fn v2_headers() {
        assert_eq!(done(&v2(0x21, 0x11, &V4_PAYLOAD)), ("203.0.113.7:4660".parse().unwrap(), 28));
        let mut v6 = [0u8; 36];
        v6[..16].copy_from_slice(&"2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6[32..34].copy_from_slice(&4660u16.to_be_bytes());
        assert_eq!(done(&v2(0x21, 0x21, &v6)).0, "[2001:db8::7]:4660".parse().unwrap());
        // TLVs after the addresses (AWS and GCP load balancers send some).
        let mut with_tlv = V4_PAYLOAD.to_vec();
        with_tlv.extend([0x04, 0, 3, b'a', b'b', b'c']);
        let header = v2(0x21, 0x11, &with_tlv);
        assert_eq!(done(&[&header[..], b"GET /"].concat()), ("203.0.113.7:4660".parse().unwrap(), header.len()));
        // LOCAL (a health check by the balancer itself) and the unspecified family: the peer.
        assert_eq!(done(&v2(0x20, 0x00, &[])), (peer(), 16));
        assert_eq!(done(&v2(0x20, 0x11, &V4_PAYLOAD)).0, peer());
        assert_eq!(done(&v2(0x21, 0x00, &[])).0, peer());
    }

    #[test]
    fn v2_cut_short_waits_and_lies_are_refused() {
        let header = v2(0x21, 0x11, &V4_PAYLOAD);
        for end in 1..header.len() {
            assert!(incomplete(&header[..end]), "{end}");
        }
        // A length past the data waits for it (and the timeout ends the wait).
        let mut long = v2(0x21, 0x11, &V4_PAYLOAD);
        long[14..16].copy_from_slice(&500u16.to_be_bytes());
        assert!(incomplete(&long));
        // A bad signature, version, command, family; UDP; a UNIX socket; too short for its family.
        let mut bad_signature = header.clone();
        bad_signature[8] = b'X';
        assert!(refused(&bad_signature));
        assert!(refused(&v2(0x11, 0x11, &V4_PAYLOAD)));
        assert!(refused(&v2(0x22, 0x11, &V4_PAYLOAD)));
        assert!(refused(&v2(0x21, 0x41, &V4_PAYLOAD)));
        assert!(refused(&v2(0x21, 0x12, &V4_PAYLOAD)));
        assert!(refused(&v2(0x21, 0x31, &[0u8; 216])));
        assert!(refused(&v2(0x21, 0x11, &V4_PAYLOAD[..8])));
    }

    #[tokio::test]
    async fn what_follows_the_header_is_given_back() {
        let (mut client, server) = pair().await;
        let header = v2(0x21, 0x11, &V4_PAYLOAD);
        client.write_all(&[&header[..7]].concat()).await.unwrap();
        let reading = tokio::spawn(async {
            let mut stream = ReadAhead::new(server);
            let source = accept(&mut stream, peer(), Duration::from_secs(5)).await;
            (stream, source)
        });
        client.write_all(&[&header[7..], b"GET / HTTP/1.1\r\n"].concat()).await.unwrap();
        let (mut stream, source) = reading.await.unwrap();
        let source = source.unwrap();
        assert_eq!(source, "203.0.113.7:4660".parse().unwrap());
        let mut got = vec![0u8; 16];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n");
        client.write_all(b"more").await.unwrap();
        let mut more = [0u8; 4];
        stream.read_exact(&mut more).await.unwrap();
        assert_eq!(&more, b"more");
    }

    #[tokio::test]
    async fn a_stalled_header_times_out_and_a_closed_one_ends() {
        let (mut client, server) = pair().await;
        client.write_all(b"PROXY TCP4 203.0.113.7").await.unwrap();
        let e = accept(&mut ReadAhead::new(server), peer(), Duration::from_millis(100)).await.err().unwrap();
        assert!(matches!(e, Refused::TimedOut(_)), "{e}");
        let (mut client, server) = pair().await;
        client.write_all(b"PROXY TCP4 203.0.113.7").await.unwrap();
        drop(client);
        let e = accept(&mut ReadAhead::new(server), peer(), Duration::from_secs(5)).await.err().unwrap();
        assert!(matches!(e, Refused::Closed), "{e}");
    }
}
