//! Counters of dropped packets, by reason, for the gateway's `gateway_gossip_rejected_total{reason}`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a received packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Shorter than the envelope's header (an empty packet included).
    Truncated,
    /// Longer than `ClusterConfig::max_packet_size`.
    Oversized,
    /// The first byte is not this crate's wire version: another format or release.
    Version,
    /// Sent by a cluster with another name.
    Cluster,
    /// Failed authentication: no key of the keyring opens it, it is not sealed while a keyring is
    /// set, or it is sealed while none is.
    Auth,
    /// Authentic (or unauthenticated) but not a well-formed message.
    Decode,
    /// Claims to come from this node's own name: another process uses the same `node_id`.
    Identity,
}

impl RejectReason {
    /// Every reason, in the order [`Rejections::snapshot`] lists them.
    pub const ALL: [RejectReason; 7] = [
        RejectReason::Truncated,
        RejectReason::Oversized,
        RejectReason::Version,
        RejectReason::Cluster,
        RejectReason::Auth,
        RejectReason::Decode,
        RejectReason::Identity,
    ];

    /// The metric label: `truncated`, `oversized`, `version`, `cluster`, `auth`, `decode`, `identity`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::Truncated => "truncated",
            RejectReason::Oversized => "oversized",
            RejectReason::Version => "version",
            RejectReason::Cluster => "cluster",
            RejectReason::Auth => "auth",
            RejectReason::Decode => "decode",
            RejectReason::Identity => "identity",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Dropped-packet counters, shared between a node and its handle.
#[derive(Debug, Default)]
pub struct Rejections {
    counts: [AtomicU64; RejectReason::ALL.len()],
}

impl Rejections {
    /// Counts one dropped packet.
    pub fn record(&self, reason: RejectReason) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Packets dropped for `reason` so far.
    pub fn get(&self, reason: RejectReason) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }

    /// Every reason with its count, zeros included, in [`RejectReason::ALL`] order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        RejectReason::ALL.iter().map(|&reason| (reason.as_str(), self.get(reason))).collect()
    }

    /// Packets dropped for any reason.
    pub fn total(&self) -> u64 {
        RejectReason::ALL.iter().map(|&reason| self.get(reason)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let rejections = Rejections::default();
        rejections.record(RejectReason::Auth);
        rejections.record(RejectReason::Auth);
        rejections.record(RejectReason::Identity);
        assert_eq!(rejections.get(RejectReason::Auth), 2);
        assert_eq!(rejections.total(), 3);
        let snapshot = rejections.snapshot();
        assert_eq!(snapshot.len(), 7);
        assert!(snapshot.contains(&("auth", 2)));
        assert!(snapshot.contains(&("truncated", 0)));
    }
}
