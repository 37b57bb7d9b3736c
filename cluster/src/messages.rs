//! Cluster-wide messages: their types, ids, dedupe, and the store anti-entropy works from.
//!
//! Every message carries its origin's node name, the origin's per-start `boot` number and a
//! sequence number the origin increments (so a restarted origin cannot collide with its previous
//! life), and its age. A message travels two ways:
//! - eagerly: the origin pushes it to a few random members, and each member forwards it to a few
//!   more on first receipt (infect-and-die gossip; fast, but can miss a member);
//! - by anti-entropy: every node periodically sends a [`Digest`] of the messages it holds to a few
//!   random members; the receiver pulls what it lacks and pushes what the sender lacks. This is what
//!   bounds the time for every live member to get every message.
//!
//! [`MessageStore`] keeps each message for `retention` (offering it in digests until shortly before
//! that) and remembers its id for another `retention`, so a message is delivered at most once even
//! when its copies travel both ways. Ages travel with the message, so all nodes expire it at about
//! the same time and a message older than `retention` is never delivered.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// A message for every member of the cluster: bytes its user encodes and reads (this crate
/// does not look inside).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message(pub Vec<u8>);

/// A message received from another node, delivered once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The node that broadcast it.
    pub origin: String,
    /// The origin's sequence number for it, counting from 1 at each start of the origin.
    pub seq: u64,
    /// The message.
    pub message: Message,
}

/// A message's identity: unique across the cluster and across restarts of its origin.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct MessageId {
    /// The origin's node name.
    pub(crate) origin: String,
    /// The origin's per-start random number.
    pub(crate) boot: u64,
    /// The origin's counter.
    pub(crate) seq: u64,
}

/// A message on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireMessage {
    /// Its id.
    pub(crate) id: MessageId,
    /// Milliseconds since it was made, as the sender reckons.
    pub(crate) age_ms: u32,
    /// The payload.
    pub(crate) message: Message,
}

/// The messages one origin start has, as inclusive ranges of sequence numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DigestEntry {
    /// The origin's node name.
    pub(crate) origin: String,
    /// The origin's per-start random number.
    pub(crate) boot: u64,
    /// Sorted, disjoint, inclusive.
    pub(crate) ranges: Vec<(u64, u64)>,
}

/// What a node holds; `complete` is false when it did not fit in a packet and origins were left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Digest {
    /// One entry per origin start.
    pub(crate) entries: Vec<DigestEntry>,
    /// Whether every origin this node holds messages of is listed.
    pub(crate) complete: bool,
}

/// The ids a node asks for, grouped by origin start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PullRequest {
    /// `(origin, boot, seqs)`.
    pub(crate) wanted: Vec<(String, u64, Vec<u64>)>,
}

/// Most ids asked for or scanned in one digest comparison, so a hostile digest cannot make a
/// node loop or allocate without bound.
const MAX_WANTED: usize = 256;
const MAX_SCAN_PER_RANGE: u64 = 4096;

struct Entry {
    /// When it was made, on this node's clock.
    born: Instant,
    message: Message,
}

/// Recent messages and the ids of every message seen lately.
pub(crate) struct MessageStore {
    retention: Duration,
    entries: BTreeMap<MessageId, Entry>,
    next_seq: u64,
}

impl MessageStore {
    /// An empty store that keeps messages for `retention`.
    pub(crate) fn new(retention: Duration) -> Self {
        Self { retention, entries: BTreeMap::new(), next_seq: 1 }
    }

    /// How long before the end of retention a message stops being offered, so that nodes whose
    /// clocks of its age differ slightly do not ask each other for what they just dropped.
    fn offer_for(&self) -> Duration {
        self.retention - (self.retention / 10).min(Duration::from_secs(5))
    }

    fn age(&self, entry: &Entry, now: Instant) -> Duration {
        now.saturating_duration_since(entry.born)
    }

    fn wire(&self, id: &MessageId, entry: &Entry, now: Instant) -> WireMessage {
        let age_ms = u32::try_from(self.age(entry, now).as_millis()).unwrap_or(u32::MAX);
        WireMessage { id: id.clone(), age_ms, message: entry.message.clone() }
    }

    /// Records a message made here and returns it ready to send.
    pub(crate) fn originate(&mut self, origin: &str, boot: u64, message: Message, now: Instant) -> WireMessage {
        let id = MessageId { origin: origin.to_owned(), boot, seq: self.next_seq };
        self.next_seq += 1;
        let entry = Entry { born: now, message };
        let wire = self.wire(&id, &entry, now);
        self.entries.insert(id, entry);
        wire
    }

    /// Takes a received message: `Some` the first time its id is seen (and while it is younger
    /// than the retention), `None` for a duplicate or a stale message.
    pub(crate) fn accept(&mut self, wire: WireMessage, now: Instant) -> Option<Delivered> {
        let age = Duration::from_millis(u64::from(wire.age_ms));
        if age >= self.retention || self.entries.contains_key(&wire.id) {
            return None;
        }
        let born = now.checked_sub(age).unwrap_or(now);
        let delivered = Delivered { origin: wire.id.origin.clone(), seq: wire.id.seq, message: wire.message.clone() };
        self.entries.insert(wire.id, Entry { born, message: wire.message });
        Some(delivered)
    }

