//! Durable cluster state: a table of last-writer-wins registers that every node converges on,
//! however long it was down or cut off.
//!
//! Messages (`messages.rs`) are kept for a minute; a node that misses one for longer never gets
//! it. What must reach every node always (an operator's word) is written here instead:
//! - each value carries a [`Version`]: a hybrid logical clock time ([`Hlc`]) and the node that
//!   wrote it. The greater version wins, on every node alike, whatever order copies arrive in;
//! - a write is pushed at once to a few members, who forward it on first receipt (as messages);
//! - and the tables are compared in full (push-pull, as memberlist does) when a member comes up,
//!   and with one random member every `push_pull_interval`. The comparison is cheap: the keys are
//!   spread over [`BUCKETS`] buckets, a node sends one hash per bucket ([`StateDigest`]), and
//!   entries travel only for the buckets whose hashes differ.
//!
//! Entries live until the user says their key is out of scope ([`StateTable::scope`]) and they are
//! older than the retention: a removed target's entry goes, a live target's stays for ever. A
//! node refuses an entry from a peer that it would drop, so that expired entries do not come back.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// How many buckets keys are spread over for the digest. Fixed: nodes compare bucket by bucket.
pub(crate) const BUCKETS: usize = 256;
/// The most bytes one bucket hash takes on the wire (a varint `u64`).
pub(crate) const HASH_BYTES: usize = 9;
/// The most entries a table holds: a peer's new keys past it are refused (changes to keys held
/// are taken). Far above what a cluster's operators write (one entry per target they set).
pub(crate) const MAX_ENTRIES: usize = 100_000;
/// How far ahead of this node's wall clock a peer's write may be stamped. A write from further
/// ahead comes from a node whose clock is wrong; taken, it would carry this node's clock along,
/// and its entry would never grow old enough to expire.
pub(crate) const MAX_CLOCK_AHEAD: Duration = Duration::from_secs(3_600);

/// A hybrid logical clock time: wall-clock milliseconds, and a counter that orders events within
/// one millisecond or while the wall clock lags a time seen from another node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch.
    pub ms: u64,
    /// Order within `ms`.
    pub counter: u32,
}

/// Which write a value is: later time wins; at equal times, the greater origin name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// When it was written.
    pub time: Hlc,
    /// The node that wrote it.
    pub origin: String,
}

/// A value of the table as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StateEntry {
    pub(crate) key: String,
    pub(crate) version: Version,
    pub(crate) value: Vec<u8>,
}

/// What merging a peer's entry did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Merged {
    /// It was newer: the change now holds.
    Changed(StateChange),
    /// This node holds it or a newer one, or it expired.
    Stale,
    /// Refused: its time is more than [`MAX_CLOCK_AHEAD`] ahead of this node's clock.
    FromTheFuture,
    /// Refused: a new key, and the table holds [`MAX_ENTRIES`].
    Full,
}

/// A change to this node's table made by another node's write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// The key written.
    pub key: String,
    /// The value now held.
    pub value: Vec<u8>,
    /// The winning write.
    pub version: Version,
}

/// What happened to this node's durable state, for its user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateUpdate {
    /// Another node's write now holds.
    Changed(StateChange),
    /// A key out of scope was dropped after the retention.
    Expired(String),
}

/// The hashes of a run of buckets, `first` to `first + hashes.len()`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StateDigest {
    pub(crate) first: u16,
    pub(crate) hashes: Vec<u64>,
}

struct Slot {
    version: Version,
    value: Vec<u8>,
    bucket: u16,
    /// This write's share of its bucket's hash.
    fingerprint: u64,
}

/// The table, and the clock that stamps this node's writes.
pub(crate) struct StateTable {
    entries: BTreeMap<String, Slot>,
    /// XOR of the fingerprints in each bucket.
    buckets: Vec<u64>,
    clock: Hlc,
    retention: Duration,
    /// Keys the user still wants; None: every key.
    scope: Option<HashSet<String>>,
}

/// The first 8 bytes of SHA-256 over `parts`, each framed by its length: the same on every node
/// and every build.
fn hash(parts: &[&[u8]]) -> u64 {
    let mut sha = Sha256::new();
    for part in parts {
        sha.update((part.len() as u64).to_le_bytes());
        sha.update(part);
    }
    let digest = sha.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("SHA-256 is 32 bytes"))
}

