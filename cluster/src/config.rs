//! [`ClusterConfig`]: the settings of one node, their defaults and their validation.
//!
//! The defaults follow foca's (and memberlist's) LAN profile: probe every second, 500 ms to answer,
//! three indirect probes, gossip every 200 ms to three members. What this crate adds on top (the
//! anti-entropy exchange, the eager push of messages, how long down members stay listed) has its
//! own settings here too.

use std::{
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    time::Duration,
};

use crate::ClusterError;

/// Expected cluster size the default suspicion timeout is derived from (foca's `new_lan`).
const DEFAULT_EXPECTED_SIZE: u32 = 16;

/// The settings of one cluster node.
///
/// Build it with [`ClusterConfig::new`] (LAN defaults) and set the fields that differ. Every field is
/// checked by [`ClusterConfig::validate`], which [`ClusterHandle::spawn`](crate::ClusterHandle::spawn)
/// calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's name: the member `id` others list. Unique in the cluster, 1 to 128 bytes.
    /// Two live processes with the same `node_id` would take each other's place in turns.
    pub node_id: String,
    /// UDP address the gossip socket binds, e.g. `0.0.0.0:7946`, or `127.0.0.1:0` in tests.
    pub bind: SocketAddr,
    /// `host:port` other nodes reach this one at, resolved once at start. `None`: the bind address
    /// when it is not unspecified, else the address of the interface that routes outwards (found
    /// without sending anything), else loopback; with the bound port.
    pub advertise: Option<String>,
    /// `host:port` of other nodes to join through. Resolved again at each attempt, so nodes may
    /// start in any order and names may appear late in DNS. Empty: a cluster of one until someone
    /// joins through this node. Listing this node itself is harmless.
    pub seeds: Vec<String>,
    /// Keyring secrets. Empty: packets are not authenticated (anyone who can reach the port can
    /// join). Otherwise every packet is sealed with a key derived from the first secret, and
    /// packets sealed with any of them are accepted, so a key is rotated by first adding the new
    /// secret second on every node, then moving it first, then removing the old one (at run
    /// time: [`ClusterHandle::set_keys`](crate::ClusterHandle::set_keys)).
    pub keys: Vec<String>,
    /// How often a random member is probed. Default 1 s. At least 10 ms.
    pub probe_period: Duration,
    /// How long a suspected member has to refute the suspicion before it is declared down
    /// (foca's `suspect_to_down_after`). Default 4.8 s (foca's LAN formula for 16 nodes). A member
    /// is then asked directly up to three times, `probe_rtt / 2` apart, before it is declared
    /// down, so detection takes about `suspect_timeout + 1.5 * probe_rtt` after the failed probe.
    pub suspect_timeout: Duration,
    /// How long to wait for a direct answer to a probe before asking others to probe indirectly.
    /// `None` (default): half of `probe_period`. Must be shorter than `probe_period`.
    pub probe_rtt: Option<Duration>,
    /// Cluster name. Packets of a cluster with another name are dropped (reason `cluster`), so two
    /// clusters can share a network without keys. Default `"gateway"`.
    pub cluster: String,
    /// Largest UDP payload sent or accepted, envelope included, in bytes. Default 1400 (below a
    /// 1500-byte Ethernet MTU). From 512 to 65000.
    pub max_packet_size: usize,
    /// How often this node runs an anti-entropy exchange: it sends a digest of the messages it
    /// holds to `exchange_fanout` random members, which answer with what it lacks and ask for what
    /// they lack. Default 1 s.
    pub exchange_interval: Duration,
    /// Members per anti-entropy exchange. Default 2.
    pub exchange_fanout: NonZeroUsize,
    /// Members a new message is pushed to at once, by its origin and by every member on first
    /// receipt. Default 4.
    pub broadcast_fanout: NonZeroUsize,
    /// How long messages are kept and offered in exchanges. A member that misses a message for
    /// longer than this never gets it; a message older than this is no longer delivered.
    /// Default 60 s.
    pub message_retention: Duration,
    /// How long a member declared down stays in [`members`](crate::ClusterHandle::members) (with state
    /// `down`) before it is dropped from the list. Default 60 s.
    pub down_retention: Duration,
    /// How often this node compares its durable state with one random member's (push-pull);
    /// it also does when a member comes up. Default 2 s.
    pub push_pull_interval: Duration,
    /// How long a durable state entry outside the scope its user set is kept (see
    /// [`ClusterHandle::scope_state`](crate::ClusterHandle::scope_state)). Default 24 h.
    pub state_retention: Duration,
}