    /// Whether this id has been seen (delivered, made here, or remembered after expiry).
    pub(crate) fn has_seen(&self, id: &MessageId) -> bool {
        self.entries.contains_key(id)
    }

    fn offered(&self, now: Instant) -> impl Iterator<Item = (&MessageId, &Entry)> {
        let offer_for = self.offer_for();
        self.entries.iter().filter(move |(_, entry)| self.age(entry, now) < offer_for)
    }

    /// A digest of the messages on offer, at most about `max_bytes` once encoded.
    pub(crate) fn digest(&self, now: Instant, max_bytes: usize) -> Digest {
        let mut digest = Digest { entries: Vec::new(), complete: true };
        let mut size = 8;
        for (id, _) in self.offered(now) {
            let same_origin =
                digest.entries.last_mut().filter(|entry| entry.origin == id.origin && entry.boot == id.boot);
            match same_origin {
                Some(entry) => match entry.ranges.last_mut() {
                    Some(range) if range.1 + 1 == id.seq => range.1 = id.seq,
                    _ => {
                        entry.ranges.push((id.seq, id.seq));
                        size += 20;
                    }
                },
                None => {
                    size += id.origin.len() + 40;
                    digest.entries.push(DigestEntry {
                        origin: id.origin.clone(),
                        boot: id.boot,
                        ranges: vec![(id.seq, id.seq)],
                    });
                }
            }
            if size > max_bytes {
                // Leave the last origin out whole rather than list part of it.
                digest.entries.pop();
                digest.complete = false;
                break;
            }
        }
        digest
    }

    /// The ids listed in `digest` this node has never seen (at most [`MAX_WANTED`]).
    pub(crate) fn missing(&self, digest: &Digest) -> PullRequest {
        let mut request = PullRequest::default();
        let mut count = 0;
        for entry in &digest.entries {
            let mut seqs = Vec::new();
            for &(first, last) in &entry.ranges {
                let last = last.min(first.saturating_add(MAX_SCAN_PER_RANGE));
                for seq in first..=last {
                    let id = MessageId { origin: entry.origin.clone(), boot: entry.boot, seq };
                    if count < MAX_WANTED && !self.has_seen(&id) {
                        seqs.push(seq);
                        count += 1;
                    }
                }
            }
            if !seqs.is_empty() {
                request.wanted.push((entry.origin.clone(), entry.boot, seqs));
            }
            if count >= MAX_WANTED {
                break;
            }
        }
        request
    }

    /// The messages on offer that `digest` does not list (for a partial digest, only of the
    /// origins it lists), at most [`MAX_WANTED`].
    pub(crate) fn lacking(&self, digest: &Digest, now: Instant) -> Vec<WireMessage> {
        let listed: BTreeMap<(&str, u64), &[(u64, u64)]> =
            digest.entries.iter().map(|entry| ((entry.origin.as_str(), entry.boot), &entry.ranges[..])).collect();
        self.offered(now)
            .filter(|(id, _)| match listed.get(&(id.origin.as_str(), id.boot)) {
                Some(ranges) => !ranges.iter().any(|&(first, last)| (first..=last).contains(&id.seq)),
                None => digest.complete,
            })
            .take(MAX_WANTED)
            .map(|(id, entry)| self.wire(id, entry, now))
            .collect()
    }

    /// The requested messages this node still offers.
    pub(crate) fn get(&self, request: &PullRequest, now: Instant) -> Vec<WireMessage> {
        let offer_for = self.offer_for();
        let mut found = Vec::new();
        for (origin, boot, seqs) in &request.wanted {
            for &seq in seqs.iter().take(MAX_WANTED) {
                let id = MessageId { origin: origin.clone(), boot: *boot, seq };
                if let Some(entry) = self.entries.get(&id).filter(|entry| self.age(entry, now) < offer_for) {
                    found.push(self.wire(&id, entry, now));
                }
            }
        }
        found
    }

    /// Forgets messages older than twice the retention (their ids too: by then no node offers
    /// them, and none would deliver them).
    pub(crate) fn expire(&mut self, now: Instant) {
        let keep_for = self.retention * 2;
        self.entries.retain(|_, entry| now.saturating_duration_since(entry.born) < keep_for);
    }

