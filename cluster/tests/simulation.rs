//! Deterministic simulation: many sans-IO [`Node`]s on one virtual clock, a seeded network with
//! loss, latency, partitions and crashes. Each scenario prints p50/p99 reach and detection times
//! (run with `--nocapture` to see them) and asserts bounds.
//!
//! The always-on scenarios (3, 50 and 500 nodes; 50 nodes for a simulated hour at 0% and 5% loss)
//! fit the debug profile. A few heavier ones (500 nodes under loss, an hour at 10% loss) are
//! `#[ignore]`d; run everything, with the table, in release:
//! `cargo test -p cluster --release --test simulation -- --include-ignored --nocapture --test-threads 1`.
//! `SIM_SEED=n` in the environment changes every scenario's random seed.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use cluster::{ClusterConfig, Delivered, MemberState, Message, Node, NodeEvent, NodeTimer, Output};
use rand::{rngs::SmallRng, Rng, RngExt, SeedableRng};

const SEEDS: usize = 3;

enum Kind {
    Packet { to: usize, from: SocketAddr, bytes: Vec<u8> },
    Timer { node: usize, timer: NodeTimer },
    Announce { node: usize },
}

struct Event {
    at: Duration,
    seq: u64,
    generation: u32,
    kind: Kind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct SimNode {
    id: String,
    addr: SocketAddr,
    node: Node,
    up: bool,
    generation: u32,
    /// Delivered messages with the virtual time of delivery.
    delivered: Vec<(Duration, Delivered)>,
    /// Membership events with their time.
    events: Vec<(Duration, NodeEvent)>,
    announce_backoff: Duration,
}

/// Network and cluster knobs of one simulation.
#[derive(Clone)]
struct Params {
    nodes: usize,
    loss: f64,
    seed: u64,
    keys: Vec<String>,
    /// Nodes start spread over this window.
    start_spread: Duration,
}

impl Params {
    /// `SIM_SEED` in the environment varies every scenario's seed, to try other runs.
    fn new(nodes: usize, loss: f64, seed: u64) -> Self {
        let vary = std::env::var("SIM_SEED").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let seed = seed ^ vary.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self { nodes, loss, seed, keys: Vec::new(), start_spread: Duration::from_secs(2) }
    }
}

struct Sim {
    t0: Instant,
    now: Duration,
    queue: BinaryHeap<Reverse<Event>>,
    seq: u64,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    rng: SmallRng,
    params: Params,
    /// Partition group per node; packets between groups are lost. Empty: no partition.
    groups: Vec<u8>,
    packets: u64,
}

fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8)), 7946)
}

fn config_for(i: usize, params: &Params) -> ClusterConfig {
    let mut config = ClusterConfig::new(&format!("node-{i:03}"), addr_of(i));
    // foca's LAN formula for the suspicion timeout at this size: 4 * max(1, log10 n) * probe period.
    let factor = (params.nodes as f64).log10().max(1.0) * 4.0;
    config.suspect_timeout = config.probe_period.mul_f64(factor);
    config.keys = params.keys.clone();
    config
}

impl Sim {
    fn new(params: Params) -> Self {
        let mut rng = SmallRng::seed_from_u64(params.seed);
        let mut sim = Sim {
            t0: Instant::now(),
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            rng: SmallRng::seed_from_u64(rng.next_u64()),
            params: params.clone(),
            groups: Vec::new(),
            packets: 0,
        };
        for i in 0..params.nodes {
            let node = Node::new(&config_for(i, &params), addr_of(i), 1_000, rng.next_u64()).unwrap();
            sim.by_addr.insert(addr_of(i), i);
            sim.nodes.push(SimNode {
                id: format!("node-{i:03}"),
                addr: addr_of(i),
                node,
                up: false,
                generation: 0,
                delivered: Vec::new(),
                events: Vec::new(),
                announce_backoff: Duration::from_millis(200),
            });
            let start = if i == 0 { Duration::ZERO } else { params.start_spread.mul_f64(rng.random_range(0.0..1.0)) };
            sim.push(start, 0, Kind::Announce { node: i });
        }
        sim
    }

