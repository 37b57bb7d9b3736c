//! Membership anti-entropy, next to foca's gossip.
//!
//! foca spreads each membership update a fixed number of times and answers an announce with the
//! members that fit in one packet. Under loss, or when many nodes join at once through different
//! seeds, a member can miss an update for a long while (until it probes the node concerned itself,
//! which takes up to one probe period per member). Two cheap additions close that:
//! - a seed answers `Hello` with its whole member list, and every exchange carries a summary of
//!   the members the sender knows (count and XOR of slots); a node that knows members the sender
//!   does not sends it its list (rate-limited: see [`LIST_BURST`]);
//! - every exchange carries the current state of the members whose state changed in the last
//!   [`CHANGES_KEPT`] (at most [`MAX_CHANGES`]), so a missed departure arrives within an exchange
//!   or two.
//!
//! Lists and changes carry suspicions as alive (see [`as_discovery`]).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::{Node, Output, SwimRuntime};
use crate::{
    codec::{self, CoreFrame, MembershipSummary},
    identity::NodeIdentity,
};

/// How long, and how many, recent member changes ride along with every exchange.
pub(super) const CHANGES_KEPT: Duration = Duration::from_secs(30);
pub(super) const MAX_CHANGES: usize = 8;
/// Member lists a node sends at most in a burst, and per exchange interval after that. A list is
/// many packets in answer to one small one: without keys, a spoofed source could turn a node into
/// an amplifier, so this bounds what it sends to a few packets per second.
pub(super) const LIST_BURST: u32 = 4;
pub(super) const LISTS_PER_INTERVAL: u32 = 2;

impl Node {
    /// Answers a [`CoreFrame::Hello`]: this node's identity, to announce to, and its member list.
    pub(super) fn welcome(&mut self, joiner: &NodeIdentity, from: SocketAddr, now: Instant, out: &mut Output) {
        if joiner.node() == self.node_id() {
            return;
        }
        let welcome = CoreFrame::Welcome { from: self.foca.identity().clone() };
        self.send_frame(from, &welcome, out);
        if self.take_list_token(now) {
            self.send_member_list(from, out);
        }
    }

    /// Applies a member list. Not news for the cluster: applied without gossiping it again.
    pub(super) fn apply_member_list(
        &mut self,
        members: Vec<foca::Member<NodeIdentity>>,
        now: Instant,
        out: &mut Output,
    ) {
        let _ = self.foca.apply_many(members.into_iter(), false, runtime!(self, out));
        self.process_notes(now, out);
    }

    /// The membership half of an exchange: applies the sender's recent changes (news to this node
    /// is gossiped on as usual), and sends it this node's member list if this node knows members
    /// it does not: more of them, or as many but others (then only the side with the larger hash
    /// sends, and the other catches up at its next exchange).
    pub(super) fn sync_membership(
        &mut self,
        theirs: MembershipSummary,
        changes: Vec<foca::Member<NodeIdentity>>,
        from: SocketAddr,
        now: Instant,
        out: &mut Output,
    ) {
        if !changes.is_empty() {
            let _ = self.foca.apply_many(changes.into_iter(), true, runtime!(self, out));
            self.process_notes(now, out);
        }
        let ours = self.membership_summary();
        let ahead = ours.count > theirs.count || (ours.count == theirs.count && ours.hash > theirs.hash);
        if ours.hash != theirs.hash && ahead && self.take_list_token(now) {
            self.send_member_list(from, out);
        }
    }

    /// The current state of the members that changed lately (suspicions sent as alive: see
    /// `send_member_list`).
    pub(super) fn recent_changes(&self) -> Vec<foca::Member<NodeIdentity>> {
        self.changes
            .recent(MAX_CHANGES)
            .filter_map(|id| self.foca.iter_membership_state().find(|member| member.id() == id))
            .map(as_discovery)
            .collect()
    }

    /// Which members this node knows, this node included.
    pub(super) fn membership_summary(&self) -> MembershipSummary {
        use foca::Identity;
        self.foca.iter_membership_state().fold(
            MembershipSummary { count: 1, hash: self.foca.identity().addr() },
            |summary, member| MembershipSummary {
                count: summary.count.saturating_add(1),
                hash: summary.hash ^ member.id().addr(),
            },
        )
    }

    /// Whether a member list may be sent now (token bucket, see [`LIST_BURST`]).
    fn take_list_token(&mut self, now: Instant) -> bool {
        let every = self.settings.exchange_interval / LISTS_PER_INTERVAL;
        let last = *self.list_refilled.get_or_insert(now);
        let earned = now.saturating_duration_since(last).as_nanos() / every.as_nanos().max(1);
        if earned > 0 {
            self.list_tokens = (self.list_tokens as u128 + earned).min(LIST_BURST as u128) as u32;
            self.list_refilled = Some(now);
        }
        if self.list_tokens == 0 {
            return false;
        }
        self.list_tokens -= 1;
        true
    }

    /// Sends foca's membership state (but what it holds about the receiver itself) to `to`, as
    /// many frames as it takes.
    fn send_member_list(&mut self, to: SocketAddr, out: &mut Output) {
        let budget = self.max_message();
        let mut frames = Vec::new();
        let mut batch = Vec::new();
        let mut size = 0;
        for member in self.foca.iter_membership_state().filter(|member| member.id().socket() != to) {
            let len = codec::to_vec(member).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
            if size + len > budget && !batch.is_empty() {
                frames.push(CoreFrame::Members(std::mem::take(&mut batch)));
                size = 0;
            }
            size += len;
            batch.push(as_discovery(member));
        }
        if !batch.is_empty() {
            frames.push(CoreFrame::Members(batch));
        }
        for frame in &frames {
            self.send_frame(to, frame, out);
        }
    }
}

/// A member as sent in lists and change logs: for discovery, not for suspicion. A suspicion
/// applied this way would have no timer on the receiver, and could stay there if the refutation
/// does not follow it (the receiver's own probes are answered at the same incarnation).
fn as_discovery(member: &foca::Member<NodeIdentity>) -> foca::Member<NodeIdentity> {
    let state = if member.state() == foca::State::Suspect { foca::State::Alive } else { member.state() };
    foca::Member::new(member.id().clone(), member.incarnation(), state)
}
