//! The crate's error type: what failed at the boundary, and what state is left.

use std::net::SocketAddr;

/// Everything that can go wrong when starting or using a cluster node.
///
/// None of these leave a half-started node behind: a failed [`spawn`](crate::ClusterHandle::spawn)
/// has bound nothing (or dropped what it bound), and a failed [`broadcast`](crate::ClusterHandle::broadcast)
/// sent nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The configuration is invalid; each entry names the field at fault and why.
    #[error("invalid cluster config: {}", .0.join("; "))]
    Config(Vec<String>),
    /// The UDP socket could not be bound.
    #[error("cannot bind the gossip socket to {addr}: {source}")]
    Bind {
        /// The address from `ClusterConfig::bind`.
        addr: SocketAddr,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
    /// `ClusterConfig::advertise` could not be resolved to a socket address.
    #[error("cannot resolve the advertised address {value:?}: {reason}")]
    Advertise {
        /// The configured `host:port`.
        value: String,
        /// Why it did not resolve.
        reason: String,
    },
    /// The message does not fit in one gossip packet once encoded.
    #[error("message of {size} bytes does not fit in a gossip packet (at most {max} bytes)")]
    MessageTooLarge {
        /// The encoded size of the message.
        size: usize,
        /// The largest encoded message a packet can carry with this configuration.
        max: usize,
    },
    /// The node has left the cluster or its worker has stopped; nothing was sent.
    #[error("the cluster node has stopped")]
    Stopped,
}
