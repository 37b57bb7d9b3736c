//! Host handling: normalising the request host (drop the port, lower-case
//! without allocating for ordinary hosts) and the host index, which maps a
//! request host to the ordered list of host groups to search: the exact
//! group, then wildcard groups from the longest suffix to the shortest, then
//! the group of routes without hosts. Each step is one hash lookup.

use std::collections::HashMap;

/// Hosts up to this many bytes are lower-cased on the stack; DNS names are
/// at most 253 bytes, so longer ones only take the (allocating) slow path.
const HOST_BUF: usize = 256;

/// How a configured route host matches.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// The whole host, lower-cased.
    Exact(String),
    /// `*.suffix`: the suffix, lower-cased, without the `*.`.
    Wildcard(String),
}

/// Parses a configured host. Returns `None` when it is not a valid pattern:
/// empty, a `*` anywhere but a single leading `*.`, or an empty suffix.
pub(crate) fn parse_host(host: &str) -> Option<HostPattern> {
    let host = host.to_ascii_lowercase();
    match host.strip_prefix("*.") {
        Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => Some(HostPattern::Wildcard(suffix.to_owned())),
        None if !host.is_empty() && !host.contains('*') => Some(HostPattern::Exact(host)),
        _ => None,
    }
}

/// Drops a `:port` suffix from a request host. Bracketed IPv6 literals keep
/// their brackets; an unbracketed value with several colons is left alone.
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.split_once(':') {
        Some((name, port)) if !port.contains(':') => name,
        _ => host,
    }
}

/// Scratch space for [`normalize`]; lives on the caller's stack.
pub(crate) struct HostScratch {
    buf: [u8; HOST_BUF],
    heap: Vec<u8>,
}

impl HostScratch {
    /// Empty scratch space; does not allocate.
    pub(crate) fn new() -> Self {
        HostScratch { buf: [0; HOST_BUF], heap: Vec::new() }
    }
}

/// The request host as index keys: port dropped, ASCII lower-cased. Borrows
/// `host` unchanged when it has no upper-case bytes, else lower-cases into
/// `scratch` (on the stack unless longer than any DNS name).
pub(crate) fn normalize<'a>(host: &'a str, scratch: &'a mut HostScratch) -> &'a [u8] {
    let host = strip_port(host).as_bytes();
    if !host.iter().any(u8::is_ascii_uppercase) {
        return host;
    }
    let out: &mut [u8] = match scratch.buf.get_mut(..host.len()) {
        Some(buf) => buf,
        None => {
            scratch.heap.resize(host.len(), 0);
            &mut scratch.heap
        }
    };
    for (o, b) in out.iter_mut().zip(host) {
        *o = b.to_ascii_lowercase();
    }
    out
}

/// The host index over groups of type `G`.
#[derive(Debug)]
pub(crate) struct HostIndex<G> {
    exact: HashMap<Box<[u8]>, G>,
    wildcard: HashMap<Box<[u8]>, G>,
    /// Length of the longest wildcard suffix; longer host tails are skipped.
    longest_suffix: usize,
    any: G,
}

impl<G> HostIndex<G> {
    /// Builds the index from its parts; keys are lower-cased hosts and
    /// wildcard suffixes.
    pub(crate) fn new(exact: HashMap<String, G>, wildcard: HashMap<String, G>, any: G) -> Self {
        fn into_bytes<G>(m: HashMap<String, G>) -> HashMap<Box<[u8]>, G> {
            m.into_iter().map(|(k, g)| (k.into_bytes().into_boxed_slice(), g)).collect()
        }
        let longest_suffix = wildcard.keys().map(String::len).max().unwrap_or(0);
        HostIndex { exact: into_bytes(exact), wildcard: into_bytes(wildcard), longest_suffix, any }
    }

