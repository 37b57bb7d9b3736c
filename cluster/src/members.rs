//! The member list the gateway shows (`GET /cluster/members`, `gateway_cluster_members{state}`).
//!
//! It is built from foca's membership state, one entry per node name (foca keeps one identity per
//! name, see `identity.rs`), plus this node itself. Members declared down stay listed, as `down`,
//! for `down_retention` after they went down, then drop out; a member foca only ever heard of as
//! down (it went down before this node joined) is not listed.

use std::{
    collections::{BTreeMap, VecDeque},
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

/// Members whose state changed lately (up, down, restarted), newest last, one entry per node.
///
/// Exchanges carry them (see `node/membership.rs`), a second path next to foca's gossip, which sends each
/// update a fixed number of times and can miss a member under loss: a member that missed a
/// departure would otherwise only find out when it probes the departed node itself.
#[derive(Debug)]
pub(crate) struct ChangeLog {
    keep: Duration,
    entries: VecDeque<(Instant, NodeIdentity)>,
}

impl ChangeLog {
    /// Remembers changes for `keep`.
    pub(crate) fn new(keep: Duration) -> Self {
        Self { keep, entries: VecDeque::new() }
    }

    /// `id`'s state changed now.
    pub(crate) fn record(&mut self, id: &NodeIdentity, now: Instant) {
        self.entries.retain(|(_, known)| known.node() != id.node());
        self.entries.push_back((now, id.clone()));
    }

    /// Forgets changes older than `keep`.
    pub(crate) fn expire(&mut self, now: Instant) {
        while self.entries.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.keep) {
            self.entries.pop_front();
        }
    }

    /// Up to `max` identities that changed, newest first.
    pub(crate) fn recent(&self, max: usize) -> impl Iterator<Item = &NodeIdentity> {
        self.entries.iter().rev().take(max).map(|(_, id)| id)
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
    fn change_log_keeps_one_recent_entry_per_node() {
        let now = Instant::now();
        let addr: SocketAddr = "10.0.0.1:7946".parse().unwrap();
        let mut log = ChangeLog::new(Duration::from_secs(30));
        log.record(&NodeIdentity::new("a", addr, 1, 1), now);
        log.record(&NodeIdentity::new("b", addr, 1, 1), now + Duration::from_secs(10));
        log.record(&NodeIdentity::new("a", addr, 2, 2), now + Duration::from_secs(20));
        let names: Vec<_> = log.recent(10).map(|id| id.node().to_owned()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(log.recent(1).count(), 1);
        log.expire(now + Duration::from_secs(45));
        assert_eq!(log.recent(10).map(|id| id.node()).collect::<Vec<_>>(), vec!["a"]);
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
