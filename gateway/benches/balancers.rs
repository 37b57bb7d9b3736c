//! One pick plus one finish per algorithm, over 3 and over 100 targets.
//!
//! Names are `pick/<algorithm>/<targets>`. Weights vary (1, 2, 3, ...) so the
//! weighted paths are exercised; nothing is skipped.

use std::hint::black_box;
use std::time::{Duration, Instant};

use config_sync::Algorithm;
use criterion::{criterion_group, criterion_main, Criterion};
use gateway::balance::{Balancer, Pick, TargetSpec};

const ALGORITHMS: [(Algorithm, &str); 4] = [
    (Algorithm::RoundRobin, "round-robin"),
    (Algorithm::LeastConnections, "least-connections"),
    (Algorithm::ConsistentHashing, "consistent-hashing"),
    (Algorithm::Latency, "latency"),
];

fn pick_and_finish(c: &mut Criterion) {
    for targets in [3usize, 100] {
        let keys: Vec<String> = (0..targets).map(|i| format!("10.0.{}.{}:8080", i / 256, i % 256)).collect();
        let specs: Vec<TargetSpec<'_>> =
            keys.iter().enumerate().map(|(i, key)| TargetSpec { key, weight: 1 + (i % 3) as u32 }).collect();
        for (algorithm, name) in ALGORITHMS {
            let mut balancer = Balancer::new(algorithm, &specs, 10_000, 1);
            let mut now = Instant::now();
            let mut request: u64 = 0;
            c.bench_function(&format!("pick/{name}/{targets}"), |b| {
                b.iter(|| {
                    request = request.wrapping_add(1);
                    now += Duration::from_micros(10);
                    let pick = Pick { hash_key: Some(request.wrapping_mul(0x9E37_79B9_7F4A_7C15)), ..Pick::new(now) };
                    let i = balancer.pick(black_box(&pick)).expect("targets are eligible");
                    let latency = Duration::from_micros(500 + 100 * (i as u64 % 7));
                    balancer.finish(black_box(i), Some(latency), now);
                })
            });
        }
    }
}

/// The group, in a private module so the `pub fn` the macro generates is not
/// public API (which `missing_docs` would ask to document).
mod group {
    use super::*;

    criterion_group! {
        name = benches;
        config = Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        targets = pick_and_finish
    }
}
criterion_main!(group::benches);