    fn now(&self) -> Instant {
        self.t0 + self.now
    }

    fn push(&mut self, at: Duration, generation: u32, kind: Kind) {
        self.seq += 1;
        self.queue.push(Reverse(Event { at, seq: self.seq, generation, kind }));
    }

    fn apply(&mut self, i: usize, mut out: Output) {
        let generation = self.nodes[i].generation;
        for (delay, timer) in out.timers.drain(..) {
            self.push(self.now + delay, generation, Kind::Timer { node: i, timer });
        }
        let from = self.nodes[i].addr;
        for (to_addr, bytes) in out.packets.drain(..) {
            self.packets += 1;
            let Some(&to) = self.by_addr.get(&to_addr) else { continue };
            if !self.groups.is_empty() && self.groups[i] != self.groups[to] {
                continue;
            }
            if self.params.loss > 0.0 && self.rng.random_range(0.0..1.0) < self.params.loss {
                continue;
            }
            let latency = Duration::from_micros(self.rng.random_range(200..2_000));
            let to_generation = self.nodes[to].generation;
            self.push(self.now + latency, to_generation, Kind::Packet { to, from, bytes });
        }
        let now = self.now;
        let node = &mut self.nodes[i];
        node.delivered.extend(out.delivered.drain(..).map(|d| (now, d)));
        node.events.extend(out.events.drain(..).map(|e| (now, e)));
    }

    /// Runs until virtual time `until`.
    fn run_until(&mut self, until: Duration) {
        while let Some(Reverse(event)) = self.queue.peek() {
            if event.at > until {
                break;
            }
            let Some(Reverse(event)) = self.queue.pop() else { break };
            self.now = event.at;
            let mut out = Output::default();
            let now = self.now();
            match event.kind {
                Kind::Packet { to, from, bytes } => {
                    let node = &mut self.nodes[to];
                    if !node.up || node.generation != event.generation {
                        continue;
                    }
                    node.node.handle_packet(&bytes, from, now, &mut out);
                    self.apply(to, out);
                }
                Kind::Timer { node: i, timer } => {
                    let node = &mut self.nodes[i];
                    if !node.up || node.generation != event.generation {
                        continue;
                    }
                    node.node.handle_timer(timer, now, &mut out);
                    self.apply(i, out);
                }
                Kind::Announce { node: i } => {
                    let seeds: Vec<SocketAddr> = (0..SEEDS.min(self.nodes.len())).map(addr_of).collect();
                    let node = &mut self.nodes[i];
                    if node.generation != event.generation {
                        continue;
                    }
                    if !node.up {
                        node.up = true;
                        node.node.start(now, &mut out);
                    }
                    // The worker's announcer: retry with back-off until active.
                    if !node.node.is_active() {
                        node.node.join(&seeds, &mut out);
                    }
                    let backoff = node.announce_backoff;
                    node.announce_backoff = (backoff * 2).min(Duration::from_secs(5));
                    let generation = node.generation;
                    self.apply(i, out);
                    self.push(self.now + backoff, generation, Kind::Announce { node: i });
                }
            }
        }
        self.now = until;
    }