fn bucket_of(key: &str) -> u16 {
    (hash(&[key.as_bytes()]) % BUCKETS as u64) as u16
}

fn fingerprint(key: &str, version: &Version, value: &[u8]) -> u64 {
    let time = [version.time.ms.to_le_bytes().as_slice(), &version.time.counter.to_le_bytes()].concat();
    hash(&[key.as_bytes(), &time, version.origin.as_bytes(), value])
}

impl StateTable {
    pub(crate) fn new(retention: Duration) -> StateTable {
        StateTable {
            entries: BTreeMap::new(),
            buckets: vec![0; BUCKETS],
            clock: Hlc::default(),
            retention,
            scope: None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The value of `key` and its version.
    pub(crate) fn get(&self, key: &str) -> Option<(&[u8], &Version)> {
        self.entries.get(key).map(|slot| (slot.value.as_slice(), &slot.version))
    }

    /// Writes `value` under `key` as `origin`, at `wall_ms`: the write wins over every one this
    /// node has seen.
    pub(crate) fn set(&mut self, key: String, value: Vec<u8>, origin: &str, wall_ms: u64) -> StateEntry {
        self.clock = if wall_ms > self.clock.ms {
            Hlc { ms: wall_ms, counter: 0 }
        } else {
            match self.clock.counter.checked_add(1) {
                Some(counter) => Hlc { counter, ..self.clock },
                None => Hlc { ms: self.clock.ms + 1, counter: 0 },
            }
        };
        let entry = StateEntry { key, version: Version { time: self.clock, origin: origin.to_owned() }, value };
        self.store(entry.clone());
        entry
    }

    /// Takes `entry` if it is newer than what this node holds (and in scope, or young enough),
    /// unless it is stamped too far ahead or would grow the table past its bound.
    pub(crate) fn merge(&mut self, entry: StateEntry, wall_ms: u64) -> Merged {
        let held = self.entries.get(&entry.key);
        if held.is_some_and(|held| held.version >= entry.version) || self.expired(&entry.key, &entry.version, wall_ms) {
            return Merged::Stale;
        }
        if entry.version.time.ms > wall_ms.saturating_add(MAX_CLOCK_AHEAD.as_millis() as u64) {
            return Merged::FromTheFuture;
        }
        if held.is_none() && self.entries.len() >= MAX_ENTRIES {
            return Merged::Full;
        }
        // Later writes here must win over what was seen.
        self.clock = self.clock.max(entry.version.time);
        let change = StateChange { key: entry.key.clone(), value: entry.value.clone(), version: entry.version.clone() };
        self.store(entry);
        Merged::Changed(change)
    }

    fn store(&mut self, entry: StateEntry) {
        let bucket = bucket_of(&entry.key);
        let fingerprint = fingerprint(&entry.key, &entry.version, &entry.value);
        let slot = Slot { version: entry.version, value: entry.value, bucket, fingerprint };
        if let Some(old) = self.entries.insert(entry.key, slot) {
            self.buckets[usize::from(old.bucket)] ^= old.fingerprint;
        }
        self.buckets[usize::from(bucket)] ^= fingerprint;
    }

    fn expired(&self, key: &str, version: &Version, wall_ms: u64) -> bool {
        let out_of_scope = self.scope.as_ref().is_some_and(|keys| !keys.contains(key));
        let age = Duration::from_millis(wall_ms.saturating_sub(version.time.ms));
        out_of_scope && age > self.retention
    }

    /// The keys the user still wants: others are dropped once older than the retention.
    pub(crate) fn scope(&mut self, keys: HashSet<String>) {
        self.scope = Some(keys);
    }

    /// Drops the entries out of scope and older than the retention; their keys.
    pub(crate) fn expire(&mut self, wall_ms: u64) -> Vec<String> {
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(key, slot)| self.expired(key, &slot.version, wall_ms))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &gone {
            if let Some(slot) = self.entries.remove(key) {
                self.buckets[usize::from(slot.bucket)] ^= slot.fingerprint;
            }
        }
        gone
    }

    /// The bucket hashes, `per_frame` to a frame.
    pub(crate) fn digest(&self, per_frame: usize) -> Vec<StateDigest> {
        let per_frame = per_frame.clamp(1, BUCKETS);
        self.buckets
            .chunks(per_frame)
            .enumerate()
            .map(|(i, hashes)| StateDigest { first: (i * per_frame) as u16, hashes: hashes.to_vec() })
            .collect()
    }

    /// The buckets whose hashes differ from a peer's `digest` (out-of-range ones are ignored).
    pub(crate) fn differing(&self, digest: &StateDigest) -> Vec<u16> {
        let first = usize::from(digest.first);
        let theirs = digest.hashes.iter().take(BUCKETS.saturating_sub(first));
        theirs
            .enumerate()
            .filter(|&(i, hash)| self.buckets[first + i] != *hash)
            .map(|(i, _)| (first + i) as u16)
            .collect()
    }

    /// Every entry in `buckets`.
    pub(crate) fn entries_in(&self, buckets: &[u16]) -> Vec<StateEntry> {
        let wanted: HashSet<u16> = buckets.iter().copied().collect();
        self.entries
            .iter()
            .filter(|(_, slot)| wanted.contains(&slot.bucket))
            .map(|(key, slot)| StateEntry {
                key: key.clone(),
                version: slot.version.clone(),
                value: slot.value.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    impl Merged {
        fn changed(&self) -> bool {
            matches!(self, Merged::Changed(_))
        }

        fn stale(&self) -> bool {
            *self == Merged::Stale
        }
    }

    /// Makes `to` hold what `from` holds, the way two nodes do: digests, then the differing
    /// buckets' entries both ways. Returns the entries sent.
    fn push_pull(from: &mut StateTable, to: &mut StateTable, wall_ms: u64) -> usize {
        let differing: Vec<u16> = from.digest(100).iter().flat_map(|d| to.differing(d)).collect();
        let theirs = to.entries_in(&differing);
        let ours = from.entries_in(&differing);
        let sent = theirs.len() + ours.len();
        for entry in theirs {
            from.merge(entry, wall_ms);
        }
        for entry in ours {
            to.merge(entry, wall_ms);
        }
        sent
    }

    #[test]
    fn the_later_write_wins_whatever_order_it_arrives_in() {
        let (mut a, mut b, mut c) = (StateTable::new(DAY), StateTable::new(DAY), StateTable::new(DAY));
        let first = a.set("k".into(), b"down".to_vec(), "a", 1_000);
        let second = b.set("k".into(), b"up".to_vec(), "b", 2_000);
        assert!(c.merge(second.clone(), 2_000).changed());
        assert!(c.merge(first.clone(), 2_000).stale(), "an older write never replaces a newer one");
        assert!(a.merge(second.clone(), 2_000).changed());
        assert!(a.merge(second, 2_000).stale(), "a write changes a table once");
        for table in [&a, &c] {
            assert_eq!(table.get("k").unwrap().0, b"up");
        }
        // Same millisecond on two nodes: the origin name decides, everywhere alike.
        let x = a.set("t".into(), b"x".to_vec(), "a", 5_000);
        let y = c.set("t".into(), b"y".to_vec(), "c", 5_000);
        assert!(y.version > x.version);
        assert!(a.merge(y, 5_000).changed() && c.merge(x, 5_000).stale());
    }

    #[test]
    fn a_write_after_seeing_a_newer_clock_is_newer_still() {
        // b's wall clock is half an hour behind a's; its write after seeing a's must still win.
        let (mut a, mut b) = (StateTable::new(DAY), StateTable::new(DAY));
        let ahead = a.set("k".into(), b"down".to_vec(), "a", 1_800_000);
        b.merge(ahead.clone(), 0);
        let after = b.set("k".into(), b"up".to_vec(), "b", 1);
        assert!(after.version > ahead.version);
        assert!(a.merge(after, 1_800_000).changed());
        assert_eq!(a.get("k").unwrap().0, b"up");
    }

    #[test]
    fn push_pull_sends_only_the_buckets_that_differ_and_converges() {
        let (mut a, mut b) = (StateTable::new(DAY), StateTable::new(DAY));
        for i in 0..10_000 {
            let entry = a.set(format!("health/up/10.0.{}.{}:80", i / 256, i % 256), vec![1], "a", 1_000);
            b.merge(entry, 1_000);
        }
        assert_eq!(push_pull(&mut a, &mut b, 1_000), 0, "equal tables send nothing");
        a.set("health/up/10.0.0.1:80".into(), vec![0], "a", 2_000);
        b.set("health/up/10.0.0.2:80".into(), vec![0], "b", 2_000);
        let sent = push_pull(&mut a, &mut b, 2_000);
        assert!(sent < 200, "two changed keys cost {sent} entries of 10,000");
        assert_eq!(a.digest(BUCKETS), b.digest(BUCKETS));
        for key in ["health/up/10.0.0.1:80", "health/up/10.0.0.2:80"] {
            assert_eq!(a.get(key), b.get(key));
            assert_eq!(a.get(key).unwrap().0, [0]);
        }
    }

    #[test]
    fn out_of_scope_entries_go_after_the_retention_and_do_not_come_back() {
        let (mut a, mut b) = (StateTable::new(Duration::from_secs(60)), StateTable::new(Duration::from_secs(60)));
        let old = a.set("gone".into(), vec![1], "a", 0);
        a.set("kept".into(), vec![1], "a", 0);
        b.merge(old.clone(), 0);
        a.scope(HashSet::from(["kept".to_owned()]));
        assert!(a.expire(59_000).is_empty(), "young entries stay");
        assert_eq!(a.expire(61_000), ["gone"]);
        assert_eq!(a.len(), 1);
        // b never narrowed its scope and offers the entry again: refused.
        push_pull(&mut b, &mut a, 61_000);
        assert!(a.get("gone").is_none());
        assert!(a.merge(old, 61_000).stale());
        // In scope, an entry lives however old it is.
        assert!(a.expire(10 * 86_400_000).is_empty());
    }

    #[test]
    fn a_digest_from_a_peer_cannot_reach_past_the_buckets() {
        let table = StateTable::new(DAY);
        let hostile = StateDigest { first: u16::MAX, hashes: vec![1; 1000] };
        assert!(table.differing(&hostile).is_empty());
        let long = StateDigest { first: (BUCKETS - 2) as u16, hashes: vec![1; 1000] };
        assert_eq!(table.differing(&long), [(BUCKETS - 2) as u16, (BUCKETS - 1) as u16]);
    }

    #[test]
    fn a_write_stamped_far_ahead_is_refused_and_leaves_the_clock_alone() {
        let (mut a, mut b) = (StateTable::new(DAY), StateTable::new(DAY));
        let hour = MAX_CLOCK_AHEAD.as_millis() as u64;
        let wrong = a.set("k".into(), b"down".to_vec(), "a", 10_000 + hour + 1);
        assert_eq!(b.merge(wrong, 10_000), Merged::FromTheFuture);
        assert!(b.get("k").is_none());
        let own = b.set("j".into(), vec![1], "b", 10_000);
        assert_eq!(own.version.time, Hlc { ms: 10_000, counter: 0 }, "b's clock did not follow");
        // Within the bound, it is taken.
        let skewed = a.set("k".into(), b"up".to_vec(), "a", 10_000 + hour + 1);
        assert!(b.merge(skewed, 20_000).changed());
    }

    #[test]
    fn a_full_table_refuses_new_keys_from_peers_but_takes_changes_to_held_ones() {
        let (mut a, mut b) = (StateTable::new(DAY), StateTable::new(DAY));
        for i in 0..MAX_ENTRIES {
            b.set(format!("k{i}"), vec![1], "b", 1_000);
        }
        let new = a.set("another".into(), vec![1], "a", 2_000);
        assert_eq!(b.merge(new, 2_000), Merged::Full);
        let change = a.set("k7".into(), vec![0], "a", 2_000);
        assert!(b.merge(change, 2_000).changed());
        assert_eq!((b.len(), b.get("k7").unwrap().0), (MAX_ENTRIES, &[0u8][..]));
    }
}
