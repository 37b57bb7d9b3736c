//! Latency-aware balancing: owns each target's peak-EWMA latency estimate and
//! in-flight count, and chooses with the power of two random choices.

use std::time::{Duration, Instant};

use super::{eligible, InFlight, Pick, TargetSpec};

/// Peak-EWMA latency with the power of two random choices (as in Finagle and
/// tower/linkerd).
///
/// Per target it keeps a latency estimate: an observation above the estimate
/// replaces it at once (the "peak"), a lower one is blended in with weight
/// `1 - exp(-elapsed / DECAY)`, `elapsed` being the time since the previous
/// observation. A target's cost is `estimate × (in_flight + 1)`. Each pick
/// draws two distinct eligible targets from an RNG seeded at construction and
/// takes the cheaper (the first drawn on a tie); with one eligible target,
/// that one.
///
/// While a target goes unobserved its estimate, as the cost sees it, decays
/// towards zero with the same time constant. Without this a target that once
/// answered slowly would lose every comparison under light load, never be
/// observed again and never recover; with it, it is retried after a while
/// (a 1 s peak against 10 ms peers: about 46 s when idle, sooner under load).
///
/// Weight is honoured only as eligibility: weight 0 is never picked, any
/// other weight counts the same. Latency, not configuration, sets the share.
///
/// Pick is O(1) when the two first draws are eligible, otherwise O(targets)
/// (it then draws among a list of the eligible ones).
#[derive(Debug, Clone)]
pub struct PeakEwma {
    weights: Vec<u32>,
    in_flight: InFlight,
    estimates: Vec<Option<Estimate>>,
    rng: fastrand::Rng,
    /// Scratch list of eligible indices for the slow path, kept to avoid
    /// allocating on every pick.
    scratch: Vec<usize>,
}

/// A latency estimate and when it was last updated.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// Seconds.
    secs: f64,
    at: Instant,
}

impl PeakEwma {
    /// Time constant of the decay: an observation's weight in the estimate
    /// falls by a factor e every 10 s.
    pub const DECAY: Duration = Duration::from_secs(10);

    /// The latency assumed for a target never observed. It is deliberately
    /// below typical upstream latencies (1-100 ms) so a new target is tried:
    /// one never chosen is never measured. The optimism costs little: the
    /// first response replaces it at once (it is almost always a peak), the
    /// in-flight factor raises the cost with each request sent meanwhile, and
    /// the power of two choices offers the new target in only about 2 of
    /// every `targets` picks.
    pub const DEFAULT_RTT: Duration = Duration::from_millis(1);

    /// The latency recorded for a request that ended without a response head
    /// (`latency` = `None`). Without a penalty a target that fails fast
    /// (connection refused) would look like the fastest one and draw traffic.
    /// 1 s, the order of a connect timeout, puts it behind healthy peers until
    /// the decay brings it back.
    pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

