//! The `ip-restriction` plugin's config, with Kong's fields and defaults.
//!
//! Entries are IP addresses or CIDRs, IPv4 or IPv6, kept as written (so that `dump` gives them
//! back as they were); [`parse_ip_or_cidr`] is the one parser, used here to check them and by
//! the gateway to build its matcher once per snapshot.

use crate::validate::Errors;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The `ip-restriction` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpRestriction {
    /// Only clients in one of these pass (IPs or CIDRs). Default none: no allow list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Clients in one of these are refused; checked first. Default none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// The status a refused client gets, 400 to 599. Default 403.
    pub status: u16,
    /// The message a refused client gets. Default Kong's, `Your IP address is not allowed`.
    pub message: String,
}

impl Default for IpRestriction {
    fn default() -> Self {
        IpRestriction {
            allow: Vec::new(),
            deny: Vec::new(),
            status: 403,
            message: "Your IP address is not allowed".into(),
        }
    }
}

impl IpRestriction {
    /// Pushes every problem onto `errors`, under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        if self.allow.is_empty() && self.deny.is_empty() {
            errors.push(path, "needs allow or deny (or both)");
        }
        for (field, entries) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (i, entry) in entries.iter().enumerate() {
                if let Err(e) = parse_ip_or_cidr(entry) {
                    errors.push(format!("{path}.{field}[{i}]"), e);
                }
            }
        }
        if !(400..=599).contains(&self.status) {
            errors.push(format!("{path}.status"), format!("{} is not an error status (400 to 599)", self.status));
        }
        if self.message.chars().any(char::is_control) {
            errors.push(format!("{path}.message"), "must not contain control characters");
        }
    }
}

/// An IP address (a network of one) or a CIDR, as the address and the prefix length. Host bits
/// below the prefix are allowed (`10.1.2.3/8` is `10.0.0.0/8`), as in Kong.
pub fn parse_ip_or_cidr(entry: &str) -> Result<(IpAddr, u8), String> {
    let bad = || format!("{entry:?} is not an IP address or a CIDR");
    let (address, prefix) = match entry.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (entry, None),
    };
    let ip: IpAddr = address.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match prefix {
        None => max,
        Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
            let len: u8 = p.parse().map_err(|_| bad())?;
            if len > max {
                return Err(format!("{entry:?}: a prefix of /{len} is longer than the address ({max} bits)"));
            }
            len
        }
        Some(_) => return Err(bad()),
    };
    Ok((ip, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(json: &str) -> Vec<String> {
        let config: IpRestriction = serde_json::from_str(json).unwrap();
        let mut errors = Errors::default();
        config.validate("p", &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_are_kongs_and_allow_or_deny_is_needed() {
        let c: IpRestriction = serde_json::from_str("{}").unwrap();
        assert_eq!((c.status, c.message.as_str()), (403, "Your IP address is not allowed"));
        assert_eq!(errors_of("{}"), ["p: needs allow or deny (or both)"]);
        assert!(errors_of(r#"{"allow":["10.0.0.0/8"],"deny":["10.0.0.1"]}"#).is_empty());
        assert!(errors_of(r#"{"deny":["2001:db8::/32","::1","::ffff:10.0.0.0/104"]}"#).is_empty());
    }

    #[test]
    fn a_bad_address_or_cidr_is_reported_with_its_path() {
        let got = errors_of(
            r#"{"allow":["10.0.0.0/8","10.0.0.0/33","10.0.0.300"],"deny":["2001:db8::/129","x/8","1.2.3.4/+8","1.2.3.4/"]}"#,
        );
        let paths: Vec<&str> = got.iter().map(|e| e.split(": ").next().unwrap()).collect();
        assert_eq!(paths, ["p.allow[1]", "p.allow[2]", "p.deny[0]", "p.deny[1]", "p.deny[2]", "p.deny[3]"], "{got:?}");
        assert!(got[0].contains("longer than the address (32 bits)"), "{got:?}");
        assert!(got[1].contains("is not an IP address or a CIDR"), "{got:?}");
    }

    #[test]
    fn the_status_must_be_an_error_status() {
        assert_eq!(
            errors_of(r#"{"deny":["::1"],"status":200}"#),
            ["p.status: 200 is not an error status (400 to 599)"]
        );
        assert_eq!(
            errors_of(r#"{"deny":["::1"],"status":600}"#),
            ["p.status: 600 is not an error status (400 to 599)"]
        );
        assert!(errors_of(r#"{"deny":["::1"],"status":404,"message":"Not here"}"#).is_empty());
    }

    #[test]
    fn addresses_and_cidrs_parse_to_address_and_prefix() {
        assert_eq!(parse_ip_or_cidr("10.1.2.3/8"), Ok(([10, 1, 2, 3].into(), 8)));
        assert_eq!(parse_ip_or_cidr("192.0.2.1"), Ok(([192, 0, 2, 1].into(), 32)));
        assert_eq!(parse_ip_or_cidr("2001:db8::1"), Ok(("2001:db8::1".parse().unwrap(), 128)));
        assert_eq!(parse_ip_or_cidr("::/0"), Ok(("::".parse().unwrap(), 0)));
    }
}
