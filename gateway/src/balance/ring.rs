//! Consistent hashing: owns the ring of slots, like Kong's ring-balancer, whose
//! owners are chosen by weighted rendezvous hashing so the ring depends only on
//! the target set.

use xxhash_rust::xxh3::xxh3_64;

use super::{eligible, InFlight, Pick, TargetSpec};

/// A ring of `slots` slots, each owned by one target, for sticky routing.
///
/// Slot `s` belongs to the target with weight > 0 that maximises
/// `weight / -ln(u)`, where `u` in (0, 1) comes from xxh3 of the target's key
/// and `s` (weighted rendezvous hashing). So:
/// - each target owns about `weight / total_weight` of the slots;
/// - the ring is a pure function of the set of (key, weight) pairs: every node
///   builds the same ring whatever order the targets come in (exact ties are
///   broken by key; keys must be unique);
/// - adding a target moves only the slots it wins (about
///   `weight_new / total_weight`, all to the new target), and removing one
///   moves only the slots it owned.
///
/// A request with hash key `k` lands on slot `k % slots`. If that slot's owner
/// is skipped the pick walks forward slot by slot (wrapping) to the first
/// eligible owner: the ring is never rebuilt for skips, so keys whose owner is
/// eligible stay where they are. Without a key an internal counter stands in,
/// so requests walk the slots in turn and the spread follows slot ownership.
///
/// Building costs `slots × targets` hashes. Picking is O(1) when the owner is
/// eligible; with skipped owners the walk takes about
/// `total_weight / eligible_weight` steps on average, and one O(targets) check
/// finds out when nothing is eligible at all.
#[derive(Debug, Clone)]
pub struct HashRing {
    /// Owner of each slot; empty when no target has weight > 0.
    owners: Vec<u32>,
    weights: Vec<u32>,
    /// How many targets have weight > 0.
    active: usize,
    in_flight: InFlight,
    /// Stand-in key for requests without one.
    counter: u64,
}

impl HashRing {
    /// Kong's default ring size.
    pub const DEFAULT_SLOTS: u32 = 10_000;
    /// Smallest ring size; smaller requests are raised to it.
    pub const MIN_SLOTS: u32 = 10;
    /// Largest ring size; larger requests are lowered to it.
    pub const MAX_SLOTS: u32 = 65_536;

    /// Builds the ring of `slots` slots (clamped to
    /// [`MIN_SLOTS`](Self::MIN_SLOTS)..=[`MAX_SLOTS`](Self::MAX_SLOTS)) over
    /// `targets`. Costs `slots × targets` hashes (10 000 slots × 100 targets
    /// is a million, some milliseconds).
    pub fn new(targets: &[TargetSpec<'_>], slots: u32) -> Self {
        let slots = slots.clamp(Self::MIN_SLOTS, Self::MAX_SLOTS);
        // Owners are stored as u32 to halve the ring; 2^32 targets would take
        // about 100 GiB of TargetSpecs, so `i as u32` cannot truncate.
        let active: Vec<(u32, u64, f64, &str)> = targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.weight > 0)
            .map(|(i, t)| (i as u32, xxh3_64(t.key.as_bytes()), f64::from(t.weight), t.key))
            .collect();
        let owners = if active.is_empty() {
            Vec::new()
        } else {
            (0..slots)
                .map(|slot| {
                    let mut best = (f64::NEG_INFINITY, "", 0u32);
                    for &(index, key_hash, weight, key) in &active {
                        let score = weight / -unit(slot_hash(key_hash, slot)).ln();
                        if score > best.0 || (score == best.0 && key < best.1) {
                            best = (score, key, index);
                        }
                    }
                    best.2
                })
                .collect()
        };
        HashRing {
            owners,
            weights: targets.iter().map(|t| t.weight).collect(),
            active: active.len(),
            in_flight: InFlight::new(targets.len()),
            counter: 0,
        }
    }