    /// Messages held (offered or only remembered).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge(key: &str) -> Message {
        Message(key.as_bytes().to_vec())
    }

    fn wire(origin: &str, seq: u64, age_ms: u32) -> WireMessage {
        WireMessage { id: MessageId { origin: origin.into(), boot: 1, seq }, age_ms, message: purge("k") }
    }

    #[test]
    fn delivers_each_message_once() {
        let now = Instant::now();
        let mut store = MessageStore::new(Duration::from_secs(60));
        let first = store.accept(wire("a", 1, 0), now).unwrap();
        assert_eq!((first.origin.as_str(), first.seq), ("a", 1));
        assert!(store.accept(wire("a", 1, 0), now).is_none(), "duplicate");
        assert!(store.accept(wire("a", 1, 500), now + Duration::from_secs(30)).is_none(), "late duplicate");
        // Same origin and seq, another start of the origin: another message.
        let mut restarted = wire("a", 1, 0);
        restarted.id.boot = 2;
        assert!(store.accept(restarted, now).is_some());
        assert!(store.accept(wire("b", 1, 0), now).is_some());
    }

    #[test]
    fn refuses_messages_older_than_retention_and_never_redelivers_after_expiry() {
        let now = Instant::now();
        let mut store = MessageStore::new(Duration::from_secs(60));
        assert!(store.accept(wire("a", 1, 60_000), now).is_none(), "too old");
        assert!(store.accept(wire("a", 2, 59_000), now).is_some());
        assert!(store.accept(wire("a", 3, 0), now).is_some());
        store.expire(now + Duration::from_secs(100));
        assert!(!store.has_seen(&MessageId { origin: "a".into(), boot: 1, seq: 2 }), "159 s old: forgotten");
        assert!(store.has_seen(&MessageId { origin: "a".into(), boot: 1, seq: 3 }), "id kept past retention");
        // A straggler copy carries an age past retention by now: refused either way.
        assert!(store.accept(wire("a", 2, 159_000), now + Duration::from_secs(100)).is_none());
        assert!(store.accept(wire("a", 3, 100_000), now + Duration::from_secs(100)).is_none());
        store.expire(now + Duration::from_secs(200));
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn own_messages_are_never_delivered_back() {
        let now = Instant::now();
        let mut store = MessageStore::new(Duration::from_secs(60));
        let sent = store.originate("me", 9, purge("x"), now);
        assert_eq!(sent.id.seq, 1);
        assert!(store.accept(sent.clone(), now).is_none());
        assert_eq!(store.originate("me", 9, purge("y"), now).id.seq, 2);
    }

    #[test]
    fn digest_ranges_and_exchange() {
        let now = Instant::now();
        let mut a = MessageStore::new(Duration::from_secs(60));
        let mut b = MessageStore::new(Duration::from_secs(60));
        for seq in [1, 2, 3, 5, 6] {
            a.accept(wire("o", seq, 0), now);
        }
        b.accept(wire("o", 2, 0), now);
        b.accept(wire("p", 1, 0), now);
        let digest = a.digest(now, 1200);
        assert!(digest.complete);
        assert_eq!(digest.entries[0].ranges, vec![(1, 3), (5, 6)]);

        // b pulls what it lacks from a's digest, and pushes what a lacks.
        let pull = b.missing(&digest);
        assert_eq!(pull.wanted, vec![("o".to_owned(), 1, vec![1, 3, 5, 6])]);
        let pushed = b.lacking(&digest, now);
        assert_eq!(pushed.iter().map(|w| (w.id.origin.as_str(), w.id.seq)).collect::<Vec<_>>(), vec![("p", 1)]);
        let answered = a.get(&pull, now);
        assert_eq!(answered.len(), 4);
        for message in answered {
            assert!(b.accept(message, now).is_some());
        }
        assert!(b.missing(&a.digest(now, 1200)).wanted.is_empty());
    }

    #[test]
    fn digest_is_bounded_and_marks_itself_partial() {
        let now = Instant::now();
        let mut store = MessageStore::new(Duration::from_secs(60));
        for origin in 0..100 {
            store.accept(wire(&format!("origin-{origin}"), 1, 0), now);
        }
        let digest = store.digest(now, 500);
        assert!(!digest.complete);
        assert!(crate::codec::to_vec(&digest).unwrap().len() <= 500);
        // A partial digest only makes the receiver push messages of the origins it lists.
        let other = MessageStore::new(Duration::from_secs(60));
        assert!(other.lacking(&digest, now).is_empty());
        assert!(store.lacking(&digest, now).is_empty());
    }

    #[test]
    fn hostile_digest_is_bounded() {
        let store = MessageStore::new(Duration::from_secs(60));
        let digest = Digest {
            entries: vec![DigestEntry { origin: "x".into(), boot: 0, ranges: vec![(0, u64::MAX)] }],
            complete: true,
        };
        let pull = store.missing(&digest);
        assert_eq!(pull.wanted[0].2.len(), MAX_WANTED);
    }

    #[test]
    fn messages_near_the_end_of_retention_are_not_offered() {
        let now = Instant::now();
        let mut store = MessageStore::new(Duration::from_secs(60));
        store.accept(wire("a", 1, 56_000), now);
        assert!(store.digest(now, 1200).entries.is_empty());
        assert!(store.lacking(&Digest { entries: vec![], complete: true }, now).is_empty());
    }
}
