//! Unit tests of the node: rejections by reason, keyring rotation, delivery and repair.

use super::*;
use crate::{codec::CoreFrame, envelope::Envelope};

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 7946))
}

fn node(name: &str, last: u8, keys: &[&str]) -> Node {
    let mut config = ClusterConfig::new(name, addr(last));
    config.keys = keys.iter().map(|k| k.to_string()).collect();
    Node::new(&config, addr(last), 1, u64::from(last)).unwrap()
}

fn sealed(cluster: &str, keys: &[&str], kind: u8, payload: &[u8]) -> Vec<u8> {
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    Envelope::new(cluster, &keys, 1400).seal(WIRE_VERSION, kind, payload, &mut SmallRng::seed_from_u64(1))
}

fn hello(keys: &[&str]) -> Vec<u8> {
    let from = NodeIdentity::new("other", addr(9), 1, 1);
    sealed("gateway", keys, KIND_CORE, &codec::to_vec(&CoreFrame::Hello { from }).unwrap())
}

/// Hands `packet` to `node`; returns how many packets it answered with.
fn feed(node: &mut Node, packet: &[u8]) -> usize {
    let mut out = Output::default();
    node.handle_packet(packet, addr(9), Instant::now(), &mut out);
    out.packets.len()
}

#[test]
fn each_bad_packet_is_dropped_and_counted_under_its_reason() {
    let mut n = node("n", 1, &["k"]);
    assert!(feed(&mut n, &hello(&["k"])) > 0, "a good hello is answered");
    assert_eq!(n.rejections().total(), 0);

    let good = hello(&["k"]);
    let mut flipped = good.clone();
    let last = flipped.len() - 20;
    flipped[last] ^= 0x40;
    let mut other_version = good.clone();
    other_version[0] = WIRE_VERSION + 1;
    let own_name = foca::Header {
        src: NodeIdentity::new("n", addr(7), 5, 5),
        src_incarnation: 0,
        dst: n.foca.identity().clone(),
        message: foca::Message::<NodeIdentity>::Ping(1),
    };
    let cases: Vec<(&str, Vec<u8>, RejectReason)> = vec![
        ("empty", vec![], RejectReason::Truncated),
        ("truncated", good[..20].to_vec(), RejectReason::Truncated),
        ("oversized", vec![1; 1401], RejectReason::Oversized),
        ("another version", other_version, RejectReason::Version),
        ("another cluster", sealed("elsewhere", &["k"], KIND_CORE, b"x"), RejectReason::Cluster),
        ("wrong key", hello(&["wrong"]), RejectReason::Auth),
        ("not sealed", hello(&[]), RejectReason::Auth),
        ("garbled", flipped, RejectReason::Auth),
        ("unknown kind", sealed("gateway", &["k"], 9, b"x"), RejectReason::Decode),
        ("junk frame", sealed("gateway", &["k"], KIND_CORE, &[0xFF; 40]), RejectReason::Decode),
        ("junk swim", sealed("gateway", &["k"], KIND_SWIM, &[0xFF; 40]), RejectReason::Decode),
        (
            "trailing bytes",
            sealed(
                "gateway",
                &["k"],
                KIND_CORE,
                &[codec::to_vec(&CoreFrame::Pull(Default::default())).unwrap(), vec![0]].concat(),
            ),
            RejectReason::Decode,
        ),
        (
            "our own name",
            sealed("gateway", &["k"], KIND_SWIM, &codec::to_vec(&own_name).unwrap()),
            RejectReason::Identity,
        ),
    ];
    for (name, packet, reason) in cases {
        let before = n.rejections().get(reason);
        let total = n.rejections().total();
        assert_eq!(feed(&mut n, &packet), 0, "{name}: nothing answered");
        assert_eq!(n.rejections().get(reason), before + 1, "{name}: counted as {reason}");
        assert_eq!(n.rejections().total(), total + 1, "{name}: counted once");
    }
    // Still works.
    assert!(feed(&mut n, &hello(&["k"])) > 0);
}

#[test]
fn random_junk_never_panics() {
    let mut rng = SmallRng::seed_from_u64(5);
    for keys in [&[][..], &["k"][..]] {
        let mut n = node("n", 1, keys);
        let good = hello(keys);
        for _ in 0..2000 {
            let mut packet = good.clone();
            match rng.random_range(0..3) {
                0 => packet.truncate(rng.random_range(0..good.len())),
                1 => {
                    let i = rng.random_range(0..packet.len());
                    packet[i] ^= rng.random_range(1..=255u8);
                }
                _ => packet = (0..rng.random_range(0..200)).map(|_| rng.random_range(0..=255u8)).collect(),
            }
            feed(&mut n, &packet);
        }
    }
}