    fn up_nodes(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].up)
    }

    /// Runs until every up node sees every other up node live (by count), or `deadline`.
    fn converge(&mut self, deadline: Duration) -> Option<Duration> {
        let start = self.now;
        while self.now < deadline {
            let up = self.up_nodes().count();
            if up == self.nodes.len() && self.up_nodes().all(|i| self.nodes[i].node.live_members() == up - 1) {
                return Some(self.now - start);
            }
            let step = self.now + Duration::from_millis(100);
            self.run_until(step);
        }
        None
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
        self.nodes[i].generation += 1;
    }

    fn restart(&mut self, i: usize, started_ms: u64) {
        let seed = self.rng.next_u64();
        let node = &mut self.nodes[i];
        node.node = Node::new(&config_for(i, &self.params), node.addr, started_ms, seed).unwrap();
        node.generation += 1;
        node.up = false;
        node.announce_backoff = Duration::from_millis(200);
        let generation = node.generation;
        self.push(self.now, generation, Kind::Announce { node: i });
    }

    fn broadcast(&mut self, i: usize, message: Message) {
        let mut out = Output::default();
        let now = self.now();
        self.nodes[i].node.broadcast(message, now, &mut out).unwrap();
        self.apply(i, out);
    }

    /// `MemberDown` events about `id` seen by node `observer` after `since`.
    fn first_down(&self, observer: usize, id: &str, since: Duration) -> Option<Duration> {
        self.nodes[observer].events.iter().find_map(|(at, event)| match event {
            NodeEvent::MemberDown { id: down, .. } if down == id && *at >= since => Some(*at - since),
            _ => None,
        })
    }

    /// Downs of nodes that were up the whole time, and rejoins (a node declared down while alive).
    fn false_downs(&self, since: Duration, crashed: &[usize]) -> Vec<String> {
        let mut found = Vec::new();
        for (observer, node) in self.nodes.iter().enumerate() {
            for (at, event) in node.events.iter().filter(|(at, _)| *at >= since) {
                match event {
                    NodeEvent::MemberDown { id, .. } if !crashed.iter().any(|&c| &self.nodes[c].id == id) => {
                        found.push(format!("{at:?}: {} saw {id} down", node.id))
                    }
                    NodeEvent::Rejoined => found.push(format!("{at:?}: {} rejoined (observer {observer})", node.id)),
                    _ => {}
                }
            }
        }
        found
    }
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    let rank = ((values.len() as f64) * p).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// The `p` quantile of `values` in milliseconds, or `-` when the scenario measured none.
fn quantile(values: &mut [Duration], p: f64) -> String {
    if values.is_empty() {
        "-".to_owned()
    } else {
        ms(percentile(values, p))
    }
}

/// Broadcasts `count` resets from random up nodes, one per second, then waits `settle`; returns
/// every (message, receiver) reach time. Asserts each up node got each message exactly once.
fn broadcast_and_measure(sim: &mut Sim, count: usize, settle: Duration) -> Vec<Duration> {
    let start = sim.now;
    let before: Vec<usize> = sim.nodes.iter().map(|n| n.delivered.len()).collect();
    let mut sent = Vec::new();
    for k in 0..count {
        let up: Vec<usize> = sim.up_nodes().collect();
        let origin = up[sim.rng.random_range(0..up.len())];
        let message = Message(format!("message {k}").into_bytes());
        sim.broadcast(origin, message.clone());
        sent.push((sim.now, origin, message));
        let next = sim.now + Duration::from_secs(1);
        sim.run_until(next);
    }
    let end = sim.now + settle;
    sim.run_until(end);
    let mut reach = Vec::new();
    for i in sim.up_nodes().collect::<Vec<_>>() {
        let got = &sim.nodes[i].delivered[before[i]..];
        for (sent_at, origin, message) in &sent {
            let copies: Vec<_> = got.iter().filter(|(_, d)| &d.message == message).collect();
            if i == *origin {
                assert!(copies.is_empty(), "{} got its own message back", sim.nodes[i].id);
                continue;
            }
            assert_eq!(copies.len(), 1, "{} got {message:?} {} times", sim.nodes[i].id, copies.len());
            assert_eq!(copies[0].1.origin, sim.nodes[*origin].id);
            reach.push(copies[0].0 - *sent_at);
        }
    }
    assert!(sim.now >= start);
    reach
}

