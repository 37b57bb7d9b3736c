//! `ip-restriction`: refuses clients by their address, as Kong's plugin does: `deny` is checked
//! first, then, if `allow` is set, a client not in it is refused.
//!
//! The address is the real client's ([`crate::client_address`]: behind trusted proxies, the one
//! they name). An IPv4-mapped IPv6 client (`::ffff:192.0.2.1`, from a dual-stack listener) is
//! taken as the IPv4 address it maps, and so is a rule written that way, so IPv4 rules hold
//! whichever way the client connected. Rules are parsed once per snapshot.

use super::pipeline::{Access, Ctx, Flow, Plugin, Refusal};
use config_sync::model::parse_ip_or_cidr;
use http::StatusCode;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::borrow::Cow;
use std::net::IpAddr;

/// A compiled `ip-restriction` config.
pub(crate) struct IpRestriction {
    allow: Option<Nets>,
    deny: Nets,
    status: StatusCode,
    message: Cow<'static, str>,
}

/// Networks, by family.
#[derive(Default, Debug)]
struct Nets {
    v4: Vec<Ipv4Net>,
    v6: Vec<Ipv6Net>,
}

impl Nets {
    /// The networks of validated `entries` (one that does not parse is skipped).
    fn parse(entries: &[String]) -> Nets {
        let mut nets = Nets::default();
        for entry in entries {
            let Ok((ip, len)) = parse_ip_or_cidr(entry) else { continue };
            let Ok(net) = IpNet::new(ip, len) else { continue };
            match mapped_v4(net.trunc()) {
                IpNet::V4(net) => nets.v4.push(net),
                IpNet::V6(net) => nets.v6.push(net),
            }
        }
        nets
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(ip) => self.v4.iter().any(|net| net.contains(&ip)),
            IpAddr::V6(ip) => self.v6.iter().any(|net| net.contains(&ip)),
        }
    }
}

/// An IPv6 network inside `::ffff:0:0/96` as the IPv4 network it maps.
fn mapped_v4(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

impl IpRestriction {
    pub(crate) fn new(config: &config_sync::model::IpRestriction) -> IpRestriction {
        let default = config_sync::model::IpRestriction::default();
        let message = if config.message == default.message {
            Cow::Borrowed(DEFAULT_MESSAGE)
        } else {
            config.message.clone().into()
        };
        IpRestriction {
            allow: (!config.allow.is_empty()).then(|| Nets::parse(&config.allow)),
            deny: Nets::parse(&config.deny),
            status: StatusCode::from_u16(config.status).unwrap_or(StatusCode::FORBIDDEN),
            message,
        }
    }

    /// Whether a client at `ip` may pass.
    fn allows(&self, ip: IpAddr) -> bool {
        !self.deny.contains(ip) && self.allow.as_ref().is_none_or(|allow| allow.contains(ip))
    }
}

const DEFAULT_MESSAGE: &str = "Your IP address is not allowed";

impl Plugin for IpRestriction {
    fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
        if self.allows(ctx.client.peer.ip()) {
            return Access::Ready(Flow::Continue);
        }
        Access::Ready(Refusal::new(self.status, self.message.clone()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{run, Outcome};

    fn restriction(json: serde_json::Value) -> IpRestriction {
        let config: config_sync::model::IpRestriction = serde_json::from_value(json).unwrap();
        IpRestriction::new(&config)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn deny_first_then_allow() {
        let r = restriction(serde_json::json!({"allow": ["10.0.0.0/8", "2001:db8::/32"], "deny": ["10.1.0.0/16"]}));
        assert!(r.allows(ip("10.2.3.4")));
        assert!(!r.allows(ip("10.1.2.3")), "deny wins over a wider allow");
        assert!(!r.allows(ip("192.0.2.1")), "not in allow");
        assert!(r.allows(ip("2001:db8:1::5")));
        assert!(!r.allows(ip("2001:db9::1")));
        let deny_only = restriction(serde_json::json!({"deny": ["192.0.2.1", "::1"]}));
        assert!(!deny_only.allows(ip("192.0.2.1")) && !deny_only.allows(ip("::1")));
        assert!(deny_only.allows(ip("192.0.2.2")) && deny_only.allows(ip("::2")), "no allow list: the rest pass");
    }

    #[test]
    fn mapped_ipv4_clients_and_rules_are_ipv4() {
        let r = restriction(serde_json::json!({"allow": ["127.0.0.1", "::ffff:10.0.0.0/104"]}));
        assert!(r.allows(ip("::ffff:127.0.0.1")), "a dual-stack listener's IPv4 client");
        assert!(r.allows(ip("10.9.9.9")), "a rule written mapped holds for plain IPv4");
        assert!(r.allows(ip("::ffff:10.9.9.9")));
        assert!(!r.allows(ip("::ffff:192.0.2.1")));
        assert!(!r.allows(ip("::1")), "IPv6 loopback is not 127.0.0.1");
        let v6 = restriction(serde_json::json!({"deny": ["::/0"]}));
        assert!(v6.allows(ip("::ffff:192.0.2.1")), "an IPv4 client through a dual-stack listener is not IPv6");
        assert!(!v6.allows(ip("2001:db8::1")));
    }

    #[test]
    fn host_bits_below_the_prefix_are_ignored() {
        let r = restriction(serde_json::json!({"allow": ["10.1.2.3/8", "2001:db8::1/32"]}));
        assert!(r.allows(ip("10.200.0.1")) && r.allows(ip("2001:db8:ffff::1")));
    }

    #[test]
    fn refusals_carry_the_configured_status_and_message() {
        let request = || http::Request::get("/").body(()).unwrap();
        let r = restriction(serde_json::json!({"deny": ["127.0.0.1"]}));
        match run(&r, request(), ip("127.0.0.1")).outcome {
            Outcome::Refused(status, message) => {
                assert_eq!((status.as_u16(), message.as_str()), (403, "Your IP address is not allowed"));
            }
            other => panic!("{other:?}"),
        }
        let r = restriction(serde_json::json!({"allow": ["192.0.2.0/24"], "status": 404, "message": "Not here"}));
        match run(&r, request(), ip("127.0.0.1")).outcome {
            Outcome::Refused(status, message) => assert_eq!((status.as_u16(), message.as_str()), (404, "Not here")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(run(&r, request(), ip("192.0.2.9")).outcome, Outcome::Continue));
    }
}
