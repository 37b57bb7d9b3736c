//! Real sockets on 127.0.0.1: joining, broadcasting, leaving, crashing, restarting, and keeping
//! intruders out. Short probe periods; every wait is on a condition with a deadline.

use std::time::Duration;

use cluster::{ClusterConfig, ClusterHandle, Member, MemberState, Message};
use tokio::time::timeout;

/// Longest wait for any condition; the conditions themselves take well under a second or two.
const DEADLINE: Duration = Duration::from_secs(15);

fn config(name: &str, seeds: &[&ClusterHandle]) -> ClusterConfig {
    let mut config = ClusterConfig::new(name, "127.0.0.1:0".parse().unwrap());
    config.probe_period = Duration::from_millis(100);
    config.probe_rtt = Some(Duration::from_millis(40));
    config.suspect_timeout = Duration::from_millis(500);
    config.exchange_interval = Duration::from_millis(100);
    config.keys = vec!["udp-test-key".into()];
    config.seeds = seeds.iter().map(|handle| handle.local_addr().to_string()).collect();
    config
}

/// Waits until `handle`'s member list satisfies `condition`; panics with `what` after the deadline.
async fn wait_members(handle: &ClusterHandle, what: &str, condition: impl Fn(&[Member]) -> bool) -> Vec<Member> {
    let mut members = handle.members();
    let found = match timeout(DEADLINE, members.wait_for(|list| condition(list))).await {
        Ok(Ok(list)) => Some(list.clone()),
        _ => None,
    };
    found.unwrap_or_else(|| panic!("{}: {what}; members: {:?}", handle.node_id(), *handle.members().borrow()))
}

fn state_of(members: &[Member], id: &str) -> Option<MemberState> {
    members.iter().find(|m| m.id == id).map(|m| m.state)
}

fn all_alive(members: &[Member], n: usize) -> bool {
    members.len() == n && members.iter().all(|m| m.state == MemberState::Alive)
}

async fn wait_rejected(handle: &ClusterHandle, reason: &str) -> u64 {
    let count = || handle.rejected().into_iter().find(|(r, _)| *r == reason).map(|(_, n)| n).unwrap_or(0);
    let start = tokio::time::Instant::now();
    while count() == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "{}: no packet rejected as {reason}: {:?}",
            handle.node_id(),
            handle.rejected()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    count()
}

#[tokio::test]
async fn three_nodes_join_broadcast_leave_crash_and_restart() {
    let n1 = ClusterHandle::spawn(config("node-1", &[])).await.unwrap();
    let n2 = ClusterHandle::spawn(config("node-2", &[&n1])).await.unwrap();
    let n3 = ClusterHandle::spawn(config("node-3", &[&n1, &n2])).await.unwrap();
    for handle in [&n1, &n2, &n3] {
        let members = wait_members(handle, "3 alive members", |m| all_alive(m, 3)).await;
        assert_eq!(members[0].id, handle.node_id(), "this node comes first");
        assert_eq!(members[0].addr, handle.local_addr());
    }
    assert!(n1.is_joined() && n2.is_joined() && n3.is_joined());

    // A broadcast from node 1 reaches nodes 2 and 3 once each, and not node 1.
    let mut at1 = n1.messages();
    let mut at2 = n2.messages();
    let mut at3 = n3.messages();
    let reset = Message(b"api 10.0.0.7:8080 unhealthy".to_vec());
    n1.broadcast(reset.clone()).await.unwrap();
    for (name, receiver) in [("node-2", &mut at2), ("node-3", &mut at3)] {
        let delivered = timeout(DEADLINE, receiver.recv()).await.expect("delivered").expect("open");
        assert_eq!((delivered.origin.as_str(), delivered.seq, &delivered.message), ("node-1", 1, &reset), "{name}");
    }
    // Many anti-entropy rounds later, still no second copy anywhere, and none at the origin.
    let quiet = Duration::from_millis(1000);
    assert!(timeout(quiet, at2.recv()).await.is_err(), "node-2 got a duplicate");
    assert!(at3.try_recv().is_err(), "node-3 got a duplicate");
    assert!(at1.try_recv().is_err(), "node-1 got its own message");
    // The stream is taken once.
    assert!(n1.messages().recv().await.is_none());

    // A clean shutdown of node 3 is seen as down by the others.
    let n3_addr = n3.local_addr();
    n3.shutdown().await;
    for handle in [&n1, &n2] {
        wait_members(handle, "node-3 down", |m| state_of(m, "node-3") == Some(MemberState::Down)).await;
    }

    // node-3 starts again (new port, new identity): one entry, alive, at the new address.
    let n3 = ClusterHandle::spawn(config("node-3", &[&n1])).await.unwrap();
    assert_ne!(n3.local_addr(), n3_addr);
    for handle in [&n1, &n2, &n3] {
        let members = wait_members(handle, "node-3 back, alive", |m| all_alive(m, 3)).await;
        let entries: Vec<_> = members.iter().filter(|m| m.id == "node-3").collect();
        assert_eq!(entries.len(), 1, "{members:?}");
        assert_eq!(entries[0].addr, n3.local_addr());
    }
    // The restarted node gets new broadcasts too. It may first pull node 1's reset by
    // anti-entropy: that is still within a message's life (55 s), and it is a new identity.
    let mut at3 = n3.messages();
    n2.broadcast(Message(b"hello".to_vec())).await.unwrap();
    let delivered = timeout(DEADLINE, async {
        loop {
            let delivered = at3.recv().await.expect("open");
            if delivered.message != reset {
                return delivered;
            }
        }
    })
    .await
    .expect("delivered");
    assert_eq!((delivered.origin.as_str(), delivered.message), ("node-2", Message(b"hello".to_vec())));

    // An abrupt stop (no goodbye) is detected by probing.
    drop(n3);
    for handle in [&n1, &n2] {
        wait_members(handle, "crashed node-3 down", |m| state_of(m, "node-3") == Some(MemberState::Down)).await;
    }
    assert_eq!(state_of(&n1.members().borrow(), "node-2"), Some(MemberState::Alive));
    n1.shutdown().await;
    n2.shutdown().await;
}

