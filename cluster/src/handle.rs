//! [`ClusterHandle`]: starts a node (socket, worker, announcer) and is the gateway's way in.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{
    counters::Rejections,
    members::Member,
    messages::{Delivered, Message},
    node::{Node, Output},
    query::{IncomingQuery, QueryResult, QUERIES_WAITING},
    state::{StateUpdate, Version},
    worker::{announce_to_seeds, Command, Worker, WorkerChannels},
    ClusterConfig, ClusterError,
};

/// How long [`ClusterHandle::shutdown`] waits for the goodbyes to be sent.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A running cluster node.
///
/// Dropping the handle stops the node at once *without* leaving: the others find out by probing,
/// as after a crash. Call [`ClusterHandle::shutdown`] to leave cleanly.
#[derive(Debug)]
pub struct ClusterHandle {
    node_id: String,
    local_addr: SocketAddr,
    advertise: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    members: watch::Receiver<Vec<Member>>,
    active: watch::Receiver<bool>,
    messages: Mutex<Option<mpsc::UnboundedReceiver<Delivered>>>,
    state: Mutex<Option<mpsc::UnboundedReceiver<StateUpdate>>>,
    queries: Mutex<Option<mpsc::Receiver<IncomingQuery>>>,
    rejections: Arc<Rejections>,
    worker: Option<JoinHandle<()>>,
    announcer: Option<JoinHandle<()>>,
}

impl ClusterHandle {
    /// Validates `config`, binds the UDP socket, and starts the worker and (with seeds) the
    /// announcer. Must be called within a tokio runtime.
    pub async fn spawn(config: ClusterConfig) -> Result<ClusterHandle, ClusterError> {
        config.validate()?;
        let socket =
            UdpSocket::bind(config.bind).await.map_err(|source| ClusterError::Bind { addr: config.bind, source })?;
        let local_addr = socket.local_addr().map_err(|source| ClusterError::Bind { addr: config.bind, source })?;
        let advertise = advertise_addr(&config, local_addr).await?;
        let started_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
        let mut node = Node::new(&config, advertise, started_ms, random_seed())?;
        let mut out = Output::default();
        node.start(Instant::now(), &mut out);
        let rejections = node.rejections();

        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let (members_tx, members_rx) = watch::channel(node.members());
        let (active_tx, active_rx) = watch::channel(false);
        let (message_tx, message_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = mpsc::unbounded_channel();
        let (query_tx, query_rx) = mpsc::channel(QUERIES_WAITING);
        let channels = WorkerChannels {
            commands: command_rx,
            members: members_tx,
            active: active_tx,
            messages: message_tx,
            state: state_tx,
            queries: query_tx,
        };
        let worker = tokio::spawn(Worker::new(node, socket, out, channels).run());
        let announcer = (!config.seeds.is_empty()).then(|| {
            let own = vec![local_addr, advertise];
            tokio::spawn(announce_to_seeds(config.seeds.clone(), own, command_tx.clone(), active_rx.clone()))
        });
        info!(node_id = config.node_id, %local_addr, %advertise, seeds = ?config.seeds,
            authenticated = !config.keys.is_empty(), "cluster node started");
        Ok(ClusterHandle {
            node_id: config.node_id,
            local_addr,
            advertise,
            commands: command_tx,
            members: members_rx,
            active: active_rx,
            messages: Mutex::new(Some(message_rx)),
            state: Mutex::new(Some(state_rx)),
            queries: Mutex::new(Some(query_rx)),
            rejections,
            worker: Some(worker),
            announcer,
        })
    }

    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address other nodes reach this one at.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise
    }

    /// Whether a live member knows this node (joined). `false` for a cluster of one.
    pub fn is_joined(&self) -> bool {
        *self.active.borrow()
    }

    /// The member list, this node first, then the others by name; members that went down stay
    /// listed (as `down`) for `down_retention`. Updated only when it changes.
    pub fn members(&self) -> watch::Receiver<Vec<Member>> {
        self.members.clone()
    }

    /// The messages other nodes broadcast, each delivered once, in arrival order.
    ///
    /// There is one stream per node: the first call takes it. Later calls get a receiver that
    /// is already closed (it yields `None`) and log a warning. Messages wait in the stream until
    /// read, so take it early.
    pub fn messages(&self) -> mpsc::UnboundedReceiver<Delivered> {
        let taken = self.messages.lock().map(|mut slot| slot.take()).unwrap_or(None);
        taken.unwrap_or_else(|| {
            warn!("ClusterHandle::messages called twice; the second receiver is closed");
            mpsc::unbounded_channel().1
        })
    }