    /// Chooses the owner of the request's slot (`hash_key % slots`, or the
    /// next slot in turn when `hash_key` is `None`), walking forward past
    /// skipped owners, and records one request in flight on it. `None` when no
    /// target is eligible. Does not use `now`.
    pub fn pick(&mut self, pick: &Pick<'_>) -> Option<usize> {
        if self.active == 0 {
            return None;
        }
        let key = pick.hash_key.unwrap_or_else(|| {
            let k = self.counter;
            self.counter = self.counter.wrapping_add(1);
            k
        });
        let n = self.owners.len();
        // n <= MAX_SLOTS, so the remainder fits in usize.
        let start = (key % n as u64) as usize;
        let mut checked = false;
        for step in 0..n {
            let slot = if start + step >= n { start + step - n } else { start + step };
            let owner = self.owners[slot] as usize;
            if !(pick.skip)(owner) {
                self.in_flight.start(owner);
                return Some(owner);
            }
            // After as many skipped slots as there are owners, make sure the
            // walk can end at all before going round the whole ring.
            if !checked && step >= self.active {
                let any = self.weights.iter().enumerate().any(|(i, &w)| eligible(w, i, pick));
                if !any {
                    return None;
                }
                checked = true;
            }
        }
        None
    }

    /// Ends one request started by [`pick`](Self::pick) on `index`. Extra
    /// calls and unknown indices are ignored.
    pub fn finish(&mut self, index: usize) {
        self.in_flight.end(index);
    }

    /// Requests picked on `index` and not yet finished (0 for an unknown index).
    pub fn in_flight(&self, index: usize) -> u32 {
        self.in_flight.get(index)
    }

    /// The target owning `slot`, `None` when `slot >= slots()` or no target
    /// has weight > 0.
    pub fn owner(&self, slot: usize) -> Option<usize> {
        self.owners.get(slot).map(|&o| o as usize)
    }

    /// Number of slots in the ring (0 when no target has weight > 0).
    pub fn slots(&self) -> usize {
        self.owners.len()
    }

    /// Number of targets, including those of weight 0.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Whether there are no targets at all.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }
}

/// The hash of (target key, slot): xxh3 over the key's hash and the slot number.
fn slot_hash(key_hash: u64, slot: u32) -> u64 {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&key_hash.to_le_bytes());
    bytes[8..].copy_from_slice(&slot.to_le_bytes());
    xxh3_64(&bytes)
}

