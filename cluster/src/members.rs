//! The member list the gateway shows (`GET /cluster/members`, `gateway_cluster_members{state}`).
//!
//! It is built from foca's membership state, one entry per node name (foca keeps one identity per
//! name, see `identity.rs`), plus this node itself. Members declared down stay listed, as `down`,
//! for `down_retention` after they went down, then drop out; a member foca only ever heard of as
//! down (it went down before this node joined) is not listed.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::identity::NodeIdentity;

/// How a member is seen from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Failed a probe; it is declared down unless it refutes in time. Still counted as live.
    Suspect,
    /// Declared down (failed, or left).
    Down,
}

impl MemberState {
    /// `alive`, `suspect` or `down`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
        }
    }

    fn from_foca(state: foca::State) -> Self {
        match state {
            foca::State::Alive => MemberState::Alive,
            foca::State::Suspect => MemberState::Suspect,
            foca::State::Down => MemberState::Down,
        }
    }
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member of the cluster, as `GET /cluster/members` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's name (`ClusterConfig::node_id`).
    pub id: String,
    /// The address it gossips from.
    pub addr: SocketAddr,
    /// Its state, seen from this node.
    pub state: MemberState,
    /// SWIM incarnation of its current start: bumped each time it refutes a suspicion.
    pub incarnation: u64,
}

/// When each node went down, to keep down members listed for a while.
#[derive(Debug)]
pub(crate) struct DownLog {
    retention: Duration,
    since: BTreeMap<String, Instant>,
}

impl DownLog {
    /// Keeps down members listed for `retention`.
    pub(crate) fn new(retention: Duration) -> Self {
        Self { retention, since: BTreeMap::new() }
    }

    /// `node` went down now.
    pub(crate) fn down(&mut self, node: &str, now: Instant) {
        self.since.insert(node.to_owned(), now);
    }

    /// `node` is up (again).
    pub(crate) fn up(&mut self, node: &str) {
        self.since.remove(node);
    }

    /// Forgets members down for longer than the retention; returns whether any was forgotten.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let before = self.since.len();
        let retention = self.retention;
        self.since.retain(|_, since| now.saturating_duration_since(*since) < retention);
        before != self.since.len()
    }

    /// The list: `local` first, then every listed member, sorted by name.
    pub(crate) fn view<'a>(
        &self,
        local: Member,
        known: impl Iterator<Item = &'a foca::Member<NodeIdentity>>,
    ) -> Vec<Member> {
        let mut members: Vec<Member> = known
            .filter(|member| member.state() != foca::State::Down || self.since.contains_key(member.id().node()))
            .map(|member| Member {
                id: member.id().node().to_owned(),
                addr: member.id().socket(),
                state: MemberState::from_foca(member.state()),
                incarnation: u64::from(member.incarnation()),
            })
            .collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        members.insert(0, local);
        members
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names() {
        assert_eq!(MemberState::Suspect.to_string(), "suspect");
        let member =
            Member { id: "a".into(), addr: "10.0.0.1:7946".parse().unwrap(), state: MemberState::Down, incarnation: 2 };
        let json = serde_json::to_string(&member).unwrap();
        assert_eq!(json, r#"{"id":"a","addr":"10.0.0.1:7946","state":"down","incarnation":2}"#);
    }

    #[test]
    fn down_members_linger_then_drop() {
        let now = Instant::now();
        let addr: SocketAddr = "10.0.0.1:7946".parse().unwrap();
        let local = Member { id: "me".into(), addr, state: MemberState::Alive, incarnation: 0 };
        let known = [
            foca::Member::new(NodeIdentity::new("b", addr, 1, 1), 0, foca::State::Down),
            foca::Member::new(NodeIdentity::new("a", addr, 1, 1), 3, foca::State::Suspect),
            foca::Member::new(NodeIdentity::new("never-seen-up", addr, 1, 1), 0, foca::State::Down),
        ];
        let mut log = DownLog::new(Duration::from_secs(60));
        log.down("b", now);
        let view = log.view(local.clone(), known.iter());
        let names: Vec<_> = view.iter().map(|m| (m.id.as_str(), m.state)).collect();
        assert_eq!(names, vec![("me", MemberState::Alive), ("a", MemberState::Suspect), ("b", MemberState::Down)]);
        assert!(!log.expire(now + Duration::from_secs(59)));
        assert!(log.expire(now + Duration::from_secs(60)));
        assert_eq!(log.view(local, known.iter()).len(), 2);
    }
}
