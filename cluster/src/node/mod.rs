//! [`Node`]: one cluster member as a sans-IO state machine (foca + codec + envelope + messages).
//!
//! A node does no I/O and reads no clock: the driver (the tokio worker, or a simulation) hands it
//! packets with [`Node::handle_packet`], due timers with [`Node::handle_timer`] and commands, each
//! with the current time, and carries out the [`Output`]: packets to send, timers to schedule,
//! messages to deliver, membership events.
//!
//! Two concerns live in submodules: `suspicion` (why foca's down verdicts are confirmed first)
//! and `membership` (member lists and recent changes exchanged besides foca's gossip).

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use foca::{Foca, NoCustomBroadcast, Notification, OwnedNotification, Timer};
use rand::{rngs::SmallRng, Rng, RngExt, SeedableRng};
use tracing::{debug, info, warn};

use crate::{
    codec::{self, CoreFrame, SwimCodec, KIND_CORE, KIND_SWIM, OLDEST_WIRE_VERSION, WIRE_VERSION},
    codec_v1,
    config::{max_transmissions, ClusterConfig},
    counters::{RejectReason, Rejections},
    envelope::Envelope,
    identity::NodeIdentity,
    members::{ChangeLog, DownLog, Member, MemberState},
    messages::{Delivered, Message, MessageId, MessageStore, WireMessage},
    query::{AnswerPart, IncomingQuery, MAX_PARTS},
    state::{
        Hlc, Merged, StateChange, StateEntry, StateTable, Version, BUCKETS, HASH_BYTES, MAX_CLOCK_AHEAD, MAX_ENTRIES,
    },
    ClusterError,
};

/// Bytes a `Push` frame adds around its messages (variant, count, flag), rounded up.
const PUSH_OVERHEAD: usize = 16;
/// How often a rejection reason is logged at `warn` at most (the rest go to `debug`).
const WARN_EVERY: Duration = Duration::from_secs(60);

type Swim = Foca<NodeIdentity, SwimCodec, SmallRng, NoCustomBroadcast>;

/// A timer a [`Node`] asked for; give it back to [`Node::handle_timer`] when due.
#[derive(Clone, Debug)]
pub struct NodeTimer(TimerKind);

#[derive(Clone, Debug)]
enum TimerKind {
    Swim(Timer<NodeIdentity>),
    Confirm { timer: Timer<NodeIdentity>, attempt: u8 },
    Exchange,
    Sweep,
    PushPull,
}

impl NodeTimer {
    /// Order among timers due at the same instant (lower first). foca needs a probe's indirect
    /// stage handled before the next probe starts, should both be late.
    pub fn priority(&self) -> u8 {
        match &self.0 {
            TimerKind::Swim(Timer::SendIndirectProbe { .. }) => 0,
            TimerKind::Swim(Timer::ProbeRandomMember(_)) => 1,
            TimerKind::Swim(_) | TimerKind::Confirm { .. } => 2,
            TimerKind::Exchange | TimerKind::Sweep | TimerKind::PushPull => 3,
        }
    }
}

/// A change the driver may want to log or count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// This node is known by at least one live member (joined, or back after being isolated).
    Joined,
    /// No live member is left: this node is alone until a seed answers again.
    Isolated,
    /// The cluster declared this node down while it was alive; it rejoined under a new identity.
    Rejoined,
    /// This node left the cluster.
    Left,
    /// A member is live.
    MemberUp {
        /// Its name.
        id: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// A member was declared down (failed, or left).
    MemberDown {
        /// Its name.
        id: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// A member restarted (or rejoined): its new identity replaced the previous one.
    MemberRestarted {
        /// Its name.
        id: String,
        /// Its (new) address.
        addr: SocketAddr,
    },
}

/// What a [`Node`] asks its driver to do. Drain every field after each call.
#[derive(Debug, Default)]
pub struct Output {
    /// Datagrams to send.
    pub packets: Vec<(SocketAddr, Vec<u8>)>,
    /// Timers to schedule: hand each back after its delay.
    pub timers: Vec<(Duration, NodeTimer)>,
    /// Messages from other nodes, each delivered once.
    pub delivered: Vec<Delivered>,
    /// Membership changes.
    pub events: Vec<NodeEvent>,
    /// Durable state written by other nodes, each change once.
    pub state_changes: Vec<StateChange>,
    /// Durable state keys dropped: out of scope and older than the retention.
    pub state_expired: Vec<String>,
    /// Questions from other members, for the user to answer ([`Node::answer`]).
    pub queries: Vec<IncomingQuery>,
    /// Parts of other members' answers to this node's queries.
    pub answers: Vec<AnswerPart>,
}

impl Output {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
            && self.timers.is_empty()
            && self.delivered.is_empty()
            && self.events.is_empty()
            && self.state_changes.is_empty()
            && self.state_expired.is_empty()
            && self.queries.is_empty()
            && self.answers.is_empty()
    }
}