/// Maps a hash to a float strictly inside (0, 1): the top 52 bits plus one
/// half, times 2^-52, so neither 0 nor 1 (whose logarithms would give
/// infinite or zero scores) can occur, and every value is exact.
fn unit(hash: u64) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 52) as f64;
    ((hash >> 12) as f64 + 0.5) * SCALE
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn specs(targets: &[(&'static str, u32)]) -> Vec<TargetSpec<'static>> {
        targets.iter().map(|&(key, weight)| TargetSpec { key, weight }).collect()
    }

    /// Slot owners by key, so rings over differently ordered targets compare.
    fn owner_keys(ring: &HashRing, targets: &[TargetSpec<'static>]) -> Vec<&'static str> {
        (0..ring.slots()).map(|s| targets[ring.owner(s).expect("owned")].key).collect()
    }

    fn keys(n: usize) -> Vec<u64> {
        let mut rng = fastrand::Rng::with_seed(11);
        (0..n).map(|_| rng.u64(..)).collect()
    }

    fn route(ring: &mut HashRing, key: u64, skip: &dyn Fn(usize) -> bool) -> Option<usize> {
        let pick = Pick { hash_key: Some(key), skip, ..Pick::new(Instant::now()) };
        let i = ring.pick(&pick);
        if let Some(i) = i {
            ring.finish(i);
        }
        i
    }

    const ABC: [(&str, u32); 3] = [("10.0.0.1:80", 100), ("10.0.0.2:80", 100), ("10.0.0.3:80", 100)];

    #[test]
    fn spread_follows_weights() {
        let targets = specs(&[("a:80", 100), ("b:80", 50), ("c:80", 150), ("d:80", 0)]);
        let mut ring = HashRing::new(&targets, HashRing::DEFAULT_SLOTS);
        let mut counts = [0usize; 4];
        for key in keys(100_000) {
            counts[route(&mut ring, key, &|_| false).expect("eligible")] += 1;
        }
        assert_eq!(counts[3], 0);
        for (count, weight) in counts.iter().zip([100.0, 50.0, 150.0]) {
            let expected = 100_000.0 * weight / 300.0;
            let error = (*count as f64 - expected).abs() / expected;
            assert!(error < 0.05, "{counts:?}");
        }
    }

    #[test]
    fn adding_a_target_moves_about_its_share_to_it() {
        let three = specs(&ABC);
        let mut four = three.clone();
        four.push(TargetSpec { key: "10.0.0.4:80", weight: 100 });
        let mut before = HashRing::new(&three, HashRing::DEFAULT_SLOTS);
        let mut after = HashRing::new(&four, HashRing::DEFAULT_SLOTS);
        let mut moved = 0;
        let keys = keys(100_000);
        for &key in &keys {
            let (b, a) = (route(&mut before, key, &|_| false), route(&mut after, key, &|_| false));
            if a != b {
                moved += 1;
                assert_eq!(a, Some(3), "a key moved between old targets");
            }
        }
        let share = moved as f64 / keys.len() as f64;
        assert!((0.20..0.30).contains(&share), "{share}");
    }

    #[test]
    fn removing_a_target_moves_only_its_keys() {
        let four = specs(&[("a:80", 1), ("b:80", 2), ("c:80", 3), ("d:80", 4)]);
        let three: Vec<_> = four.iter().copied().filter(|t| t.key != "b:80").collect();
        let before = owner_keys(&HashRing::new(&four, 1000), &four);
        let after = owner_keys(&HashRing::new(&three, 1000), &three);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if a != b {
                assert_eq!(*b, "b:80");
                moved += 1;
            }
        }
        assert_eq!(moved, before.iter().filter(|&&k| k == "b:80").count());
        assert!(moved > 0);
    }

    #[test]
    fn order_of_targets_does_not_change_the_ring() {
        let one = specs(&[("a:80", 1), ("b:80", 2), ("c:80", 3), ("d:80", 0), ("e:80", 5)]);
        let mut other = one.clone();
        other.reverse();
        other.swap(0, 2);
        let ring_one = HashRing::new(&one, 5000);
        let ring_other = HashRing::new(&other, 5000);
        assert_eq!(ring_one.slots(), 5000);
        assert_eq!(owner_keys(&ring_one, &one), owner_keys(&ring_other, &other));
    }

    #[test]
    fn skipped_owner_sends_its_keys_elsewhere_and_others_stay() {
        let targets = specs(&ABC);
        let mut ring = HashRing::new(&targets, HashRing::DEFAULT_SLOTS);
        let skip = |i: usize| i == 1;
        let mut rerouted = [0usize; 3];
        for key in keys(20_000) {
            let home = route(&mut ring, key, &|_| false).expect("eligible");
            let now = route(&mut ring, key, &skip).expect("eligible");
            if home == 1 {
                rerouted[now] += 1;
            } else {
                assert_eq!(now, home);
            }
        }
        assert_eq!(rerouted[1], 0);
        assert!(rerouted[0] > 0 && rerouted[2] > 0, "{rerouted:?}");
    }

    #[test]
    fn no_key_spreads_over_targets() {
        let targets = specs(&[("a:80", 1), ("b:80", 1), ("c:80", 2)]);
        let mut ring = HashRing::new(&targets, 1000);
        let mut counts = [0usize; 3];
        let pick = Pick::new(Instant::now());
        for _ in 0..1000 {
            let i = ring.pick(&pick).expect("eligible");
            ring.finish(i);
            counts[i] += 1;
        }
        // One pass over the ring: exactly the slot ownership.
        for (t, &count) in counts.iter().enumerate() {
            assert_eq!(count, (0..1000).filter(|&s| ring.owner(s) == Some(t)).count());
        }
        assert!((200..300).contains(&counts[0]) && (400..600).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn none_when_nothing_is_eligible() {
        let targets = specs(&[("a:80", 1), ("b:80", 0)]);
        let mut ring = HashRing::new(&targets, 3);
        assert_eq!(ring.slots(), HashRing::MIN_SLOTS as usize);
        assert_eq!(route(&mut ring, 5, &|i| i == 0), None);
        let mut empty = HashRing::new(&specs(&[("a:80", 0)]), 100);
        assert_eq!(empty.slots(), 0);
        assert_eq!(route(&mut empty, 5, &|_| false), None);
        assert_eq!(HashRing::new(&targets, u32::MAX).slots(), 65_536);
    }
}