    /// Sends `message` to every other live member (not back to this node). Returns once the
    /// worker has taken it: delivery is asynchronous, by gossip and anti-entropy.
    pub async fn broadcast(&self, message: Message) -> Result<(), ClusterError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Broadcast { message, reply }).map_err(|_| ClusterError::Stopped)?;
        answer.await.map_err(|_| ClusterError::Stopped)?
    }

    /// Writes `value` under `key` in the durable state: every member gets it, those down or cut
    /// off now included once they are back (push-pull), and keeps it until the key leaves the
    /// scope. Returns the write's version once the worker has taken it.
    pub async fn set_state(&self, key: String, value: Vec<u8>) -> Result<Version, ClusterError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::SetState { key, value, reply }).map_err(|_| ClusterError::Stopped)?;
        answer.await.map_err(|_| ClusterError::Stopped)?
    }

    /// The durable state keys this node's user still wants: entries of other keys are dropped
    /// once older than `state_retention` (and then refused from peers).
    pub fn scope_state(&self, keys: HashSet<String>) {
        let _ = self.commands.send(Command::ScopeState(keys));
    }

    /// Changes to the durable state made by other nodes' writes, each once, and keys expired.
    /// One stream per node, as [`ClusterHandle::messages`].
    pub fn state_updates(&self) -> mpsc::UnboundedReceiver<StateUpdate> {
        let taken = self.state.lock().map(|mut slot| slot.take()).unwrap_or(None);
        taken.unwrap_or_else(|| {
            warn!("ClusterHandle::state_updates called twice; the second receiver is closed");
            mpsc::unbounded_channel().1
        })
    }

    /// Asks every live member `payload`; their answers once all answered or `timeout` passed,
    /// with the members that did not answer listed.
    pub async fn query(&self, payload: Vec<u8>, timeout: Duration) -> Result<QueryResult, ClusterError> {
        let (reply, answer) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        self.commands.send(Command::Query { payload, deadline, reply }).map_err(|_| ClusterError::Stopped)?;
        answer.await.map_err(|_| ClusterError::Stopped)?
    }

    /// Other members' queries, for this node to answer with [`ClusterHandle::answer`]. One
    /// stream per node, as [`ClusterHandle::messages`]. At most [`QUERIES_WAITING`] wait to be
    /// taken; queries past that go unanswered (their asker lists this node as not answering).
    pub fn queries(&self) -> mpsc::Receiver<IncomingQuery> {
        let taken = self.queries.lock().map(|mut slot| slot.take()).unwrap_or(None);
        taken.unwrap_or_else(|| {
            warn!("ClusterHandle::queries called twice; the second receiver is closed");
            mpsc::channel(1).1
        })
    }

    /// Replaces the keyring while running: rotate a key with three rounds over every node,
    /// each finished everywhere before the next starts: `[old, new]` (new accepted), then
    /// `[new, old]` (new seals), then `[new]`. No member is lost on the way.
    pub async fn set_keys(&self, keys: Vec<String>) -> Result<(), ClusterError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::SetKeys { keys, reply }).map_err(|_| ClusterError::Stopped)?;
        answer.await.map_err(|_| ClusterError::Stopped)?
    }

    /// Answers `query` with `payload`.
    pub fn answer(&self, query: IncomingQuery, payload: Vec<u8>) {
        let _ = self.commands.send(Command::Answer { query, payload });
    }

    /// Dropped packets by reason (`truncated`, `oversized`, `version`, `cluster`, `auth`,
    /// `decode`, `identity`), zeros included.
    pub fn rejected(&self) -> Vec<(&'static str, u64)> {
        self.rejections.snapshot()
    }

    /// Leaves the cluster (tells a few members this node is going away) and stops the worker.
    /// Waits at most two seconds.
    pub async fn shutdown(mut self) {
        let (done, sent) = oneshot::channel();
        if self.commands.send(Command::Shutdown { done }).is_ok() {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, sent).await;
        }
        if let Some(worker) = self.worker.take() {
            worker.abort();
            let _ = worker.await;
        }
        info!(node_id = self.node_id, "cluster node left");
    }
}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.abort();
        }
        if let Some(announcer) = self.announcer.take() {
            announcer.abort();
        }
    }
}

/// The advertised address: the configured one resolved, or derived (see `ClusterConfig::advertise`).
async fn advertise_addr(config: &ClusterConfig, local: SocketAddr) -> Result<SocketAddr, ClusterError> {
    if let Some(value) = &config.advertise {
        let error = |reason: String| ClusterError::Advertise { value: value.clone(), reason };
        let mut resolved = tokio::net::lookup_host(value.as_str()).await.map_err(|e| error(e.to_string()))?;
        return resolved.next().ok_or_else(|| error("no address".to_owned()));
    }
    let ip = if local.ip().is_unspecified() {
        outward_ip(local.is_ipv6()).unwrap_or(if local.is_ipv6() {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        })
    } else {
        local.ip()
    };
    Ok(SocketAddr::new(ip, local.port()))
}

/// The local address of the interface that routes towards a documentation address. Connecting a
/// UDP socket only picks a route: nothing is sent.
fn outward_ip(v6: bool) -> Option<IpAddr> {
    let (bind, probe) = if v6 { ("[::]:0", "[2001:db8::1]:9") } else { ("0.0.0.0:0", "192.0.2.1:9") };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(probe).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// Randomness for the node (nonces, peer choice): from the OS, or from std's per-process random
/// hasher keys and the clock should the OS refuse.
fn random_seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default());
        hasher.finish()
    })
}