/// foca's window to the outside: seals what foca sends, records timers and notifications.
struct SwimRuntime<'a> {
    envelope: &'a Envelope,
    versions: &'a Versions,
    rng: &'a mut SmallRng,
    notes: &'a mut Vec<OwnedNotification<NodeIdentity>>,
    out: &'a mut Output,
}

impl foca::Runtime<NodeIdentity> for SwimRuntime<'_> {
    fn notify(&mut self, notification: Notification<'_, NodeIdentity>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: NodeIdentity, data: &[u8]) {
        // SWIM packets are the same in both wire versions: only the version byte differs.
        let packet = self.envelope.seal(self.versions.swim_of(to.socket()), KIND_SWIM, data, self.rng);
        self.out.packets.push((to.socket(), packet));
    }

    fn submit_after(&mut self, event: Timer<NodeIdentity>, after: Duration) {
        self.out.timers.push((after, NodeTimer(TimerKind::Swim(event))));
    }
}

/// Builds a [`SwimRuntime`] from disjoint fields of a [`Node`].
macro_rules! runtime {
    ($node:ident, $out:ident) => {
        SwimRuntime {
            envelope: &$node.envelope,
            versions: &$node.versions,
            rng: &mut $node.rng,
            notes: &mut $node.notes,
            out: $out,
        }
    };
}

mod membership;
mod suspicion;

use membership::{CHANGES_KEPT, LIST_BURST};
pub use suspicion::CONFIRM_ATTEMPTS;
#[cfg(test)]
mod tests;

/// The wire version each peer speaks, by address: the newest of the core frames it sent this
/// node (SWIM packets do not tell: they go to a peer not heard from yet in the oldest version,
/// which every node takes, and would hide a newer one). Core frames go to a peer not heard from
/// yet in the newest version (and a seed is greeted in both, see [`Node::join`]).
#[derive(Debug)]
struct Versions {
    newest: u8,
    peers: HashMap<SocketAddr, u8>,
}

impl Versions {
    fn of(&self, peer: SocketAddr) -> u8 {
        self.peers.get(&peer).copied().unwrap_or(self.newest)
    }

    fn swim_of(&self, peer: SocketAddr) -> u8 {
        self.peers.get(&peer).copied().unwrap_or(OLDEST_WIRE_VERSION)
    }

    fn heard(&mut self, peer: SocketAddr, version: u8) {
        let known = self.peers.entry(peer).or_insert(version);
        *known = (*known).max(version);
    }

    /// Forgets a peer that went down: it may come back speaking another version.
    fn forget(&mut self, peer: SocketAddr) {
        self.peers.remove(&peer);
    }
}

/// Settings a node reads after start.
#[derive(Debug)]
struct Settings {
    confirm_interval: Duration,
    exchange_interval: Duration,
    exchange_fanout: usize,
    broadcast_fanout: usize,
    sweep_interval: Duration,
    push_pull_interval: Duration,
}