/// Crashes `count` random non-seed nodes and returns every (crashed, observer) detection time.
fn crash_and_measure(sim: &mut Sim, count: usize, wait: Duration) -> (Vec<Duration>, Vec<usize>) {
    let mut crashed = Vec::new();
    while crashed.len() < count {
        let first = if sim.nodes.len() > SEEDS { SEEDS } else { 1 };
        let i = sim.rng.random_range(first..sim.nodes.len());
        if sim.nodes[i].up && !crashed.contains(&i) {
            crashed.push(i);
        }
    }
    let at = sim.now;
    for &i in &crashed {
        sim.crash(i);
    }
    let end = sim.now + wait;
    sim.run_until(end);
    let mut detection = Vec::new();
    for observer in sim.up_nodes().collect::<Vec<_>>() {
        for &c in &crashed {
            let id = sim.nodes[c].id.clone();
            let seen = sim.first_down(observer, &id, at);
            let seen = seen.unwrap_or_else(|| panic!("{} never saw {id} down", sim.nodes[observer].id));
            detection.push(seen);
        }
    }
    (detection, crashed)
}

fn report(name: &str, sim: &Sim, converge: Duration, reach: &mut [Duration], detection: &mut [Duration]) {
    eprintln!(
        "| {name:<34} | {:>4} | {:>4.0}% | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>10} |",
        sim.nodes.len(),
        sim.params.loss * 100.0,
        ms(converge),
        quantile(reach, 0.5),
        quantile(reach, 0.99),
        quantile(detection, 0.5),
        quantile(detection, 0.99),
        sim.packets,
    );
}

/// Join, broadcast, crash: the whole life of a cluster of `n` nodes.
fn reach_and_detection(name: &str, params: Params, broadcasts: usize) -> (Vec<Duration>, Vec<Duration>) {
    let n = params.nodes;
    let mut sim = Sim::new(params);
    let converge = sim.converge(Duration::from_secs(120)).expect("cluster converged");
    let reach_bound = Duration::from_secs(5);
    let mut reach = broadcast_and_measure(&mut sim, broadcasts, reach_bound);
    // Detection: suspicion timeout + up to a probe period to be probed + confirmation + spread.
    let suspect = config_for(0, &sim.params).suspect_timeout;
    let wait = suspect + Duration::from_secs(12);
    let crashes = if n >= 50 { 3 } else { 1 };
    let (mut detection, crashed) = crash_and_measure(&mut sim, crashes, wait);
    assert!(sim.false_downs(Duration::ZERO, &crashed).is_empty(), "{:?}", sim.false_downs(Duration::ZERO, &crashed));
    report(name, &sim, converge, &mut reach, &mut detection);
    assert!(percentile(&mut reach, 1.0) <= reach_bound);
    // Every observer learns within the suspicion timeout plus a few seconds of probing and gossip.
    assert!(percentile(&mut detection, 1.0) <= suspect + Duration::from_secs(10), "slow detection");
    (reach, detection)
}

#[test]
fn reach_and_detection_3_nodes() {
    let mut params = Params::new(3, 0.0, 1);
    params.keys = vec!["sim-key".into()];
    reach_and_detection("3 nodes, sealed", params, 10);
}

#[test]
fn reach_and_detection_50_nodes() {
    reach_and_detection("50 nodes", Params::new(50, 0.0, 2), 10);
}

#[test]
fn reach_and_detection_500_nodes() {
    let mut params = Params::new(500, 0.0, 3);
    params.start_spread = Duration::from_secs(10);
    reach_and_detection("500 nodes", params, 10);
}

#[test]
#[ignore = "slow in debug: run in release, see the module docs"]
fn reach_and_detection_500_nodes_5pct_loss() {
    let mut params = Params::new(500, 0.05, 4);
    params.start_spread = Duration::from_secs(10);
    reach_and_detection("500 nodes", params, 10);
}

