//! Least connections: owns the per-target count of requests in flight and
//! chooses the target that is least loaded relative to its weight.

use super::{eligible, InFlight, Pick, TargetSpec};

/// Chooses the eligible target with the fewest requests in flight per unit of
/// weight.
///
/// The load compared is `(in_flight + 1) / weight`: the load the target would
/// carry with this request added. It orders targets like `in_flight / weight`
/// except among idle ones, where it prefers the heavier (weights 1 and 3 with
/// nothing in flight send the first request to the weight-3 target), and it
/// makes in-flight counts converge on the weight ratio (weights 1,2 hold
/// 10 and 20). Loads are compared by cross-multiplication in integers, no
/// floats. Ties are broken by rotating the scan's start to just past the last
/// chosen target, so equally loaded targets take turns rather than the lowest
/// index always winning. Pick is O(targets).
#[derive(Debug, Clone)]
pub struct LeastConnections {
    weights: Vec<u32>,
    in_flight: InFlight,
    /// Where the next scan starts: one past the last chosen target.
    start: usize,
}

impl LeastConnections {
    /// A balancer over `targets`, with nothing in flight.
    pub fn new(targets: &[TargetSpec<'_>]) -> Self {
        LeastConnections {
            weights: targets.iter().map(|t| t.weight).collect(),
            in_flight: InFlight::new(targets.len()),
            start: 0,
        }
    }

    /// Chooses the least loaded target among those with weight > 0 and not
    /// skipped, and records one request in flight on it. `None` when no target
    /// is eligible. Uses neither `hash_key` nor `now`.
    pub fn pick(&mut self, pick: &Pick<'_>) -> Option<usize> {
        let n = self.weights.len();
        // (index, in_flight + 1, weight) of the best so far.
        let mut best: Option<(usize, u64, u64)> = None;
        for i in (self.start..n).chain(0..self.start) {
            let weight = self.weights[i];
            if !eligible(weight, i, pick) {
                continue;
            }
            let load = u64::from(self.in_flight.get(i)) + 1;
            let weight = u64::from(weight);
            // load_i / weight_i < load_b / weight_b, cross-multiplied. Each
            // product is at most 2^32 * (2^32 - 1) < 2^64, so u64 suffices.
            if best.is_none_or(|(_, best_load, best_weight)| load * best_weight < best_load * weight) {
                best = Some((i, load, weight));
            }
        }
        let (chosen, _, _) = best?;
        self.start = (chosen + 1) % n;
        self.in_flight.start(chosen);
        Some(chosen)
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

    /// Number of targets, including those of weight 0.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Whether there are no targets at all.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn balancer(weights: &[u32]) -> LeastConnections {
        let keys = super::super::test_keys(weights.len());
        let targets = super::super::test_specs(&keys, weights);
        LeastConnections::new(&targets)
    }

    #[test]
    fn counts_in_flight() {
        let mut b = balancer(&[1, 1, 1]);
        let pick = Pick::new(Instant::now());
        let mut first: Vec<usize> = (0..3).map(|_| b.pick(&pick).expect("eligible")).collect();
        first.sort_unstable();
        assert_eq!(first, [0, 1, 2]);
        b.finish(1);
        assert_eq!(b.pick(&pick), Some(1));
        assert_eq!((b.in_flight(0), b.in_flight(1), b.in_flight(2)), (1, 1, 1));
    }

    #[test]
    fn equal_targets_take_turns_when_requests_finish_at_once() {
        let mut b = balancer(&[1, 1, 1]);
        let pick = Pick::new(Instant::now());
        let seq: Vec<usize> = (0..6)
            .map(|_| {
                let i = b.pick(&pick).expect("eligible");
                b.finish(i);
                i
            })
            .collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weights_are_respected() {
        let mut b = balancer(&[1, 2]);
        let pick = Pick::new(Instant::now());
        for _ in 0..30 {
            b.pick(&pick);
        }
        assert_eq!((b.in_flight(0), b.in_flight(1)), (10, 20));
        // Idle targets: the heavier one first.
        let mut b = balancer(&[1, 3]);
        assert_eq!(b.pick(&pick), Some(1));
    }

    #[test]
    fn skip_and_weight_zero_are_respected() {
        let mut b = balancer(&[1, 0, 1]);
        let skip = |i: usize| i == 2;
        let pick = Pick { skip: &skip, ..Pick::new(Instant::now()) };
        for _ in 0..5 {
            assert_eq!(b.pick(&pick), Some(0));
        }
        let pick = Pick { skip: &|_| true, ..pick };
        assert_eq!(b.pick(&pick), None);
    }

    #[test]
    fn finish_never_underflows() {
        let mut b = balancer(&[1, 1]);
        b.finish(0);
        b.finish(5);
        assert_eq!(b.in_flight(0), 0);
        let pick = Pick::new(Instant::now());
        let i = b.pick(&pick).expect("eligible");
        b.finish(i);
        b.finish(i);
        assert_eq!(b.in_flight(i), 0);
    }
}