    /// The groups to search for a normalised request host, in precedence
    /// order; only the no-host group when the request has no host.
    pub(crate) fn groups<'s>(&'s self, host: Option<&'s [u8]>) -> HostGroups<'s, G> {
        HostGroups {
            index: self,
            host: host.unwrap_or_default(),
            stage: if host.is_some() { Stage::Exact } else { Stage::Any },
            dot: 0,
        }
    }
}

/// Where a [`HostGroups`] walk is.
#[derive(Clone, Copy)]
enum Stage {
    Exact,
    Wildcard,
    Any,
    Done,
}

/// Iterator over the host groups matching one request host; see
/// [`HostIndex::groups`].
pub(crate) struct HostGroups<'s, G> {
    index: &'s HostIndex<G>,
    host: &'s [u8],
    stage: Stage,
    /// Where to look for the next `.` while in the wildcard stage.
    dot: usize,
}

impl<'s, G> Iterator for HostGroups<'s, G> {
    type Item = &'s G;

    fn next(&mut self) -> Option<&'s G> {
        loop {
            match self.stage {
                Stage::Exact => {
                    self.stage = Stage::Wildcard;
                    // A wildcard needs at least one label before the suffix.
                    self.dot = 1;
                    if self.index.exact.is_empty() {
                        continue;
                    }
                    if let Some(g) = self.index.exact.get(self.host) {
                        return Some(g);
                    }
                }
                Stage::Wildcard => {
                    if self.index.wildcard.is_empty() {
                        self.stage = Stage::Any;
                        continue;
                    }
                    let rest = self.host.get(self.dot..).unwrap_or_default();
                    let Some(at) = rest.iter().position(|&b| b == b'.') else {
                        self.stage = Stage::Any;
                        continue;
                    };
                    let suffix = &rest[at + 1..];
                    self.dot += at + 1;
                    if suffix.len() > self.index.longest_suffix {
                        continue;
                    }
                    if let Some(g) = self.index.wildcard.get(suffix) {
                        return Some(g);
                    }
                }
                Stage::Any => {
                    self.stage = Stage::Done;
                    return Some(&self.index.any);
                }
                Stage::Done => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_parse() {
        assert_eq!(parse_host("API.example.com"), Some(HostPattern::Exact("api.example.com".into())));
        assert_eq!(parse_host("*.Example.com"), Some(HostPattern::Wildcard("example.com".into())));
        assert_eq!(parse_host("*."), None);
        assert_eq!(parse_host(""), None);
        assert_eq!(parse_host("a.*.com"), None);
        assert_eq!(parse_host("*.*.com"), None);
    }

    #[test]
    fn request_hosts_normalize() {
        let mut s = HostScratch::new();
        assert_eq!(normalize("api.example.com:8443", &mut s), b"api.example.com");
        assert_eq!(normalize("API.Example.COM", &mut s), b"api.example.com");
        assert_eq!(normalize("[::1]:80", &mut s), b"[::1]");
        assert_eq!(normalize("::1", &mut s), b"::1");
        let long = format!("{}.COM", "A".repeat(300));
        assert_eq!(normalize(&long, &mut s), long.to_ascii_lowercase().as_bytes());
    }

    #[test]
    fn host_groups_in_order() {
        let exact = HashMap::from([("a.b.example.com".to_owned(), 1)]);
        let wildcard =
            HashMap::from([("example.com".to_owned(), 2), ("b.example.com".to_owned(), 3), ("com".to_owned(), 4)]);
        let index = HostIndex::new(exact, wildcard, 5);
        let order = |h: Option<&str>| index.groups(h.map(str::as_bytes)).copied().collect::<Vec<_>>();
        assert_eq!(order(Some("a.b.example.com")), vec![1, 3, 2, 4, 5]);
        assert_eq!(order(Some("x.a.b.example.com")), vec![3, 2, 4, 5]);
        assert_eq!(order(Some("example.com")), vec![4, 5]);
        assert_eq!(order(Some(".com")), vec![5]);
        assert_eq!(order(Some("other.org")), vec![5]);
        assert_eq!(order(None), vec![5]);
    }
}
