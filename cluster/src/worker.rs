//! The tokio side: one task owns the [`Node`], the UDP socket and the timer queue; a second one
//! announces to the seeds until the node is in.
//!
//! The worker `select!`s over commands from the handle, datagrams, and the earliest timer, and
//! after each step carries out the node's [`Output`]: sends the packets, queues the timers,
//! delivers messages and durable state changes, and publishes the member list (only when it changed). It stops on
//! `Shutdown` (after leaving the cluster) or, without leaving, when the handle is dropped.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot, watch},
};
use tracing::debug;

use crate::{
    members::Member,
    messages::{Delivered, Message},
    node::{Node, NodeTimer, Output},
    query::{Answers, IncomingQuery, QueryResult, QUERIES_WAITING},
    state::{StateUpdate, Version},
    ClusterError,
};

/// Largest datagram read; anything above `max_packet_size` is then refused as oversized.
const RECEIVE_BUFFER: usize = 65_536;
/// First wait between announce attempts, doubled after each until [`ANNOUNCE_MAX_BACKOFF`].
const ANNOUNCE_MIN_BACKOFF: Duration = Duration::from_millis(200);
const ANNOUNCE_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait for one seed's DNS answer.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handle asks the worker.
pub(crate) enum Command {
    /// Say hello to these (freshly resolved) seed addresses.
    Join(Vec<SocketAddr>),
    /// Broadcast a message; the answer says whether it was accepted.
    Broadcast { message: Message, reply: oneshot::Sender<Result<(), ClusterError>> },
    /// Write durable state; the answer is the write's version.
    SetState { key: String, value: Vec<u8>, reply: oneshot::Sender<Result<Version, ClusterError>> },
    /// The durable state keys still wanted.
    ScopeState(HashSet<String>),
    /// Ask every live member; the answer comes when all answered or at `deadline`.
    Query { payload: Vec<u8>, deadline: Instant, reply: oneshot::Sender<Result<QueryResult, ClusterError>> },
    /// Replace the keyring.
    SetKeys { keys: Vec<String>, reply: oneshot::Sender<Result<(), ClusterError>> },
    /// Answer a member's query.
    Answer { query: IncomingQuery, payload: Vec<u8> },
    /// Leave the cluster and stop; `done` fires once the goodbyes are sent.
    Shutdown { done: oneshot::Sender<()> },
}

/// A timer in the queue, ordered by due time then by insertion.
struct Scheduled {
    at: Instant,
    seq: u64,
    timer: NodeTimer,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The channels the worker feeds.
pub(crate) struct WorkerChannels {
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) members: watch::Sender<Vec<Member>>,
    pub(crate) active: watch::Sender<bool>,
    pub(crate) messages: mpsc::UnboundedSender<Delivered>,
    pub(crate) state: mpsc::UnboundedSender<StateUpdate>,
    pub(crate) queries: mpsc::Sender<IncomingQuery>,
}

/// A query of this node's, waiting for answers.
struct Pending {
    answers: Answers,
    deadline: Instant,
    reply: oneshot::Sender<Result<QueryResult, ClusterError>>,
}

/// Owns the node, the socket and the timers.
pub(crate) struct Worker {
    node: Node,
    socket: UdpSocket,
    timers: BinaryHeap<Reverse<Scheduled>>,
    next_seq: u64,
    channels: WorkerChannels,
    out: Output,
    pending: HashMap<u64, Pending>,
}

impl Worker {
    /// A worker for a started node; `out` holds what `Node::start` asked for.
    pub(crate) fn new(node: Node, socket: UdpSocket, out: Output, channels: WorkerChannels) -> Self {
        Self { node, socket, timers: BinaryHeap::new(), next_seq: 0, channels, out, pending: HashMap::new() }
    }