#[test]
#[ignore = "slow in debug: run in release, see the module docs"]
fn reach_and_detection_500_nodes_10pct_loss() {
    let mut params = Params::new(500, 0.10, 5);
    params.start_spread = Duration::from_secs(10);
    reach_and_detection("500 nodes", params, 10);
}

#[test]
fn reach_and_detection_50_nodes_5pct_loss() {
    reach_and_detection("50 nodes", Params::new(50, 0.05, 6), 10);
}

/// No member that stays up is ever declared down (nor rejoins) over `duration` at `loss`.
fn no_false_down(name: &str, params: Params, duration: Duration) {
    let mut sim = Sim::new(params);
    let converge = sim.converge(Duration::from_secs(60)).expect("cluster converged");
    let since = sim.now;
    let end = sim.now + duration;
    sim.run_until(end);
    let false_downs = sim.false_downs(since, &[]);
    // A reset still reaches everyone at the end.
    let mut reach = broadcast_and_measure(&mut sim, 3, Duration::from_secs(5));
    report(name, &sim, converge, &mut reach, &mut []);
    assert!(
        false_downs.is_empty(),
        "{} false downs: {:?}",
        false_downs.len(),
        &false_downs[..false_downs.len().min(40)]
    );
    let views_all_alive = sim.up_nodes().all(|i| {
        let members = sim.nodes[i].node.members();
        members.len() == sim.nodes.len() && members.iter().all(|m| m.state != MemberState::Down)
    });
    assert!(views_all_alive, "every view lists every node, none down");
}

#[test]
fn no_false_down_50_nodes_one_hour_no_loss() {
    no_false_down("50 nodes, 1 h", Params::new(50, 0.0, 12), Duration::from_secs(3600));
}

#[test]
fn no_false_down_50_nodes_one_hour_5pct_loss() {
    no_false_down("50 nodes, 1 h", Params::new(50, 0.05, 13), Duration::from_secs(3600));
}

#[test]
#[ignore = "beyond the brief, slow in debug: run in release, see the module docs"]
fn no_false_down_50_nodes_one_hour_10pct_loss() {
    no_false_down("50 nodes, 1 h", Params::new(50, 0.10, 14), Duration::from_secs(3600));
}

/// Under 10% loss, every member that stays up gets every reset, exactly once, and crashes are
/// still detected without false downs.
#[test]
fn every_member_gets_every_reset_at_10pct_loss() {
    reach_and_detection("50 nodes, 20 resets", Params::new(50, 0.10, 20), 20);
}

/// A partition declares the other side down; once healed, everyone is back, one entry each.
#[test]
fn partition_heals() {
    let n = 20;
    let mut sim = Sim::new(Params::new(n, 0.0, 30));
    sim.converge(Duration::from_secs(60)).expect("cluster converged");
    sim.groups = (0..n).map(|i| u8::from(i >= n / 2)).collect();
    let split = sim.now + Duration::from_secs(30);
    sim.run_until(split);
    assert!(sim.nodes.iter().all(|node| node.node.live_members() == n / 2 - 1), "each side sees only itself");
    sim.groups.clear();
    let healed_at = sim.now;
    let all_alive = |sim: &Sim| {
        sim.nodes.iter().all(|node| {
            let members = node.node.members();
            members.len() == n && members.iter().all(|m| m.state == MemberState::Alive)
        })
    };
    while !all_alive(&sim) {
        assert!(sim.now - healed_at < Duration::from_secs(120), "membership did not reconverge after the partition");
        let step = sim.now + Duration::from_millis(100);
        sim.run_until(step);
    }
    let healed = sim.now - healed_at;
    let mut reach = broadcast_and_measure(&mut sim, 3, Duration::from_secs(5));
    report("20 nodes, healed partition", &sim, healed, &mut reach, &mut []);
}

