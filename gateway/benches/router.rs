//! Router match cost at 10, 1,000 and 10,000 routes. The route tables mix
//! exact hosts, wildcard hosts, host-less routes, prefixes, some regex
//! routes, method and header conditions; the requests hit the last-added
//! route of each kind or miss entirely. The point to check: the cost at
//! 10,000 routes is about the cost at 10.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, BenchmarkId, Criterion};
use gateway::router::{RouteSpec, Router};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// Route `i` of a synthetic table: every 20th (from the 8th) has a regex
/// path, the rest a unique prefix; hosts cycle through none, exact,
/// wildcard, and exact plus wildcard.
fn route(i: usize) -> RouteSpec {
    let hosts = match i % 4 {
        0 => vec![],
        1 => vec![format!("svc{}.example.com", i % 64)],
        2 => vec![format!("*.zone{}.example.com", i % 16)],
        _ => vec![format!("api{}.example.com", i % 64), format!("*.tenant{}.example.org", i % 32)],
    };
    let paths = if i % 20 == 7 {
        vec![format!(r"~/r{i}/items/\d+$")]
    } else {
        vec![format!("/api/v{}/svc{i}/resource", i % 3)]
    };
    let methods = if i.is_multiple_of(3) { vec![Method::GET, Method::POST] } else { vec![] };
    let headers =
        if i.is_multiple_of(10) { vec![(HeaderName::from_static("x-env"), vec!["prod".to_owned()])] } else { vec![] };
    RouteSpec { id: i, hosts, paths, methods, headers, priority: (i % 5) as i32, ..RouteSpec::default() }
}

/// One request shape: host, path.
struct Request {
    name: &'static str,
    host: Option<String>,
    path: String,
    expect: Option<usize>,
}

/// A request for the host of `spec` (its first host, with a label
/// substituted for a wildcard) and `path`.
fn request_for(name: &'static str, spec: &RouteSpec, path: String) -> Request {
    let host = spec.hosts.first().map(|h| match h.strip_prefix("*.") {
        Some(suffix) => format!("a.b.{suffix}:8443"),
        None => h.to_ascii_uppercase(),
    });
    Request { name, host, path, expect: Some(spec.id) }
}

fn requests(routes: &[RouteSpec]) -> Vec<Request> {
    let last =
        |f: &dyn Fn(&RouteSpec) -> bool| routes.iter().rev().find(|r| f(r)).expect("table has a route of each kind");
    let prefix = last(&|r| !r.paths[0].starts_with('~') && !r.hosts.is_empty());
    let hostless = last(&|r| !r.paths[0].starts_with('~') && r.hosts.is_empty());
    let wildcard = last(&|r| !r.paths[0].starts_with('~') && r.hosts.iter().any(|h| h.starts_with('*')));
    let regex = last(&|r| r.paths[0].starts_with('~'));
    let regex_path = regex.paths[0].trim_start_matches('~').replace(r"\d+$", "42");
    vec![
        request_for("prefix", prefix, format!("{}/123", prefix.paths[0])),
        request_for("hostless", hostless, format!("{}/123", hostless.paths[0])),
        request_for("wildcard", wildcard, format!("{}/123", wildcard.paths[0])),
        request_for("regex", regex, regex_path),
        Request {
            name: "miss",
            host: Some("nomatch.example.net".to_owned()),
            path: "/nothing/here".to_owned(),
            expect: None,
        },
    ]
}

fn bench_match(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("x-env", HeaderValue::from_static("Prod"));
    let mut group = c.benchmark_group("match");
    for n in SIZES {
        let routes: Vec<RouteSpec> = (0..n).map(route).collect();
        let router = Router::new(&routes).expect("bench routes compile");
        for req in requests(&routes) {
            let found = router.find(req.host.as_deref(), &req.path, &Method::GET, &headers, false);
            assert_eq!(found.map(|m| m.route), req.expect, "{} at {n}", req.name);
            group.bench_function(BenchmarkId::new(req.name, n), |b| {
                b.iter(|| {
                    router.find(
                        black_box(req.host.as_deref()),
                        black_box(&req.path),
                        black_box(&Method::GET),
                        black_box(&headers),
                        false,
                    )
                })
            });
        }
    }
    group.finish();
}

fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    for n in SIZES {
        let routes: Vec<RouteSpec> = (0..n).map(route).collect();
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| Router::new(black_box(&routes)).expect("bench routes compile"))
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500))
}

/// Holds the generated group function, which has no doc comment of its own.
mod groups {
    use super::{bench_build, bench_match, config};
    criterion::criterion_group! {
        name = benches;
        config = config();
        targets = bench_match, bench_build
    }
}
criterion_main!(groups::benches);
