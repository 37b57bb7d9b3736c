//! [`NodeIdentity`]: who a member is for foca, and why it changes at every start.
//!
//! SWIM never lets an identity that was declared down come back, so an identity is made unique per
//! start: the node's name and address plus the start time and a random `boot` number. foca's
//! `Identity::addr` (the "slot" an identity occupies) is the node name, so a restarted node, even
//! on another address, *replaces* its previous identity everywhere (foca's `Rename`) instead of
//! appearing twice; the newer start wins the conflict. When the cluster declares this node down
//! while it is in fact alive, [`renew`](foca::Identity::renew) bumps `renewal` and foca rejoins at
//! once.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// One start of one node, as foca sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "IdentityRepr")]
pub(crate) struct NodeIdentity {
    /// The node's name (`ClusterConfig::node_id`).
    node: String,
    /// Where the node is reached.
    addr: SocketAddr,
    /// Wall-clock start time in milliseconds since the Unix epoch: orders starts of the same node.
    started_ms: u64,
    /// Random per start: two starts in the same millisecond still differ.
    boot: u64,
    /// Bumped each time this start rejoins after being declared down.
    renewal: u32,
    /// FNV-1a of `node`, computed once: foca compares slots for every member on every update.
    #[serde(skip_serializing)]
    slot: u64,
}

/// The wire form of [`NodeIdentity`] (everything but the derived `slot`).
#[derive(Deserialize)]
struct IdentityRepr {
    node: String,
    addr: SocketAddr,
    started_ms: u64,
    boot: u64,
    renewal: u32,
}

impl From<IdentityRepr> for NodeIdentity {
    fn from(repr: IdentityRepr) -> Self {
        let IdentityRepr { node, addr, started_ms, boot, renewal } = repr;
        Self { slot: slot_of(&node), node, addr, started_ms, boot, renewal }
    }
}

impl NodeIdentity {
    /// The identity of a fresh start.
    pub(crate) fn new(node: &str, addr: SocketAddr, started_ms: u64, boot: u64) -> Self {
        Self { slot: slot_of(node), node: node.to_owned(), addr, started_ms, boot, renewal: 0 }
    }

    /// The node's name.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// Where the node is reached.
    pub(crate) fn socket(&self) -> SocketAddr {
        self.addr
    }

    /// The random number of this start (part of message ids, so seqs restart safely).
    pub(crate) fn boot(&self) -> u64 {
        self.boot
    }

    fn rank(&self) -> (u64, u32, u64) {
        (self.started_ms, self.renewal, self.boot)
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = u64;

    fn renew(&self) -> Option<Self> {
        let mut next = self.clone();
        next.renewal = self.renewal.checked_add(1)?;
        Some(next)
    }

    fn addr(&self) -> u64 {
        self.slot
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.rank() > adversary.rank()
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's hasher.
fn slot_of(node: &str) -> u64 {
    node.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    #[test]
    fn later_start_and_renewal_win() {
        let addr = "10.0.0.1:7946".parse().unwrap();
        let old = NodeIdentity::new("a", addr, 1_000, 99);
        let new = NodeIdentity::new("a", "10.0.0.2:7946".parse().unwrap(), 2_000, 1);
        assert_eq!(old.addr(), new.addr(), "same node, same slot, whatever the address");
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        let renewed = old.renew().unwrap();
        assert!(renewed.win_addr_conflict(&old));
        assert_ne!(renewed, old);
        assert_ne!(NodeIdentity::new("b", addr, 1_000, 99).addr(), old.addr());
    }

    #[test]
    fn slot_survives_the_wire() {
        let id = NodeIdentity::new("node-7", "127.0.0.1:1".parse().unwrap(), 5, 6);
        let bytes = crate::codec::to_vec(&id).unwrap();
        let (back, used): (NodeIdentity, usize) = crate::codec::from_slice(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back, id);
        assert_eq!(back.addr(), id.addr());
    }
}