/// One cluster member, sans IO. See the module documentation.
pub struct Node {
    foca: Swim,
    foca_config: foca::Config,
    envelope: Envelope,
    versions: Versions,
    rng: SmallRng,
    store: MessageStore,
    state: StateTable,
    /// The wall clock at `clock_base` (ms since the Unix epoch), for durable state's times.
    started_ms: u64,
    /// When the node started (set by [`Node::start`]).
    clock_base: Option<Instant>,
    /// When a member coming up last set off a push-pull.
    eager_push_pull: Option<Instant>,
    next_query: u64,
    down: DownLog,
    changes: ChangeLog,
    settings: Settings,
    rejections: Arc<Rejections>,
    incarnation: Arc<AtomicU16>,
    notes: Vec<OwnedNotification<NodeIdentity>>,
    warned: [Option<Instant>; RejectReason::ALL.len()],
    active: bool,
    left: bool,
    view_changed: bool,
    /// Member lists that may still be sent now (see [`Node::take_list_token`]).
    list_tokens: u32,
    list_refilled: Option<Instant>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("identity", self.foca.identity())
            .field("active", &self.active)
            .field("members", &self.foca.num_members())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node for `config`, reached at `advertise`, started at `started_ms` (wall clock, ms since
    /// the Unix epoch: orders restarts of the same node) with randomness from `seed`.
    /// Call [`Node::start`] next.
    pub fn new(
        config: &ClusterConfig,
        advertise: SocketAddr,
        started_ms: u64,
        seed: u64,
    ) -> Result<Self, ClusterError> {
        config.validate()?;
        let mut rng = SmallRng::seed_from_u64(seed);
        let foca_rng = SmallRng::seed_from_u64(rng.next_u64());
        let identity = NodeIdentity::new(&config.node_id, advertise, started_ms, rng.next_u64());
        let envelope = Envelope::new(&config.cluster, &config.keys, config.max_packet_size);
        // foca's packet goes inside the envelope, after the body's kind byte.
        let foca_config = config.foca_config(envelope.overhead() + 1);
        let incarnation = Arc::new(AtomicU16::new(0));
        let foca = Foca::new(identity, foca_config.clone(), foca_rng, SwimCodec::new(incarnation.clone()));
        let rtt = config.effective_probe_rtt();
        Ok(Self {
            foca,
            foca_config,
            envelope,
            versions: Versions { newest: WIRE_VERSION, peers: HashMap::new() },
            rng,
            store: MessageStore::new(config.message_retention),
            state: StateTable::new(config.state_retention),
            started_ms,
            clock_base: None,
            eager_push_pull: None,
            next_query: 1,
            down: DownLog::new(config.down_retention),
            changes: ChangeLog::new(CHANGES_KEPT),
            settings: Settings {
                confirm_interval: rtt / 2,
                exchange_interval: config.exchange_interval,
                exchange_fanout: config.exchange_fanout.get(),
                broadcast_fanout: config.broadcast_fanout.get(),
                sweep_interval: config.probe_period.min(Duration::from_secs(1)),
                push_pull_interval: config.push_pull_interval,
            },
            rejections: Arc::new(Rejections::default()),
            incarnation,
            notes: Vec::new(),
            warned: [None; RejectReason::ALL.len()],
            active: false,
            left: false,
            view_changed: true,
            list_tokens: LIST_BURST,
            list_refilled: None,
        })
    }

    /// Schedules the node's periodic work (anti-entropy, expiry). `now` is the moment of
    /// `started_ms`: durable state's wall clock counts on from there.
    pub fn start(&mut self, now: Instant, out: &mut Output) {
        self.clock_base = Some(now);
        let first_exchange = self.jittered(self.settings.exchange_interval);
        out.timers.push((first_exchange, NodeTimer(TimerKind::Exchange)));
        out.timers.push((self.settings.sweep_interval, NodeTimer(TimerKind::Sweep)));
        let first_push_pull = self.jittered(self.settings.push_pull_interval);
        out.timers.push((first_push_pull, NodeTimer(TimerKind::PushPull)));
    }

    /// This node's name.
    pub fn node_id(&self) -> &str {
        self.foca.identity().node()
    }

    /// The address this node advertises.
    pub fn advertise(&self) -> SocketAddr {
        self.foca.identity().socket()
    }

    /// Whether at least one live member knows this node (foca's `Active`, until `Idle`).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Live members other than this node (alive or suspect).
    pub fn live_members(&self) -> usize {
        self.foca.num_members()
    }

    /// Dropped-packet counters (shared: they keep counting).
    pub fn rejections(&self) -> Arc<Rejections> {
        self.rejections.clone()
    }

    /// Whether the member list may have changed since the last call (then rebuild it with
    /// [`Node::members`]). Suspicions and incarnations change without events, so this also turns
    /// true at every sweep.
    pub fn take_view_changed(&mut self) -> bool {
        std::mem::take(&mut self.view_changed)
    }

    /// The member list: this node first, then the others sorted by name; down members for
    /// `down_retention` after they went down.
    pub fn members(&self) -> Vec<Member> {
        let me = self.foca.identity();
        let local = Member {
            id: me.node().to_owned(),
            addr: me.socket(),
            state: if self.left { MemberState::Down } else { MemberState::Alive },
            incarnation: u64::from(self.incarnation.load(Ordering::Relaxed)),
        };
        self.down.view(local, self.foca.iter_membership_state())
    }

    /// Asks each seed address to let this node in. Call again (with fresh DNS answers) until
    /// [`Node::is_active`]; once a seed answers, foca's announce brings the member list.
    pub fn join(&mut self, seeds: &[SocketAddr], out: &mut Output) {
        if self.left {
            return;
        }
        let hello = CoreFrame::Hello { from: self.foca.identity().clone() };
        let own = self.advertise();
        for &seed in seeds.iter().filter(|&&seed| seed != own) {
            // A seed not heard from may run the version before: greet it in both.
            self.send_frame(seed, &hello, out);
            if self.versions.newest > OLDEST_WIRE_VERSION && !self.versions.peers.contains_key(&seed) {
                self.send_frame_as(OLDEST_WIRE_VERSION, seed, &hello, out);
            }
        }
    }

    /// Sends `message` to every other member: pushed at once to a few, then spread by them and by
    /// anti-entropy. Never delivered back to this node.
    pub fn broadcast(&mut self, message: Message, now: Instant, out: &mut Output) -> Result<(), ClusterError> {
        if self.left {
            return Err(ClusterError::Stopped);
        }
        let me = self.foca.identity();
        // The largest encoding this message can have (varints at their widest).
        let probe = WireMessage {
            id: MessageId { origin: me.node().to_owned(), boot: u64::MAX, seq: u64::MAX },
            age_ms: u32::MAX,
            message,
        };
        let size = codec::to_vec(&probe).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
        let max = self.max_message();
        if size > max {
            return Err(ClusterError::MessageTooLarge { size, max });
        }
        let boot = me.boot();
        let node = me.node().to_owned();
        let wire = self.store.originate(&node, boot, probe.message, now);
        debug!(seq = wire.id.seq, "broadcasting a cluster message");
        self.push_to_fanout(std::slice::from_ref(&wire), None, out, relayed_messages);
        Ok(())
    }

    /// Writes `value` under `key` in the durable state (see `state.rs`): pushed at once to a few
    /// members, then held by every node, those down or cut off now included once they are back,
    /// until the key leaves the scope. The write wins over every one this node has seen. Not
    /// delivered back to this node.
    pub fn set_state(
        &mut self,
        key: String,
        value: Vec<u8>,
        now: Instant,
        out: &mut Output,
    ) -> Result<Version, ClusterError> {
        if self.left {
            return Err(ClusterError::Stopped);
        }
        // The largest encoding this entry can have (varints at their widest).
        let origin = self.node_id().to_owned();
        let widest = Version { time: Hlc { ms: u64::MAX, counter: u32::MAX }, origin };
        let probe = StateEntry { key, version: widest, value };
        let size = codec::to_vec(&probe).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
        let max = self.max_message();
        if size > max {
            return Err(ClusterError::MessageTooLarge { size, max });
        }
        let wall_ms = self.wall_ms(now);
        let entry = self.state.set(probe.key, probe.value, &probe.version.origin, wall_ms);
        self.push_to_fanout(std::slice::from_ref(&entry), None, out, relayed_state);
        Ok(entry.version)
    }

    /// The durable state keys the user still wants: entries of other keys are dropped once
    /// older than `state_retention`, and refused from peers then.
    pub fn scope_state(&mut self, keys: HashSet<String>) {
        self.state.scope(keys);
    }

    /// The durable value of `key`, and the write it came from.
    pub fn state_value(&self, key: &str) -> Option<(&[u8], &Version)> {
        self.state.get(key)
    }

    /// How many durable state entries this node holds.
    pub fn state_len(&self) -> usize {
        self.state.len()
    }

    /// A node that speaks only the wire version before this one: a stand-in, in tests, for a
    /// node not yet upgraded.
    #[cfg(test)]
    pub(crate) fn speaking_only_the_previous_version(mut self) -> Self {
        self.versions.newest = OLDEST_WIRE_VERSION;
        self
    }

    /// Replaces the keyring while running (a key rotation: see `ClusterConfig::keys`). A node
    /// started without keys stays open, and one started with keys cannot drop them all: the
    /// packet layout differs.
    pub fn set_keys(&mut self, keys: &[String]) -> Result<(), ClusterError> {
        let mut errors = Vec::new();
        if !self.envelope.sealed() {
            errors.push("keys: this node was started without keys; start it with them".to_owned());
        }
        if keys.is_empty() {
            errors.push("keys: at least one is needed".to_owned());
        }
        for (i, _) in keys.iter().enumerate().filter(|(_, key)| key.is_empty()) {
            errors.push(format!("keys[{i}]: must not be empty"));
        }
        if !errors.is_empty() {
            return Err(ClusterError::Config(errors));
        }
        self.envelope = self.envelope.rekeyed(keys);
        info!(keys = keys.len(), "cluster keyring replaced");
        Ok(())
    }

    /// Asks every live member `payload` (see `query.rs`); the query's number and the members
    /// asked. Their answers come out as [`Output::answers`].
    pub fn query(&mut self, payload: Vec<u8>, out: &mut Output) -> Result<(u64, Vec<String>), ClusterError> {
        if self.left {
            return Err(ClusterError::Stopped);
        }
        let id = self.next_query;
        self.next_query += 1;
        let frame = CoreFrame::Query { id, payload };
        let size = codec::to_vec(&frame).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
        let max = self.max_message();
        if size > max {
            return Err(ClusterError::MessageTooLarge { size, max });
        }
        let members: Vec<(String, SocketAddr)> =
            self.foca.iter_members().map(|m| (m.id().node().to_owned(), m.id().socket())).collect();
        for (_, addr) in &members {
            self.send_frame(*addr, &frame, out);
        }
        Ok((id, members.into_iter().map(|(name, _)| name).collect()))
    }

    /// Answers `query` with `payload`, in as many parts as it takes; an answer of more than
    /// `MAX_PARTS` parts is not sent (the asker counts this node as not answering).
    pub fn answer(&mut self, query: &IncomingQuery, payload: &[u8], out: &mut Output) {
        let from = self.node_id().to_owned();
        // A part's frame around its bytes: the variant, the numbers, the name, the length.
        let room = self.max_message().saturating_sub(from.len() + 32).max(1);
        let parts = payload.len().div_ceil(room).max(1);
        if parts > MAX_PARTS {
            warn!(len = payload.len(), "an answer to a cluster query is too large to send");
            return;
        }
        let chunks: Vec<&[u8]> = if payload.is_empty() { vec![&[]] } else { payload.chunks(room).collect() };
        for (part, bytes) in chunks.into_iter().enumerate() {
            let frame = CoreFrame::Answer {
                id: query.id,
                from: from.clone(),
                part: part as u16,
                parts: parts as u16,
                bytes: bytes.to_vec(),
            };
            self.send_frame(query.from, &frame, out);
        }
    }

    /// Starts a push-pull with `to`: this node's bucket hashes, as many frames as they take.
    fn send_state_digest(&mut self, to: SocketAddr, out: &mut Output) {
        let per_frame = self.max_body().saturating_sub(PUSH_OVERHEAD) / HASH_BYTES;
        for digest in self.state.digest(per_frame) {
            self.send_frame(to, &CoreFrame::StateDigest(digest), out);
        }
    }

    /// Wall-clock milliseconds now, for durable state: the start time plus the monotonic time
    /// since, so a node's times never go backwards.
    fn wall_ms(&mut self, now: Instant) -> u64 {
        let base = *self.clock_base.get_or_insert(now);
        let since = u64::try_from(now.saturating_duration_since(base).as_millis()).unwrap_or(u64::MAX);
        self.started_ms.saturating_add(since)
    }

    /// Leaves the cluster: declares this node down to a few members (foca's leave, plus two more
    /// rounds of gossip so the news survives some loss). The node stays inert afterwards.
    pub fn leave(&mut self, out: &mut Output) {
        if self.left {
            return;
        }
        self.left = true;
        self.view_changed = true;
        if let Err(error) = self.foca.leave_cluster(runtime!(self, out)) {
            debug!(%error, "leaving the cluster");
        }
        for _ in 0..2 {
            let _ = self.foca.gossip(runtime!(self, out));
        }
        self.notes.clear();
        self.active = false;
        out.events.push(NodeEvent::Left);
    }

    /// Handles one datagram received from `from`.
    pub fn handle_packet(&mut self, packet: &[u8], from: SocketAddr, now: Instant, out: &mut Output) {
        if self.left {
            return;
        }
        let (version, body) = match self.envelope.open(packet) {
            Ok((version, _)) if version > self.versions.newest => return self.reject(RejectReason::Version, from, now),
            Ok(opened) => opened,
            Err(reason) => return self.reject(reason, from, now),
        };
        let Some((&kind, payload)) = body.split_first() else {
            return self.reject(RejectReason::Truncated, from, now);
        };
        if kind == KIND_CORE {
            self.versions.heard(from, version);
        }
        match kind {
            KIND_SWIM => {
                let result = self.foca.handle_data(payload, runtime!(self, out));
                self.process_notes(now, out);
                if let Err(error) = result {
                    let reason = match error {
                        foca::Error::DataFromOurselves => RejectReason::Identity,
                        foca::Error::DataTooBig => RejectReason::Oversized,
                        _ => RejectReason::Decode,
                    };
                    self.reject(reason, from, now);
                }
            }
            KIND_CORE if version == WIRE_VERSION => match codec::from_exact::<CoreFrame>(payload) {
                Ok(frame) => self.handle_frame(frame, from, now, out),
                Err(_) => self.reject(RejectReason::Decode, from, now),
            },
            KIND_CORE => match codec_v1::decode(payload) {
                Ok(Some(frame)) => self.handle_frame(frame, from, now, out),
                Ok(None) => debug!(%from, "a message of the previous wire version; not readable here"),
                Err(_) => self.reject(RejectReason::Decode, from, now),
            },
            _ => self.reject(RejectReason::Decode, from, now),
        }
    }

    /// Handles a timer this node scheduled, now due.
    pub fn handle_timer(&mut self, timer: NodeTimer, now: Instant, out: &mut Output) {
        if self.left {
            return;
        }
        match timer.0 {
            TimerKind::Swim(timer @ Timer::ChangeSuspectToDown { .. }) => self.confirm_or_declare(timer, 0, now, out),
            TimerKind::Confirm { timer, attempt } => self.confirm_or_declare(timer, attempt, now, out),
            TimerKind::Swim(timer) => {
                if let Err(error) = self.foca.handle_timer(timer, runtime!(self, out)) {
                    debug!(%error, "foca timer");
                }
                self.process_notes(now, out);
            }
            TimerKind::Exchange => {
                let changes = self.recent_changes();
                let changes_len = codec::to_vec(&changes).map(|bytes| bytes.len()).unwrap_or_default();
                let room = self.max_body().saturating_sub(PUSH_OVERHEAD + changes_len);
                let digest = self.store.digest(now, room);
                let frame = CoreFrame::Digest { messages: digest, members: self.membership_summary(), changes };
                for peer in self.pick_members(self.settings.exchange_fanout, None) {
                    self.send_frame(peer, &frame, out);
                }
                let next = self.jittered(self.settings.exchange_interval);
                out.timers.push((next, NodeTimer(TimerKind::Exchange)));
            }
            TimerKind::PushPull => {
                let wall_ms = self.wall_ms(now);
                out.state_expired.extend(self.state.expire(wall_ms));
                if let Some(peer) = self.pick_members(1, None).pop() {
                    self.send_state_digest(peer, out);
                }
                let next = self.jittered(self.settings.push_pull_interval);
                out.timers.push((next, NodeTimer(TimerKind::PushPull)));
            }
            TimerKind::Sweep => {
                self.store.expire(now);
                self.down.expire(now);
                self.changes.expire(now);
                self.view_changed = true;
                out.timers.push((self.settings.sweep_interval, NodeTimer(TimerKind::Sweep)));
            }
        }
    }

    fn handle_frame(&mut self, frame: CoreFrame, from: SocketAddr, now: Instant, out: &mut Output) {
        match frame {
            CoreFrame::Hello { from: joiner } => self.welcome(&joiner, from, now, out),
            CoreFrame::Members(members) => self.apply_member_list(members, now, out),
            CoreFrame::Welcome { from: seed } => {
                if seed.node() != self.node_id() {
                    if let Err(error) = self.foca.announce(seed, runtime!(self, out)) {
                        debug!(%error, "announce");
                    }
                    self.process_notes(now, out);
                }
            }
            CoreFrame::Push { messages, relay } => self.receive_messages(messages, relay, from, now, out),
            CoreFrame::Digest { messages: digest, members, changes } => {
                self.sync_membership(members, changes, from, now, out);
                let pull = self.store.missing(&digest);
                if !pull.wanted.is_empty() {
                    self.send_frame(from, &CoreFrame::Pull(pull), out);
                }
                let lacking = self.store.lacking(&digest, now);
                self.send_messages(from, &lacking, out);
            }
            CoreFrame::Pull(request) => {
                let found = self.store.get(&request, now);
                self.send_messages(from, &found, out);
            }
            CoreFrame::SuspectCheck { target, incarnation, from: checker } => {
                self.answer_suspect_check(target, incarnation, checker, now, out)
            }
            CoreFrame::State { entries, relay } => self.receive_state(entries, relay, from, now, out),
            CoreFrame::StateDigest(digest) => {
                let differing = self.state.differing(&digest);
                if !differing.is_empty() {
                    let ours = self.state.entries_in(&differing);
                    self.send_state(from, &ours, out);
                    self.send_frame(from, &CoreFrame::StateWant(differing), out);
                }
            }
            CoreFrame::Query { id, payload } => out.queries.push(IncomingQuery { from, id, payload }),
            CoreFrame::Answer { id, from: member, part, parts, bytes } => {
                out.answers.push(AnswerPart { id, from: member, part, parts, bytes })
            }
            CoreFrame::StateWant(mut buckets) => {
                buckets.retain(|&bucket| usize::from(bucket) < BUCKETS);
                let ours = self.state.entries_in(&buckets);
                self.send_state(from, &ours, out);
            }
        }
    }

    fn receive_state(
        &mut self,
        entries: Vec<StateEntry>,
        relay: bool,
        from: SocketAddr,
        now: Instant,
        out: &mut Output,
    ) {
        let wall_ms = self.wall_ms(now);
        let mut fresh = Vec::new();
        let (mut ahead, mut full) = (0, 0);
        for entry in entries {
            let forward = relay.then(|| entry.clone());
            match self.state.merge(entry, wall_ms) {
                Merged::Changed(change) => {
                    out.state_changes.push(change);
                    fresh.extend(forward);
                }
                Merged::Stale => {}
                Merged::FromTheFuture => ahead += 1,
                Merged::Full => full += 1,
            }
        }
        if ahead + full > 0 {
            warn!(
                %from, stamped_ahead = ahead, over_the_bound = full,
                "refused durable state entries: stamped more than {MAX_CLOCK_AHEAD:?} ahead of this node's clock \
                 (a node's clock is wrong), or new keys past the table's {MAX_ENTRIES}"
            );
        }
        self.push_to_fanout(&fresh, Some(from), out, relayed_state);
    }

    fn receive_messages(
        &mut self,
        messages: Vec<WireMessage>,
        relay: bool,
        from: SocketAddr,
        now: Instant,
        out: &mut Output,
    ) {
        let mut fresh = Vec::new();
        for message in messages {
            if self.store.has_seen(&message.id) {
                continue;
            }
            let forward = relay.then(|| message.clone());
            if let Some(delivered) = self.store.accept(message, now) {
                out.delivered.push(delivered);
                fresh.extend(forward);
            }
        }
        self.push_to_fanout(&fresh, Some(from), out, relayed_messages);
    }

    fn process_notes(&mut self, now: Instant, out: &mut Output) {
        if self.notes.is_empty() {
            return;
        }
        let mut notes = std::mem::take(&mut self.notes);
        for note in notes.drain(..) {
            self.view_changed = true;
            match note {
                OwnedNotification::MemberUp(id) => {
                    info!(member = id.node(), addr = %id.socket(), "cluster member up");
                    self.down.up(id.node());
                    self.changes.record(&id, now);
                    // A member that joins or comes back compares state at once (one such
                    // push-pull a second: a healed partition brings many members up together).
                    let quiet = self
                        .eager_push_pull
                        .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
                    if quiet {
                        self.eager_push_pull = Some(now);
                        self.send_state_digest(id.socket(), out);
                    }
                    out.events.push(NodeEvent::MemberUp { id: id.node().to_owned(), addr: id.socket() });
                }
                OwnedNotification::MemberDown(id) => {
                    info!(member = id.node(), addr = %id.socket(), "cluster member down");
                    self.down.down(id.node(), now);
                    self.versions.forget(id.socket());
                    self.changes.record(&id, now);
                    out.events.push(NodeEvent::MemberDown { id: id.node().to_owned(), addr: id.socket() });
                }
                OwnedNotification::Rename(_, new) => {
                    debug!(member = new.node(), addr = %new.socket(), "cluster member restarted");
                    self.changes.record(&new, now);
                    out.events.push(NodeEvent::MemberRestarted { id: new.node().to_owned(), addr: new.socket() });
                }
                OwnedNotification::Active => {
                    info!(members = self.foca.num_members(), "joined the cluster");
                    self.active = true;
                    out.events.push(NodeEvent::Joined);
                }
                OwnedNotification::Idle => {
                    warn!("no live cluster member left; retrying the seeds");
                    self.active = false;
                    out.events.push(NodeEvent::Isolated);
                }
                OwnedNotification::Defunct => {
                    self.active = false;
                }
                OwnedNotification::Rejoin(_) => {
                    warn!("the cluster declared this node down; rejoined under a new identity");
                    out.events.push(NodeEvent::Rejoined);
                }
            }
        }
        self.notes = notes;
        // Disseminate updates about as often as foca's LAN formula wants for the current size.
        let wanted = max_transmissions(self.foca.num_members());
        if wanted != self.foca_config.max_transmissions {
            self.foca_config.max_transmissions = wanted;
            let _ = self.foca.set_config(self.foca_config.clone());
        }
    }

    fn reject(&mut self, reason: RejectReason, from: SocketAddr, now: Instant) {
        self.rejections.record(reason);
        let slot = &mut self.warned[RejectReason::ALL.iter().position(|&r| r == reason).unwrap_or(0)];
        if slot.is_none_or(|at| now.saturating_duration_since(at) >= WARN_EVERY) {
            *slot = Some(now);
            warn!(%reason, %from, total = self.rejections.get(reason), "dropped gossip packet (logged once a minute per reason)");
        } else {
            debug!(%reason, %from, "dropped gossip packet");
        }
    }

    /// The largest body a packet can carry (after the envelope).
    fn max_body(&self) -> usize {
        self.envelope.max_body() - 1
    }

    /// The largest encoded message a packet can carry.
    fn max_message(&self) -> usize {
        self.max_body() - PUSH_OVERHEAD
    }

    fn send_frame(&mut self, to: SocketAddr, frame: &CoreFrame, out: &mut Output) {
        self.send_frame_as(self.versions.of(to), to, frame, out);
    }

    /// Sends `frame` to `to` in wire `version`; what that version does not have is not sent.
    fn send_frame_as(&mut self, version: u8, to: SocketAddr, frame: &CoreFrame, out: &mut Output) {
        let encoded = if version == WIRE_VERSION {
            codec::to_vec(frame)
        } else {
            match codec_v1::encode(frame) {
                Some(encoded) => encoded,
                None => return,
            }
        };
        match encoded {
            Ok(payload) if payload.len() <= self.max_body() => {
                out.packets.push((to, self.envelope.seal(version, KIND_CORE, &payload, &mut self.rng)));
            }
            Ok(payload) => debug!(len = payload.len(), "frame too large to send"),
            Err(error) => debug!(%error, "cannot encode frame"),
        }
    }

    /// Sends `messages` to `to` (not to be relayed), as many `Push` frames as it takes.
    fn send_messages(&mut self, to: SocketAddr, messages: &[WireMessage], out: &mut Output) {
        self.send_batched(to, messages, out, |messages| CoreFrame::Push { messages, relay: false });
    }

    /// Sends durable state `entries` to `to` (not to be relayed), as many `State` frames as it
    /// takes.
    fn send_state(&mut self, to: SocketAddr, entries: &[StateEntry], out: &mut Output) {
        self.send_batched(to, entries, out, |entries| CoreFrame::State { entries, relay: false });
    }

    /// Pushes `items` (none: nothing) to `broadcast_fanout` random members other than `except`,
    /// in frames made by `frame` that tell them to relay what is new to them.
    fn push_to_fanout<T: serde::Serialize + Clone>(
        &mut self,
        items: &[T],
        except: Option<SocketAddr>,
        out: &mut Output,
        frame: fn(Vec<T>) -> CoreFrame,
    ) {
        if items.is_empty() {
            return;
        }
        for peer in self.pick_members(self.settings.broadcast_fanout, except) {
            self.send_batched(peer, items, out, frame);
        }
    }

    /// Sends `items` to `to` in as few frames made by `frame` as fit in packets; an item too
    /// large for any packet is left out.
    fn send_batched<T: serde::Serialize + Clone>(
        &mut self,
        to: SocketAddr,
        items: &[T],
        out: &mut Output,
        frame: impl Fn(Vec<T>) -> CoreFrame,
    ) {
        let budget = self.max_message();
        let mut batch: Vec<T> = Vec::new();
        let mut size = 0;
        for item in items {
            let len = codec::to_vec(item).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
            if len > budget {
                continue;
            }
            if size + len > budget {
                let full = frame(std::mem::take(&mut batch));
                self.send_frame(to, &full, out);
                size = 0;
            }
            size += len;
            batch.push(item.clone());
        }
        if !batch.is_empty() {
            self.send_frame(to, &frame(batch), out);
        }
    }

    /// Up to `count` random live members' addresses, leaving out `except`.
    fn pick_members(&mut self, count: usize, except: Option<SocketAddr>) -> Vec<SocketAddr> {
        let mut candidates: Vec<SocketAddr> =
            self.foca.iter_members().map(|member| member.id().socket()).filter(|&addr| Some(addr) != except).collect();
        let count = count.min(candidates.len());
        for i in 0..count {
            let j = self.rng.random_range(i..candidates.len());
            candidates.swap(i, j);
        }
        candidates.truncate(count);
        candidates
    }

    /// `period` ±10%, so that nodes started together do not stay in step.
    fn jittered(&mut self, period: Duration) -> Duration {
        period.mul_f64(self.rng.random_range(0.9..1.1))
    }
}

/// Messages pushed eagerly: receivers relay them.
fn relayed_messages(messages: Vec<WireMessage>) -> CoreFrame {
    CoreFrame::Push { messages, relay: true }
}

/// Durable state pushed eagerly: receivers relay it.
fn relayed_state(entries: Vec<StateEntry>) -> CoreFrame {
    CoreFrame::State { entries, relay: true }
}
