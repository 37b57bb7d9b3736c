//! Randomised test of the router against `find_naive`, a linear reference
//! that applies the precedence rules by sorting every way every route
//! matches: 1,000 seeded random routes, 10,000 random requests.

use std::cmp::Reverse;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

use super::tests::route;
use super::{Match, RouteSpec, Router, Schemes};

/// Routes plus their regexes compiled once, for the naive reference.
struct Naive<'a> {
    routes: &'a [RouteSpec],
    regexes: Vec<Vec<Option<Regex>>>,
}

impl<'a> Naive<'a> {
    fn new(routes: &'a [RouteSpec]) -> Self {
        let regexes = routes
            .iter()
            .map(|r| {
                r.paths
                    .iter()
                    .map(|p| {
                        p.strip_prefix('~').map(|pat| {
                            let pat = if pat.starts_with('^') { pat.to_string() } else { format!("^{pat}") };
                            Regex::new(&pat).unwrap()
                        })
                    })
                    .collect()
            })
            .collect();
        Naive { routes, regexes }
    }
}

/// Sort key of one way a route matches; smaller is better.
type NaiveKey = (u8, Reverse<usize>, u8, i64, Reverse<usize>, Reverse<bool>, usize, usize, usize);

/// Applies the precedence rules by listing every way every route matches
/// and taking the smallest key among those whose conditions hold: among the
/// routes that serve the scheme, or else among all (rule 5).
fn find_naive(
    n: &Naive<'_>,
    host: Option<&str>,
    path: &str,
    method: &Method,
    hm: &HeaderMap,
    https: bool,
) -> Option<Match> {
    let serves = |r: &RouteSpec| if https { r.schemes.https } else { r.schemes.http };
    rank_naive(n, host, path, method, hm, serves).or_else(|| rank_naive(n, host, path, method, hm, |_| true))
}

fn rank_naive(
    n: &Naive<'_>,
    host: Option<&str>,
    path: &str,
    method: &Method,
    hm: &HeaderMap,
    eligible: impl Fn(&RouteSpec) -> bool,
) -> Option<Match> {
    let host = host.map(|h| h.split(':').next().unwrap().to_lowercase());
    let mut best: Option<(NaiveKey, Match)> = None;
    for (pos, r) in n.routes.iter().enumerate().filter(|(_, r)| eligible(r)) {
        let method_ok = r.methods.is_empty() || r.methods.contains(method);
        let headers_ok = r.headers.iter().all(|(name, values)| {
            hm.get_all(name).iter().any(|v| {
                let v = v.to_str().unwrap().to_lowercase();
                values.iter().any(|want| want.to_lowercase() == v)
            })
        });
        if !method_ok || !headers_ok {
            continue;
        }
        let mut host_ranks = Vec::new();
        if r.hosts.is_empty() {
            host_ranks.push((2u8, Reverse(0)));
        }
        if let Some(host) = &host {
            for h in &r.hosts {
                let h = h.to_lowercase();
                if let Some(suffix) = h.strip_prefix("*.") {
                    if host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")) {
                        host_ranks.push((1, Reverse(suffix.len())));
                    }
                } else if &h == host {
                    host_ranks.push((0, Reverse(0)));
                }
            }
        }
        let tie = (Reverse(r.headers.len()), Reverse(!r.methods.is_empty()), r.id, pos);
        let mut path_ranks = Vec::new();
        if r.paths.is_empty() {
            path_ranks.push(((2u8, 0i64, tie, 0usize), 0usize));
        }
        for (i, p) in r.paths.iter().enumerate() {
            match &n.regexes[pos][i] {
                Some(re) => {
                    if let Some(m) = re.find(path) {
                        let tie = (Reverse(0), Reverse(false), r.id, pos);
                        path_ranks.push(((1, -i64::from(r.priority), tie, i), m.end()));
                    }
                }
                None if path.starts_with(p.as_str()) => {
                    path_ranks.push(((0, -(p.len() as i64), tie, 0), p.len()));
                }
                None => {}
            }
        }
        for &(h, hl) in &host_ranks {
            for &((class, rank, (a, b, c, d), i), len) in &path_ranks {
                let key = (h, hl, class, rank, a, b, c, d, i);
                if best.as_ref().is_none_or(|(k, _)| key < *k) {
                    best = Some((key, Match { route: r.id, matched_len: len }));
                }
            }
        }
    }
    best.map(|(_, m)| m)
}

const EXACT_HOSTS: &[&str] = &["a.example.com", "b.example.com", "x.a.example.com", "api.test.org", "API.Test.ORG"];
const WILD_HOSTS: &[&str] = &["*.example.com", "*.a.example.com", "*.test.org", "*.x.a.example.com", "*.Example.COM"];
const REQ_HOSTS: &[&str] = &[
    "a.example.com",
    "A.Example.com:8080",
    "b.example.com",
    "x.a.example.com",
    "y.x.a.example.com",
    "deep.y.x.a.example.com",
    "c.example.com",
    "example.com",
    "api.test.org:443",
    "www.test.org",
    "test.org",
    "other.net",
];
const SEGMENTS: &[&str] = &["a", "ab", "orders", "v1", "x", "12", "", "zzz"];
const REGEXES: &[&str] =
    &[r"~/orders/\d+", r"~/orders/\d+$", r"~/a/[a-z]+$", r"~/v1/.*", r"~/ab?", r"~^/x/(12|a)", r"~/(a|ab)/"];