    /// Runs until shutdown or until the handle is dropped.
    pub(crate) async fn run(mut self) {
        let mut buf = vec![0u8; RECEIVE_BUFFER];
        self.flush().await;
        loop {
            let next_query = self.pending.values().map(|p| p.deadline).min();
            let next_timer = self.timers.peek().map(|Reverse(scheduled)| scheduled.at);
            let next_timer = next_timer.into_iter().chain(next_query).min();
            let wake = tokio::time::Instant::from_std(
                next_timer.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                command = self.channels.commands.recv() => match command {
                    None => {
                        debug!("cluster handle dropped; stopping without leaving");
                        return;
                    }
                    Some(Command::Shutdown { done }) => {
                        self.node.leave(&mut self.out);
                        self.flush().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(Command::Join(seeds)) => self.node.join(&seeds, &mut self.out),
                    Some(Command::Broadcast { message, reply }) => {
                        let result = self.node.broadcast(message, Instant::now(), &mut self.out);
                        let _ = reply.send(result);
                    }
                    Some(Command::SetState { key, value, reply }) => {
                        let result = self.node.set_state(key, value, Instant::now(), &mut self.out);
                        let _ = reply.send(result);
                    }
                    Some(Command::ScopeState(keys)) => self.node.scope_state(keys),
                    Some(Command::Query { payload, deadline, reply }) => {
                        match self.node.query(payload, &mut self.out) {
                            Ok((id, asked)) => {
                                let answers = Answers::new(asked);
                                self.pending.insert(id, Pending { answers, deadline, reply });
                                self.finish_queries(Instant::now());
                            }
                            Err(error) => {
                                let _ = reply.send(Err(error));
                            }
                        }
                    }
                    Some(Command::Answer { query, payload }) => self.node.answer(&query, &payload, &mut self.out),
                    Some(Command::SetKeys { keys, reply }) => {
                        let _ = reply.send(self.node.set_keys(&keys));
                    }
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.node.handle_packet(&buf[..len], from, Instant::now(), &mut self.out),
                    // Linux reports ICMP errors of earlier sends here; nothing to do about them.
                    Err(error) => debug!(%error, "gossip socket receive"),
                },
                () = tokio::time::sleep_until(wake), if next_timer.is_some() => self.fire_due_timers(),
            }
            self.flush().await;
        }
    }

    /// Replies to the queries all asked answered, or whose time is up.
    fn finish_queries(&mut self, now: Instant) {
        let done: Vec<u64> =
            self.pending.iter().filter(|(_, p)| p.answers.complete() || p.deadline <= now).map(|(&id, _)| id).collect();
        for id in done {
            if let Some(pending) = self.pending.remove(&id) {
                let _ = pending.reply.send(Ok(pending.answers.finish()));
            }
        }
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        self.finish_queries(now);
        let mut due = Vec::new();
        while let Some(Reverse(scheduled)) = self.timers.peek() {
            if scheduled.at > now {
                break;
            }
            if let Some(Reverse(scheduled)) = self.timers.pop() {
                due.push(scheduled.timer);
            }
        }
        // Stable: same-priority timers keep their due order.
        due.sort_by_key(NodeTimer::priority);
        for timer in due {
            self.node.handle_timer(timer, now, &mut self.out);
        }
    }

    /// Carries out the node's output.
    async fn flush(&mut self) {
        let now = Instant::now();
        for (delay, timer) in self.out.timers.drain(..) {
            self.timers.push(Reverse(Scheduled { at: now + delay, seq: self.next_seq, timer }));
            self.next_seq += 1;
        }
        for (to, packet) in self.out.packets.drain(..) {
            if let Err(error) = self.socket.send_to(&packet, to).await {
                debug!(%error, %to, "gossip send");
            }
        }
        for delivered in self.out.delivered.drain(..) {
            // Nobody listening is fine: the gateway may not use messages.
            let _ = self.channels.messages.send(delivered);
        }
        for change in self.out.state_changes.drain(..) {
            let _ = self.channels.state.send(StateUpdate::Changed(change));
        }
        for key in self.out.state_expired.drain(..) {
            let _ = self.channels.state.send(StateUpdate::Expired(key));
        }
        for query in self.out.queries.drain(..) {
            if let Err(mpsc::error::TrySendError::Full(query)) = self.channels.queries.try_send(query) {
                debug!(from = %query.from, "a query left unanswered: {QUERIES_WAITING} are waiting already");
            }
        }
        if !self.out.answers.is_empty() {
            for part in self.out.answers.drain(..) {
                if let Some(pending) = self.pending.get_mut(&part.id) {
                    pending.answers.add(part);
                }
            }
            self.finish_queries(Instant::now());
        }
        self.out.events.clear();
        let active = self.node.is_active();
        self.channels.active.send_if_modified(|current| std::mem::replace(current, active) != active);
        if self.node.take_view_changed() {
            let members = self.node.members();
            self.channels.members.send_if_modified(|current| {
                if *current == members {
                    false
                } else {
                    *current = members;
                    true
                }
            });
        }
    }
}

/// Announces to the seeds, resolving them at every attempt, with back-off, whenever the node is
/// not in the cluster (at start, and again if it ever ends up alone). Ends with the worker.
pub(crate) async fn announce_to_seeds(
    seeds: Vec<String>,
    own: Vec<SocketAddr>,
    commands: mpsc::UnboundedSender<Command>,
    mut active: watch::Receiver<bool>,
) {
    let mut backoff = ANNOUNCE_MIN_BACKOFF;
    loop {
        while *active.borrow_and_update() {
            if active.changed().await.is_err() {
                return;
            }
            backoff = ANNOUNCE_MIN_BACKOFF;
        }
        let addrs = resolve_seeds(&seeds, &own).await;
        if addrs.is_empty() {
            debug!(?seeds, "no seed resolved yet");
        } else if commands.send(Command::Join(addrs)).is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            changed = active.changed() => if changed.is_err() { return },
        }
        backoff = (backoff * 2).min(ANNOUNCE_MAX_BACKOFF);
    }
}

/// Every address the seeds resolve to now, except this node's own.
async fn resolve_seeds(seeds: &[String], own: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    for seed in seeds {
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(seed.as_str())).await {
            Ok(Ok(resolved)) => addrs.extend(resolved.filter(|addr| !own.contains(addr))),
            Ok(Err(error)) => debug!(seed, %error, "cannot resolve seed"),
            Err(_) => debug!(seed, "seed resolution timed out"),
        }
    }
    addrs.sort();
    addrs.dedup();
    addrs
}
