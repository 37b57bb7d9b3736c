//! Cluster membership for gateway nodes.
//!
//! This crate will own SWIM membership over UDP (the `foca` crate), the bincode wire codec,
//! authenticated gossip and the cluster-wide broadcasts an operator's health reset travels on.
//! It is filled by the "Cluster membership and cluster-wide broadcasts" issue; until then a
//! node is a cluster of one.