/// A crashed node that restarts (new identity, same name) is one entry, alive, everywhere.
#[test]
fn restart_is_one_entry() {
    let n = 10;
    let mut sim = Sim::new(Params::new(n, 0.0, 40));
    sim.converge(Duration::from_secs(60)).expect("cluster converged");
    sim.crash(5);
    let later = sim.now + Duration::from_secs(2);
    sim.run_until(later);
    sim.restart(5, 2_000);
    let restarted_at = sim.now;
    let all_alive =
        |sim: &Sim| sim.nodes.iter().all(|node| node.node.members().iter().all(|m| m.state == MemberState::Alive));
    while !all_alive(&sim) {
        assert!(sim.now - restarted_at < Duration::from_secs(30), "restarted node not alive everywhere");
        let step = sim.now + Duration::from_millis(100);
        sim.run_until(step);
    }
    eprintln!("restarted node alive everywhere after {}", ms(sim.now - restarted_at));
    for node in &sim.nodes {
        let members = node.node.members();
        let entries: BTreeMap<&str, usize> = members.iter().fold(BTreeMap::new(), |mut acc, m| {
            *acc.entry(m.id.as_str()).or_default() += 1;
            acc
        });
        assert!(entries.values().all(|&count| count == 1), "{}: {members:?}", node.id);
        assert!(members.iter().all(|m| m.state == MemberState::Alive), "{}: {members:?}", node.id);
    }
}

/// A node that leaves (shutdown) is seen down by everyone long before a crash would be.
#[test]
fn graceful_leave_is_seen_quickly() {
    let mut sim = Sim::new(Params::new(50, 0.05, 50));
    let converge = sim.converge(Duration::from_secs(60)).expect("cluster converged");
    let leaver = 10;
    let at = sim.now;
    let mut out = Output::default();
    sim.nodes[leaver].node.leave(&mut out);
    sim.apply(leaver, out);
    sim.crash(leaver);
    let end = sim.now + Duration::from_secs(20);
    sim.run_until(end);
    let id = sim.nodes[leaver].id.clone();
    let mut seen: Vec<Duration> = sim
        .up_nodes()
        .map(|i| sim.first_down(i, &id, at).unwrap_or_else(|| panic!("{} missed the leave", sim.nodes[i].id)))
        .collect();
    report("50 nodes, one leaves", &sim, converge, &mut [], &mut seen);
    assert!(percentile(&mut seen, 0.5) < Duration::from_secs(1));
    assert!(sim.false_downs(Duration::ZERO, &[leaver]).is_empty());
}