#[tokio::test]
async fn wrong_key_or_cluster_never_joins() {
    let n1 = ClusterHandle::spawn(config("node-1", &[])).await.unwrap();
    let n2 = ClusterHandle::spawn(config("node-2", &[&n1])).await.unwrap();
    wait_members(&n1, "2 alive members", |m| all_alive(m, 2)).await;

    let mut wrong_key = config("intruder", &[&n1, &n2]);
    wrong_key.keys = vec!["another-key".into()];
    let intruder = ClusterHandle::spawn(wrong_key).await.unwrap();
    let mut other_cluster = config("neighbour", &[&n1, &n2]);
    other_cluster.cluster = "other".into();
    let neighbour = ClusterHandle::spawn(other_cluster).await.unwrap();

    wait_rejected(&n1, "auth").await;
    wait_rejected(&n1, "cluster").await;
    // Let the announcer retry a few times, then check nobody let them in, on either side.
    let retries = wait_rejected(&n2, "auth").await;
    let start = tokio::time::Instant::now();
    while wait_rejected(&n2, "auth").await < retries + 2 {
        assert!(start.elapsed() < DEADLINE);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for handle in [&n1, &n2] {
        let members = handle.members().borrow().clone();
        assert!(all_alive(&members, 2), "{}: {members:?}", handle.node_id());
    }
    for outsider in [&intruder, &neighbour] {
        assert!(!outsider.is_joined());
        assert_eq!(outsider.members().borrow().len(), 1, "alone");
    }
}

#[tokio::test]
async fn junk_on_the_port_is_counted_not_fatal() {
    let n1 = ClusterHandle::spawn(config("node-1", &[])).await.unwrap();
    let n2 = ClusterHandle::spawn(config("node-2", &[&n1])).await.unwrap();
    wait_members(&n1, "2 alive members", |m| all_alive(m, 2)).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = n1.local_addr();
    socket.send_to(&[], target).await.unwrap();
    socket.send_to(b"GET / HTTP/1.1\r\n\r\n", target).await.unwrap();
    socket.send_to(&vec![1u8; 9000], target).await.unwrap();
    socket.send_to(&[1, 1, 0, 0], target).await.unwrap();
    for reason in ["truncated", "version", "oversized"] {
        wait_rejected(&n1, reason).await;
    }
    // Still in the cluster, still delivering.
    let mut at2 = n2.messages();
    n1.broadcast(Message(b"/a".to_vec())).await.unwrap();
    assert!(timeout(DEADLINE, at2.recv()).await.expect("delivered").is_some());
    assert!(all_alive(&n2.members().borrow(), 2));
}

#[tokio::test]
async fn oversized_message_is_refused_and_bad_config_is_reported() {
    let n1 = ClusterHandle::spawn(config("node-1", &[])).await.unwrap();
    let huge = Message(vec![b'k'; 2000]);
    let error = n1.broadcast(huge).await.unwrap_err();
    assert!(matches!(error, cluster::ClusterError::MessageTooLarge { .. }), "{error}");
    n1.shutdown().await;

    let mut bad = config("", &[]);
    bad.probe_rtt = Some(Duration::from_secs(5));
    let error = ClusterHandle::spawn(bad).await.unwrap_err();
    assert!(error.to_string().contains("node_id") && error.to_string().contains("probe_rtt"), "{error}");
}

/// Durable state over real sockets: a write made before a node starts reaches it when it joins
/// (push-pull), the later of two writes wins everywhere, and nothing comes back to its writer.
#[tokio::test]
async fn durable_state_reaches_a_node_that_joins_later() {
    let n1 = ClusterHandle::spawn(config("node-1", &[])).await.unwrap();
    let n2 = ClusterHandle::spawn(config("node-2", &[&n1])).await.unwrap();
    for handle in [&n1, &n2] {
        wait_members(handle, "2 alive members", |m| all_alive(m, 2)).await;
    }
    let (mut at1, mut at2) = (n1.state_updates(), n2.state_updates());
    let first = n1.set_state("health/api/10.0.0.7:8080".into(), vec![0]).await.unwrap();
    let change = match timeout(DEADLINE, at2.recv()).await.expect("the write reached node-2").expect("open") {
        cluster::StateUpdate::Changed(change) => change,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (change.key.as_str(), change.value.as_slice(), &change.version),
        ("health/api/10.0.0.7:8080", &[0u8][..], &first)
    );
    let second = n2.set_state("health/api/10.0.0.7:8080".into(), vec![1]).await.unwrap();
    assert!(second > first, "a write after seeing another is later");

    // node-3 starts after both writes: it learns the last one from a push-pull on joining.
    let n3 = ClusterHandle::spawn(config("node-3", &[&n1])).await.unwrap();
    let mut at3 = n3.state_updates();
    let change = match timeout(DEADLINE, at3.recv()).await.expect("node-3 got the state").expect("open") {
        cluster::StateUpdate::Changed(change) => change,
        other => panic!("{other:?}"),
    };
    assert_eq!((change.value.as_slice(), &change.version), (&[1u8][..], &second));
    // node-1 got node-2's write once, and never its own.
    let mut seen = Vec::new();
    while let Ok(Some(update)) = timeout(Duration::from_millis(500), at1.recv()).await {
        seen.push(update);
    }
    assert!(matches!(&seen[..], [cluster::StateUpdate::Changed(c)] if c.version == second), "node-1 saw {seen:?}");
}

/// A query reaches every live member; answers of several packets come back whole, and a member
/// that does not answer in time is listed as missing.
#[tokio::test]
async fn a_query_gets_every_members_answer_and_names_the_silent() {
    let n1 = ClusterHandle::spawn(config("node-1", &[])).await.unwrap();
    let n2 = ClusterHandle::spawn(config("node-2", &[&n1])).await.unwrap();
    let n3 = ClusterHandle::spawn(config("node-3", &[&n1])).await.unwrap();
    for handle in [&n1, &n2, &n3] {
        wait_members(handle, "3 alive members", |m| all_alive(m, 3)).await;
    }
    let n2 = std::sync::Arc::new(n2);
    let mut asked = n2.queries();
    let answering = n2.clone();
    tokio::spawn(async move {
        while let Some(query) = asked.recv().await {
            // Larger than a packet: it travels in parts.
            let answer: Vec<u8> = query.payload.iter().copied().cycle().take(5_000).collect();
            answering.answer(query, answer);
        }
    });
    // node-3 takes its queries and never answers.
    let _silent = n3.queries();
    let result = n1.query(b"health of api".to_vec(), Duration::from_millis(700)).await.unwrap();
    let expected: Vec<u8> = b"health of api".iter().copied().cycle().take(5_000).collect();
    assert_eq!(result.answers.keys().collect::<Vec<_>>(), ["node-2"]);
    assert_eq!(result.answers["node-2"], expected);
    assert_eq!(result.missing, ["node-3"]);
}