    /// A balancer over `targets` with no observations, its RNG seeded by
    /// `seed` (the same seed and calls give the same choices).
    pub fn new(targets: &[TargetSpec<'_>], seed: u64) -> Self {
        PeakEwma {
            weights: targets.iter().map(|t| t.weight).collect(),
            in_flight: InFlight::new(targets.len()),
            estimates: vec![None; targets.len()],
            rng: fastrand::Rng::with_seed(seed),
            scratch: Vec::with_capacity(targets.len()),
        }
    }

    /// Draws two distinct eligible targets (weight > 0, not skipped) and
    /// chooses the one of lower cost at `pick.now`, recording one request in
    /// flight on it. `None` when no target is eligible. Does not use
    /// `hash_key`.
    pub fn pick(&mut self, pick: &Pick<'_>) -> Option<usize> {
        let (a, b) = self.draw(pick)?;
        let chosen = match b {
            Some(b) if self.cost(b, pick.now) < self.cost(a, pick.now) => b,
            _ => a,
        };
        self.in_flight.start(chosen);
        Some(chosen)
    }

    /// Ends one request started by [`pick`](Self::pick) on `index` and
    /// records its latency at `now` (`None` = failure, recorded as
    /// [`FAILURE_PENALTY`](Self::FAILURE_PENALTY)). Extra calls still record
    /// the latency but never take the in-flight count below 0; unknown
    /// indices are ignored.
    pub fn finish(&mut self, index: usize, latency: Option<Duration>, now: Instant) {
        self.in_flight.end(index);
        let rtt = latency.unwrap_or(Self::FAILURE_PENALTY).as_secs_f64();
        let Some(slot) = self.estimates.get_mut(index) else {
            return;
        };
        let secs = match *slot {
            Some(prior) if rtt <= prior.secs => {
                let w = decay(prior.at, now);
                prior.secs * w + rtt * (1.0 - w)
            }
            // The first observation, or a peak: taken at once.
            _ => rtt,
        };
        *slot = Some(Estimate { secs, at: now });
    }

    /// Target `index`'s latency estimate as picks see it at `now` (decayed
    /// since its last observation); `None` when it has never been observed or
    /// the index is unknown.
    pub fn estimate(&self, index: usize, now: Instant) -> Option<Duration> {
        let e = (*self.estimates.get(index)?)?;
        let secs = e.secs * decay(e.at, now);
        Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
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

    /// `estimate × (in_flight + 1)`, in seconds.
    fn cost(&self, index: usize, now: Instant) -> f64 {
        let rtt = match self.estimates[index] {
            Some(e) => e.secs * decay(e.at, now),
            None => Self::DEFAULT_RTT.as_secs_f64(),
        };
        rtt * (f64::from(self.in_flight.get(index)) + 1.0)
    }

    /// Two distinct eligible targets uniformly at random (the second `None`
    /// when only one is eligible), or `None` when none is.
    fn draw(&mut self, pick: &Pick<'_>) -> Option<(usize, Option<usize>)> {
        let n = self.weights.len();
        if n >= 2 {
            // Fast path: a uniform pair of distinct indices, kept if both are
            // eligible. Conditioned on that it is uniform over eligible pairs,
            // and the slow path draws uniformly too, so the whole is uniform.
            let (a, b) = distinct_pair(&mut self.rng, n);
            if eligible(self.weights[a], a, pick) && eligible(self.weights[b], b, pick) {
                return Some((a, Some(b)));
            }
        }
        self.scratch.clear();
        let weights = &self.weights;
        self.scratch.extend((0..n).filter(|&i| eligible(weights[i], i, pick)));
        match self.scratch.len() {
            0 => None,
            1 => Some((self.scratch[0], None)),
            m => {
                let (a, b) = distinct_pair(&mut self.rng, m);
                Some((self.scratch[a], Some(self.scratch[b])))
            }
        }
    }
}

/// Two distinct indices below `n` (`n >= 2`), uniformly.
fn distinct_pair(rng: &mut fastrand::Rng, n: usize) -> (usize, usize) {
    let a = rng.usize(..n);
    let b = rng.usize(..n - 1);
    (a, if b >= a { b + 1 } else { b })
}

/// The weight left to a value recorded at `then`, at `now`:
/// `exp(-elapsed / DECAY)`, 1 when `now` is not after `then`.
fn decay(then: Instant, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(then).as_secs_f64();
    (-elapsed / PeakEwma::DECAY.as_secs_f64()).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(weights: &[u32], seed: u64) -> PeakEwma {
        let keys = super::super::test_keys(weights.len());
        let targets = super::super::test_specs(&keys, weights);
        PeakEwma::new(&targets, seed)
    }

    /// Picks `n` times, 1 ms apart, each request finishing at once with
    /// `latency(target)`; returns the picks.
    fn run(b: &mut PeakEwma, start: Instant, n: u64, latency: impl Fn(usize) -> Duration) -> Vec<usize> {
        (0..n)
            .map(|k| {
                let now = start + Duration::from_millis(k);
                let i = b.pick(&Pick::new(now)).expect("eligible");
                b.finish(i, Some(latency(i)), now + latency(i));
                i
            })
            .collect()
    }

    #[test]
    fn slow_target_is_picked_far_less() {
        let mut b = balancer(&[1, 1, 1], 3);
        let latency = |i| Duration::from_millis(if i == 2 { 100 } else { 5 });
        let picks = run(&mut b, Instant::now(), 3000, latency);
        let slow = picks.iter().filter(|&&i| i == 2).count();
        assert!(slow < 30, "slow target picked {slow} of 3000 times");
        assert!(picks.iter().filter(|&&i| i == 0).count() > 1000);
    }

    #[test]
    fn in_flight_raises_cost() {
        let mut b = balancer(&[1, 1], 5);
        let now = Instant::now();
        b.finish(0, Some(Duration::from_millis(1)), now);
        b.finish(1, Some(Duration::from_millis(10)), now);
        let only_0 = |i: usize| i != 0;
        let on_0 = Pick { skip: &only_0, ..Pick::new(now) };
        for _ in 0..5 {
            assert_eq!(b.pick(&on_0), Some(0));
        }
        // 1 ms × 6 < 10 ms × 1.
        assert_eq!(b.pick(&Pick::new(now)), Some(0));
        for _ in 0..14 {
            b.pick(&on_0);
        }
        // 1 ms × 21 > 10 ms × 1.
        assert_eq!(b.in_flight(0), 20);
        assert_eq!(b.pick(&Pick::new(now)), Some(1));
    }

    #[test]
    fn skip_and_weight_zero_are_respected() {
        let mut b = balancer(&[1, 0, 1, 0], 9);
        let skip = |i: usize| i == 2;
        let pick = Pick { skip: &skip, ..Pick::new(Instant::now()) };
        for _ in 0..50 {
            assert_eq!(b.pick(&pick), Some(0));
        }
        let pick = Pick { skip: &|_| true, ..pick };
        assert_eq!(b.pick(&pick), None);
        let seen = run(&mut b, Instant::now(), 200, |_| Duration::from_millis(1));
        assert!(seen.iter().all(|&i| i == 0 || i == 2));
    }

    #[test]
    fn same_seed_gives_same_sequence() {
        let latency = |i| Duration::from_millis(1 + i as u64 % 3);
        let start = Instant::now();
        let one = run(&mut balancer(&[1, 1, 1, 1, 1], 42), start, 300, latency);
        let two = run(&mut balancer(&[1, 1, 1, 1, 1], 42), start, 300, latency);
        let other = run(&mut balancer(&[1, 1, 1, 1, 1], 43), start, 300, latency);
        assert_eq!(one, two);
        assert_ne!(one, other);
    }

    #[test]
    fn peak_replaces_at_once_and_lower_observations_decay_in() {
        let mut b = balancer(&[1], 1);
        let t0 = Instant::now();
        assert_eq!(b.estimate(0, t0), None);
        b.finish(0, Some(Duration::from_millis(10)), t0);
        b.finish(0, Some(Duration::from_millis(100)), t0);
        assert_eq!(b.estimate(0, t0), Some(Duration::from_millis(100)));
        // One time constant later: 100 × e^-1 + 10 × (1 - e^-1) ≈ 43.1 ms.
        let t1 = t0 + PeakEwma::DECAY;
        b.finish(0, Some(Duration::from_millis(10)), t1);
        let ms = b.estimate(0, t1).expect("observed").as_secs_f64() * 1e3;
        assert!((ms - 43.1).abs() < 0.1, "{ms}");
        // Unobserved, the estimate decays towards zero.
        let ms = b.estimate(0, t1 + PeakEwma::DECAY).expect("observed").as_secs_f64() * 1e3;
        assert!((ms - 43.1 / std::f64::consts::E).abs() < 0.1, "{ms}");
    }

    #[test]
    fn failure_is_recorded_as_penalty_and_never_underflows() {
        let mut b = balancer(&[1, 1], 1);
        let now = Instant::now();
        b.finish(1, None, now);
        assert_eq!(b.estimate(1, now), Some(PeakEwma::FAILURE_PENALTY));
        assert_eq!(b.in_flight(1), 0);
        b.finish(9, None, now);
        // Target 0 (unobserved, 1 ms) now always beats target 1 (1 s).
        assert!((0..20).all(|_| {
            let i = b.pick(&Pick::new(now));
            b.finish(0, Some(Duration::from_millis(1)), now);
            i == Some(0)
        }));
    }
}
