//! Smooth weighted round-robin, as nginx does it
//! (`ngx_http_upstream_get_peer`): owns the per-target running `current`
//! weights that interleave the targets in proportion to their weights.

use super::{eligible, InFlight, Pick, TargetSpec};

/// nginx's smooth weighted round-robin.
///
/// Each pick adds every eligible target's weight to its `current` value,
/// chooses the eligible target with the largest `current` (the lowest index on
/// a tie) and subtracts the total eligible weight from the chosen one. Over
/// every `sum(weights)` consecutive picks with the same eligible set each
/// target is chosen exactly `weight` times, interleaved rather than in bursts:
/// weights 5,1,1 give a,a,b,a,c,a,a. Skipped and weight-0 targets take no part
/// in a pick (their `current` is left as it is). Pick is O(targets).
#[derive(Debug, Clone)]
pub struct SmoothWeighted {
    weights: Vec<u32>,
    /// Each pick leaves the sum of the eligible targets' values unchanged, so
    /// they stay within a small multiple of the total weight: i64 is ample.
    current: Vec<i64>,
    in_flight: InFlight,
}

impl SmoothWeighted {
    /// A balancer over `targets`, starting the cycle afresh.
    pub fn new(targets: &[TargetSpec<'_>]) -> Self {
        SmoothWeighted {
            weights: targets.iter().map(|t| t.weight).collect(),
            current: vec![0; targets.len()],
            in_flight: InFlight::new(targets.len()),
        }
    }

    /// Chooses the next target in the smooth weighted order among those with
    /// weight > 0 and not skipped, and records one request in flight on it.
    /// `None` when no target is eligible. Uses neither `hash_key` nor `now`.
    pub fn pick(&mut self, pick: &Pick<'_>) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, (&weight, current)) in self.weights.iter().zip(&mut self.current).enumerate() {
            if !eligible(weight, i, pick) {
                continue;
            }
            *current += i64::from(weight);
            total += i64::from(weight);
            if best.is_none_or(|(_, value)| *current > value) {
                best = Some((i, *current));
            }
        }
        let (chosen, _) = best?;
        self.current[chosen] -= total;
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

    fn balancer(weights: &[u32]) -> SmoothWeighted {
        let keys = super::super::test_keys(weights.len());
        let targets = super::super::test_specs(&keys, weights);
        SmoothWeighted::new(&targets)
    }

    fn picks(b: &mut SmoothWeighted, pick: &Pick<'_>, n: usize) -> Vec<Option<usize>> {
        (0..n)
            .map(|_| {
                let i = b.pick(pick);
                if let Some(i) = i {
                    b.finish(i);
                }
                i
            })
            .collect()
    }

    #[test]
    fn spread_follows_weights_exactly_over_a_cycle() {
        let mut b = balancer(&[100, 50, 150]);
        let mut counts = [0; 3];
        for i in picks(&mut b, &Pick::new(Instant::now()), 300) {
            counts[i.expect("eligible")] += 1;
        }
        assert_eq!(counts, [100, 50, 150]);
    }

    #[test]
    fn sequence_is_smooth() {
        let mut b = balancer(&[5, 1, 1]);
        let seq = picks(&mut b, &Pick::new(Instant::now()), 14);
        let (a, bb, c) = (Some(0), Some(1), Some(2));
        let cycle = [a, a, bb, a, c, a, a];
        assert_eq!(seq[..7], cycle);
        assert_eq!(seq[7..], cycle);
    }

    #[test]
    fn skipped_target_is_excluded() {
        let mut b = balancer(&[1, 1, 1]);
        let skip = |i: usize| i == 1;
        let pick = Pick { skip: &skip, ..Pick::new(Instant::now()) };
        let seq = picks(&mut b, &pick, 10);
        assert!(seq.iter().all(|&i| i == Some(0) || i == Some(2)), "{seq:?}");
        assert_eq!(seq.iter().filter(|&&i| i == Some(0)).count(), 5);
    }

    #[test]
    fn weight_zero_is_never_picked() {
        let mut b = balancer(&[0, 3, 0, 1]);
        let seq = picks(&mut b, &Pick::new(Instant::now()), 40);
        assert!(seq.iter().all(|&i| i == Some(1) || i == Some(3)), "{seq:?}");
        assert_eq!(seq.iter().filter(|&&i| i == Some(1)).count(), 30);
    }

    #[test]
    fn all_skipped_gives_none() {
        let mut b = balancer(&[1, 2, 3]);
        let pick = Pick { skip: &|_| true, ..Pick::new(Instant::now()) };
        assert_eq!(b.pick(&pick), None);
        let mut zero = balancer(&[0, 0]);
        assert_eq!(zero.pick(&Pick::new(Instant::now())), None);
    }

    #[test]
    fn pick_counts_in_flight_and_finish_does_not_underflow() {
        let mut b = balancer(&[1, 1]);
        let pick = Pick::new(Instant::now());
        assert_eq!(b.pick(&pick), Some(0));
        assert_eq!(b.pick(&pick), Some(1));
        assert_eq!(b.pick(&pick), Some(0));
        assert_eq!((b.in_flight(0), b.in_flight(1)), (2, 1));
        for _ in 0..5 {
            b.finish(0);
        }
        b.finish(7);
        assert_eq!((b.in_flight(0), b.in_flight(1)), (0, 1));
    }
}