#[test]
fn keyring_rotation_between_nodes() {
    // A node mid-rotation ([A, B]) accepts what a node already on B sends, and answers with A.
    let mut rotating = node("r", 1, &["A", "B"]);
    let mut out = Output::default();
    rotating.handle_packet(&hello(&["B"]), addr(9), Instant::now(), &mut out);
    let (_, welcome) = &out.packets[0];
    let only = |keys: &[&str]| Envelope::new("gateway", &keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(), 1400);
    assert!(only(&["A"]).open(welcome).is_ok());
    assert_eq!(only(&["B"]).open(welcome).unwrap_err(), RejectReason::Auth);
    // A node that dropped A refuses A-only traffic.
    let mut moved_on = node("m", 2, &["B"]);
    assert_eq!(feed(&mut moved_on, &hello(&["A"])), 0);
    assert_eq!(moved_on.rejections().get(RejectReason::Auth), 1);
}

/// Delivers every packet of `out` (sent by `nodes[origin]`) and of the answers, once, with no
/// loss; returns what each node delivered.
fn exchange(nodes: &mut [Node], origin: usize, out: Output, now: Instant) -> Vec<(usize, Delivered)> {
    let mut delivered = Vec::new();
    let mut pending: Vec<(SocketAddr, SocketAddr, Vec<u8>)> =
        out.packets.into_iter().map(|(to, bytes)| (nodes[origin].advertise(), to, bytes)).collect();
    while let Some((from, to, bytes)) = pending.pop() {
        assert!(delivered.len() < 10_000);
        let Some(i) = nodes.iter().position(|n| n.advertise() == to) else { continue };
        let mut out = Output::default();
        nodes[i].handle_packet(&bytes, from, now, &mut out);
        delivered.extend(out.delivered.into_iter().map(|d| (i, d)));
        pending.extend(out.packets.into_iter().map(|(next, bytes)| (to, next, bytes)));
    }
    delivered
}

#[test]
fn messages_are_delivered_once_and_never_back_to_the_origin() {
    let now = Instant::now();
    let mut nodes = vec![node("a", 1, &["k"]), node("b", 2, &["k"]), node("c", 3, &["k"])];
    for joiner in [1, 2] {
        let mut out = Output::default();
        nodes[joiner].join(&[addr(1)], &mut out);
        exchange(&mut nodes, joiner, out, now);
    }
    // a knows both; b hears of c only with a's next gossip, which needs timers.
    assert!(nodes.iter().all(Node::is_active));
    assert_eq!((nodes[0].live_members(), nodes[2].live_members()), (2, 2));

    let mut out = Output::default();
    let purge = Message(b"/x".to_vec());
    nodes[0].broadcast(purge.clone(), now, &mut out).unwrap();
    let delivered = exchange(&mut nodes, 0, out, now);
    let mut receivers: Vec<usize> = delivered.iter().map(|(i, _)| *i).collect();
    receivers.sort();
    assert_eq!(receivers, vec![1, 2], "b and c once each, a never");
    assert!(delivered.iter().all(|(_, d)| d.origin == "a" && d.seq == 1 && d.message == purge));

    // Anti-entropy rounds later, nothing is delivered again.
    for i in 0..3 {
        let mut out = Output::default();
        nodes[i].handle_timer(NodeTimer(TimerKind::Exchange), now, &mut out);
        assert!(exchange(&mut nodes, i, out, now).is_empty());
    }
}

#[test]
fn anti_entropy_repairs_a_missed_message() {
    let now = Instant::now();
    let mut nodes = vec![node("a", 1, &[]), node("b", 2, &[])];
    let mut out = Output::default();
    nodes[1].join(&[addr(1)], &mut out);
    exchange(&mut nodes, 1, out, now);
    // The eager push is lost.
    let mut lost = Output::default();
    nodes[0].broadcast(Message(Vec::new()), now, &mut lost).unwrap();
    assert!(!lost.packets.is_empty());
    // b's next exchange finds it missing and pulls it; so would a's push.
    let mut out = Output::default();
    nodes[1].handle_timer(NodeTimer(TimerKind::Exchange), now, &mut out);
    let delivered = exchange(&mut nodes, 1, out, now);
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].0, 1);
}

#[test]
fn too_large_messages_are_refused() {
    let mut n = node("n", 1, &["k"]);
    let mut out = Output::default();
    let error = n.broadcast(Message(vec![b'k'; 1400]), Instant::now(), &mut out);
    assert!(matches!(error, Err(ClusterError::MessageTooLarge { .. })));
    assert!(n.broadcast(Message(vec![b'k'; 1000]), Instant::now(), &mut out).is_ok());
}

/// Like [`exchange`], for durable state: delivers every packet and answer; returns the bytes sent.
fn exchange_bytes(nodes: &mut [Node], origin: usize, out: Output, now: Instant) -> usize {
    let mut bytes_sent = 0;
    let mut pending: Vec<(SocketAddr, SocketAddr, Vec<u8>)> =
        out.packets.into_iter().map(|(to, bytes)| (nodes[origin].advertise(), to, bytes)).collect();
    while let Some((from, to, bytes)) = pending.pop() {
        bytes_sent += bytes.len();
        let Some(i) = nodes.iter().position(|n| n.advertise() == to) else { continue };
        let mut out = Output::default();
        nodes[i].handle_packet(&bytes, from, now, &mut out);
        pending.extend(out.packets.into_iter().map(|(next, bytes)| (to, next, bytes)));
    }
    bytes_sent
}