#[test]
fn simulation_is_deterministic() {
    let run = || {
        let mut sim = Sim::new(Params::new(8, 0.05, 99));
        sim.converge(Duration::from_secs(30)).unwrap();
        sim.broadcast(0, Message(Vec::new()));
        let end = sim.now + Duration::from_secs(5);
        sim.run_until(end);
        (
            sim.packets,
            sim.nodes.iter().map(|n| n.delivered.iter().map(|(at, _)| *at).collect::<Vec<_>>()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(run(), run());
}

#[test]
fn print_table_header() {
    eprintln!(
        "| scenario                           | size | loss | converge  | reach p50 | reach p99 | detect p50 | detect p99 | packets    |"
    );
}

impl Sim {
    fn set_state(&mut self, i: usize, key: &str, value: &[u8]) {
        let mut out = Output::default();
        let now = self.now();
        self.nodes[i].node.set_state(key.to_owned(), value.to_vec(), now, &mut out).unwrap();
        self.apply(i, out);
    }

    /// Runs until every up node holds what node `i` holds under `key` (the same write), or
    /// `limit` passes; the time it took.
    fn until_everyone_holds_what(&mut self, i: usize, key: &str, limit: Duration) -> Option<Duration> {
        let start = self.now;
        let held =
            |sim: &Sim, j: usize| sim.nodes[j].node.state_value(key).map(|(v, version)| (v.to_vec(), version.clone()));
        while self.now - start <= limit {
            let wanted = held(self, i);
            if wanted.is_some() && self.up_nodes().all(|j| held(self, j) == wanted) {
                return Some(self.now - start);
            }
            let step = self.now + Duration::from_millis(100);
            self.run_until(step);
        }
        None
    }
}

/// Durable state: node `n - 1` is cut off for longer than the messages' retention
/// while an operator sets a key down and then up again on node 0, beside `entries` other keys
/// every node holds. Once the cut heals, the lost node holds the final value within one
/// push-pull interval of rejoining, and every other node holds it too.
fn durable_state_reaches_a_node_that_was_away(name: &str, params: Params, entries: usize) {
    let n = params.nodes;
    let mut sim = Sim::new(params);
    sim.converge(Duration::from_secs(120)).expect("cluster converged");
    for k in 0..entries {
        sim.set_state(k % n, &format!("health/up{}/10.0.{}.{}:80", k % 7, k / 250, k % 250), &[1]);
    }
    let key = "health/billing/10.9.9.9:443";
    sim.set_state(0, key, &[1]);
    let spread = sim.until_everyone_holds_what(0, key, Duration::from_secs(30)).expect("the table spread");
    let before_cut = sim.nodes[0].node.state_value(key).unwrap().1.clone();
    let away = n - 1;
    sim.groups = (0..n).map(|i| u8::from(i == away)).collect();
    let settle = sim.now + Duration::from_secs(5);
    sim.run_until(settle);
    sim.set_state(0, key, &[0]);
    let later = sim.now + Duration::from_secs(10);
    sim.run_until(later);
    sim.set_state(1, key, &[1]);
    // Longer than the 60 s the messages are kept: the old way loses this write for good.
    let cut_for = ClusterConfig::new("x", addr_of(0)).message_retention + Duration::from_secs(30);
    let heal = sim.now + cut_for;
    sim.run_until(heal);
    let away_holds = sim.nodes[away].node.state_value(key).unwrap().1.clone();
    assert_eq!(away_holds, before_cut, "the lost node holds the write from before the cut, not a later one");
    assert_eq!(sim.nodes[0].node.state_value(key).unwrap().0, [1]);
    sim.groups.clear();
    let healed_at = sim.now;
    let interval = ClusterConfig::new("x", addr_of(0)).push_pull_interval;
    // Membership first (the node was declared down and rejoins), then one push-pull interval.
    let limit = Duration::from_secs(60) + interval;
    let took = sim.until_everyone_holds_what(0, key, limit).expect("every node holds the final write");
    let rejoined = sim.nodes[away].events.iter().find(|(at, e)| *at >= healed_at && matches!(e, NodeEvent::Joined));
    let rejoined_after = rejoined.map_or(Duration::ZERO, |(at, _)| *at - healed_at);
    assert_eq!(sim.nodes[away].node.state_value(key).unwrap().1.origin, sim.nodes[1].id, "the last write won");
    assert!(sim.up_nodes().all(|i| sim.nodes[i].node.state_len() == entries + 1));
    println!(
        "{name}: {entries} entries spread in {}; after the heal the lost node rejoined in {} and held the final \
         write in {} (push-pull interval {})",
        ms(spread),
        ms(rejoined_after),
        ms(took),
        ms(interval)
    );
    assert!(took <= rejoined_after + interval, "slower than one push-pull interval after rejoining");
    // A write reaches the nodes its push missed by the next push-pull.
    assert!(spread <= interval + Duration::from_secs(1), "a write took {} to reach every node", ms(spread));
}

#[test]
fn durable_state_reaches_a_node_that_was_away_50_nodes() {
    durable_state_reaches_a_node_that_was_away("50 nodes", Params::new(50, 0.0, 60), 500);
}

#[test]
#[ignore = "heavy: run in release (see the module documentation)"]
fn durable_state_reaches_a_node_that_was_away_500_nodes_5pct_loss() {
    durable_state_reaches_a_node_that_was_away("500 nodes, 5% loss", Params::new(500, 0.05, 61), 10_000);
}