impl ClusterConfig {
    /// A configuration with foca's LAN defaults, no seeds and no keys.
    pub fn new(node_id: &str, bind: SocketAddr) -> Self {
        let lan = foca::Config::new_lan(NonZeroU32::new(DEFAULT_EXPECTED_SIZE).unwrap_or(NonZeroU32::MIN));
        Self {
            node_id: node_id.to_owned(),
            bind,
            advertise: None,
            seeds: Vec::new(),
            keys: Vec::new(),
            probe_period: lan.probe_period,
            suspect_timeout: lan.suspect_to_down_after,
            probe_rtt: None,
            cluster: "gateway".to_owned(),
            max_packet_size: 1400,
            exchange_interval: Duration::from_secs(1),
            exchange_fanout: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
            broadcast_fanout: NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN),
            message_retention: Duration::from_secs(60),
            down_retention: Duration::from_secs(60),
            push_pull_interval: Duration::from_secs(2),
            state_retention: Duration::from_secs(24 * 3600),
        }
    }

    /// The probe round-trip timeout in effect: `probe_rtt`, or half of `probe_period`.
    pub fn effective_probe_rtt(&self) -> Duration {
        self.probe_rtt.unwrap_or(self.probe_period / 2)
    }

    /// Checks every field; the error lists every problem found, each with the field's name.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let mut errors = Vec::new();
        if self.node_id.is_empty() || self.node_id.len() > 128 {
            errors.push(format!("node_id: must be 1 to 128 bytes, got {}", self.node_id.len()));
        }
        if self.node_id.chars().any(char::is_control) {
            errors.push("node_id: must not contain control characters".to_owned());
        }
        if self.cluster.is_empty() {
            errors.push("cluster: must not be empty".to_owned());
        }
        if self.probe_period < Duration::from_millis(10) {
            errors.push(format!("probe_period: must be at least 10ms, got {:?}", self.probe_period));
        }
        let rtt = self.effective_probe_rtt();
        if rtt.is_zero() || rtt >= self.probe_period {
            errors.push(format!("probe_rtt: must be above zero and below probe_period, got {rtt:?}"));
        }
        if self.suspect_timeout.is_zero() {
            errors.push("suspect_timeout: must be above zero".to_owned());
        }
        if !(512..=65_000).contains(&self.max_packet_size) {
            errors.push(format!("max_packet_size: must be 512 to 65000 bytes, got {}", self.max_packet_size));
        }
        for (i, key) in self.keys.iter().enumerate() {
            if key.is_empty() {
                errors.push(format!("keys[{i}]: must not be empty"));
            }
        }
        for (i, seed) in self.seeds.iter().enumerate() {
            if !seed.contains(':') {
                errors.push(format!("seeds[{i}]: expected host:port, got {seed:?}"));
            }
        }
        if self.push_pull_interval < Duration::from_millis(10) {
            errors.push(format!("push_pull_interval: must be at least 10ms, got {:?}", self.push_pull_interval));
        }
        if self.exchange_interval.is_zero() {
            errors.push("exchange_interval: must be above zero".to_owned());
        }
        if self.message_retention < Duration::from_secs(1) {
            errors.push(format!("message_retention: must be at least 1s, got {:?}", self.message_retention));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ClusterError::Config(errors))
        }
    }

    /// foca's configuration: the LAN profile with this config's timings and a packet size that
    /// leaves room for the envelope (`overhead` bytes).
    pub(crate) fn foca_config(&self, overhead: usize) -> foca::Config {
        let mut config = foca::Config::new_lan(NonZeroU32::new(DEFAULT_EXPECTED_SIZE).unwrap_or(NonZeroU32::MIN));
        config.probe_period = self.probe_period;
        config.probe_rtt = self.effective_probe_rtt();
        config.suspect_to_down_after = self.suspect_timeout;
        config.max_packet_size =
            NonZeroUsize::new(self.max_packet_size.saturating_sub(overhead)).unwrap_or(NonZeroUsize::MIN);
        // Kept on (the LAN default): a member that *was* declared down (a partition, a long pause)
        // learns it at its next message and comes back at once under a renewed identity. The trap
        // (being declared down after refuting a suspicion) is closed before the declaration: see
        // `node/suspicion.rs`.
        config.notify_down_members = true;
        // foca's LAN default is every 65 s: after a partition heals, the two sides (each holding
        // the other down) only talk again when one of them announces to a down member. 10 s
        // brings the healing from about a minute to seconds, for two small packets per 10 s
        // while any member is down.
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(10),
            num_members: NonZeroUsize::MIN.saturating_add(1),
        });
        config
    }
}

/// foca's dissemination count for `members` live members: 4·log10(n+1), at least 3.
pub(crate) fn max_transmissions(members: usize) -> std::num::NonZeroU8 {
    let n = members.saturating_add(1) as f64;
    let tx = (4.0 * n.log10()).ceil().clamp(3.0, 255.0) as u8;
    std::num::NonZeroU8::new(tx).unwrap_or(std::num::NonZeroU8::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_lan_like() {
        let config = ClusterConfig::new("a", "127.0.0.1:0".parse().unwrap());
        config.validate().unwrap();
        assert_eq!(config.probe_period, Duration::from_secs(1));
        assert_eq!(config.effective_probe_rtt(), Duration::from_millis(500));
        assert!(config.suspect_timeout >= Duration::from_secs(4));
        let foca = config.foca_config(50);
        assert_eq!(foca.max_packet_size.get(), 1350);
        assert!(foca.notify_down_members);
    }

    #[test]
    fn validate_lists_every_problem() {
        let mut config = ClusterConfig::new("", "127.0.0.1:0".parse().unwrap());
        config.probe_rtt = Some(Duration::from_secs(2));
        config.keys = vec!["ok".into(), String::new()];
        config.seeds = vec!["no-port".into()];
        let ClusterError::Config(errors) = config.validate().unwrap_err() else { panic!("wrong error") };
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("node_id"));
    }

    #[test]
    fn transmissions_grow_slowly() {
        assert_eq!(max_transmissions(0).get(), 3);
        assert_eq!(max_transmissions(9).get(), 4);
        assert_eq!(max_transmissions(499).get(), 11);
    }
}