/// What a push-pull costs: at 10,000 entries, equal tables cost only the digest,
/// and two missed writes cost the digest and the entries of two buckets (not the table).
#[test]
fn push_pull_repairs_missed_writes_and_sends_little() {
    let now = Instant::now();
    let mut nodes = vec![node("a", 1, &["k"]), node("b", 2, &["k"])];
    let mut out = Output::default();
    nodes[1].join(&[addr(1)], &mut out);
    exchange(&mut nodes, 1, out, now);
    for i in 0..10_000 {
        let mut out = Output::default();
        let key = format!("health/upstream-{}/10.0.{}.{}:8080", i % 20, i / 250, i % 250);
        nodes[0].set_state(key, vec![1], now, &mut out).unwrap();
        exchange_bytes(&mut nodes, 0, out, now);
    }
    assert_eq!(nodes[1].state_len(), 10_000);
    let mut out = Output::default();
    nodes[0].handle_timer(NodeTimer(TimerKind::PushPull), now, &mut out);
    let equal = exchange_bytes(&mut nodes, 0, out, now);

    // One write on each side is lost on its way.
    let (missed_a, missed_b) = ("health/upstream-3/10.0.0.3:8080", "health/upstream-4/10.0.0.4:8080");
    nodes[0].set_state(missed_a.into(), vec![0], now, &mut Output::default()).unwrap();
    nodes[1].set_state(missed_b.into(), vec![0], now, &mut Output::default()).unwrap();
    let mut out = Output::default();
    nodes[0].handle_timer(NodeTimer(TimerKind::PushPull), now, &mut out);
    let repair = exchange_bytes(&mut nodes, 0, out, now);
    for key in [missed_a, missed_b] {
        assert_eq!(nodes[0].state_value(key), nodes[1].state_value(key));
        assert_eq!(nodes[0].state_value(key).unwrap().0, [0]);
    }
    println!("push-pull at 10,000 entries: {equal} bytes with equal tables, {repair} bytes to repair two writes");
    assert!(equal < 3_000, "the digest alone: {equal} bytes");
    assert!(repair < 20_000, "two buckets' entries: {repair} bytes");
}

#[test]
fn the_keyring_is_replaced_while_running_but_never_emptied() {
    let mut n = node("n", 1, &["A"]);
    n.set_keys(&["A".into(), "B".into()]).unwrap();
    // Now sealing with A and opening B too: a packet sealed with B only is taken.
    assert!(feed(&mut n, &hello(&["B"])) > 0);
    n.set_keys(&["B".into()]).unwrap();
    assert_eq!(feed(&mut n, &hello(&["A"])), 0);
    assert_eq!(n.rejections().get(RejectReason::Auth), 1);
    for bad in [vec![], vec!["B".to_owned(), String::new()]] {
        assert!(matches!(n.set_keys(&bad), Err(ClusterError::Config(_))), "{bad:?}");
    }
    let mut open = node("o", 2, &[]);
    assert!(matches!(open.set_keys(&["A".into()]), Err(ClusterError::Config(_))));
}

/// A rolling upgrade's middle: a node of the previous wire version and a new one join each
/// other (either way round) and keep one membership; the new one's durable state and messages
/// are not sent to the old one, which reads none of them.
#[test]
fn a_node_one_wire_version_older_is_a_member() {
    let now = Instant::now();
    for old_joins_new in [true, false] {
        let mut nodes = vec![node("new", 1, &["k"]), node("old", 2, &["k"]).speaking_only_the_previous_version()];
        let (joiner, seed) = if old_joins_new { (1, 0) } else { (0, 1) };
        let mut out = Output::default();
        nodes[joiner].join(&[addr(seed as u8 + 1)], &mut out);
        exchange(&mut nodes, joiner, out, now);
        assert!(nodes.iter().all(|n| n.is_active() && n.live_members() == 1), "old joins new: {old_joins_new}");
        assert_eq!(nodes[1].rejections().total(), if old_joins_new { 0 } else { 1 }, "the new hello");
        // Everything the new node sends the old one is in the old version.
        let mut out = Output::default();
        nodes[0].set_state("health/u/t:80".into(), vec![0], now, &mut out).unwrap();
        nodes[0].broadcast(Message(b"purge".to_vec()), now, &mut out).unwrap();
        nodes[0].handle_timer(NodeTimer(TimerKind::Exchange), now, &mut out);
        assert!(out.packets.iter().all(|(_, packet)| packet[0] == OLDEST_WIRE_VERSION), "{:?}", out.packets);
        let before = nodes[1].rejections().total();
        assert!(exchange(&mut nodes, 0, out, now).is_empty());
        assert_eq!(nodes[1].rejections().total(), before, "the old node refused nothing it was sent");
        assert_eq!(nodes[1].state_len(), 0);
    }
}