const METHODS: &[Method] = &[Method::GET, Method::POST, Method::PUT];
const REQ_METHODS: &[Method] = &[Method::GET, Method::POST, Method::PUT, Method::DELETE];
const HEADER_NAMES: &[&str] = &["x-env", "x-ver"];
const HEADER_VALUES: &[&str] = &["prod", "Canary", "1", "2"];

fn pick<T: Clone>(rng: &mut fastrand::Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())].clone()
}

/// A request path, or (with `min_segments` 1) a route prefix, which never
/// has empty or "zzz" segments.
fn random_path(rng: &mut fastrand::Rng, min_segments: usize) -> String {
    let segments = if min_segments > 0 { &SEGMENTS[..6] } else { SEGMENTS };
    let mut p = String::new();
    for _ in 0..rng.usize(min_segments..=3) {
        p.push('/');
        p.push_str(pick(rng, segments));
    }
    if p.is_empty() || rng.bool() {
        p.push('/');
    }
    if rng.u8(..4) == 0 {
        p.pop();
    }
    p
}

fn random_case(rng: &mut fastrand::Rng, s: &str) -> String {
    s.chars().map(|c| if rng.bool() { c.to_ascii_uppercase() } else { c }).collect()
}

fn random_route(rng: &mut fastrand::Rng, id: usize) -> RouteSpec {
    let mut r = route(id, &[], &[]);
    for _ in 0..rng.usize(0..=2) {
        let pool = if rng.bool() { EXACT_HOSTS } else { WILD_HOSTS };
        r.hosts.push(pick(rng, pool).to_string());
    }
    // Few catch-alls, so that requests can also miss: routes without
    // paths always have hosts, and prefixes have at least one segment
    // except for a rare "/" or "".
    let paths = if rng.u8(..25) == 0 { 0 } else { rng.usize(1..=2) };
    if paths == 0 && r.hosts.is_empty() {
        r.hosts.push(pick(rng, WILD_HOSTS).to_string());
    }
    for _ in 0..paths {
        let p = match rng.u8(..100) {
            0 if !r.hosts.is_empty() => String::new(),
            1 if !r.hosts.is_empty() => "/".to_string(),
            2..34 => pick(rng, REGEXES).to_string(),
            _ => random_path(rng, 1),
        };
        r.paths.push(p);
    }
    for _ in 0..rng.usize(0..=2) {
        r.methods.push(pick(rng, METHODS));
    }
    for name in HEADER_NAMES {
        if rng.u8(..4) == 0 {
            let values = (0..rng.usize(1..=2)).map(|_| pick(rng, HEADER_VALUES).to_string()).collect();
            r.headers.push((HeaderName::from_static(name), values));
        }
    }
    r.priority = rng.i32(0..3);
    r.schemes = match rng.u8(..6) {
        0 => Schemes { http: true, https: false },
        1 => Schemes { http: false, https: true },
        _ => Schemes::default(),
    };
    r
}

#[test]
fn random_routes_agree_with_naive_reference() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_0001);
    // Ids are a shuffled permutation so "lowest id" differs from position.
    let mut ids: Vec<usize> = (0..1000).collect();
    rng.shuffle(&mut ids);
    let routes: Vec<RouteSpec> = ids.iter().map(|&id| random_route(&mut rng, id)).collect();
    let router = Router::new(&routes).unwrap();
    let naive = Naive::new(&routes);
    let (mut hits, mut regex_hits, mut no_path_hits) = (0, 0, 0);
    for _ in 0..10_000 {
        let host = (rng.u8(..8) != 0).then(|| pick(&mut rng, REQ_HOSTS));
        let path = random_path(&mut rng, 0);
        let method = pick(&mut rng, REQ_METHODS);
        let mut hm = HeaderMap::new();
        for name in HEADER_NAMES {
            if rng.bool() {
                let v = pick(&mut rng, HEADER_VALUES);
                let v = random_case(&mut rng, v);
                hm.append(*name, HeaderValue::from_str(&v).unwrap());
            }
        }
        let https = rng.bool();
        let got = router.find(host, &path, &method, &hm, https);
        let want = find_naive(&naive, host, &path, &method, &hm, https);
        assert_eq!(got, want, "host {host:?} path {path:?} method {method} headers {hm:?} https {https}");
        if let Some(m) = got {
            hits += 1;
            let r = routes.iter().find(|r| r.id == m.route).unwrap();
            regex_hits += usize::from(r.paths.iter().any(|p| p.starts_with('~')) && m.matched_len > 0);
            no_path_hits += usize::from(r.paths.is_empty());
        }
    }
    // The data must exercise every kind of outcome, not just agree trivially.
    assert!(hits > 3_000 && hits < 9_900, "hits {hits}");
    assert!(regex_hits > 100, "regex hits {regex_hits}");
    assert!(no_path_hits > 100, "no-path hits {no_path_hits}");
}
