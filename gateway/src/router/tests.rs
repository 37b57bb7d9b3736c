//! Router unit tests: one or more per precedence rule, request
//! normalisation case and error; the randomised comparison with a naive
//! reference lives in `reference_tests`.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{Match, RouteSpec, Router, RouterError, Schemes};

pub(super) fn route(id: usize, hosts: &[&str], paths: &[&str]) -> RouteSpec {
    RouteSpec {
        id,
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        ..RouteSpec::default()
    }
}

fn with_methods(mut r: RouteSpec, methods: &[Method]) -> RouteSpec {
    r.methods = methods.to_vec();
    r
}

fn with_header(mut r: RouteSpec, name: &'static str, values: &[&str]) -> RouteSpec {
    let values = values.iter().map(|v| v.to_string()).collect();
    r.headers.push((HeaderName::from_static(name), values));
    r
}

fn with_priority(mut r: RouteSpec, priority: i32) -> RouteSpec {
    r.priority = priority;
    r
}

fn router(routes: Vec<RouteSpec>) -> Router {
    Router::new(&routes).expect("routes compile")
}

/// `(route id, matched_len)` for a GET without headers.
fn get(router: &Router, host: Option<&str>, path: &str) -> Option<(usize, usize)> {
    request(router, host, path, &Method::GET, &HeaderMap::new())
}

fn request(
    router: &Router,
    host: Option<&str>,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Option<(usize, usize)> {
    router.find(host, path, method, headers, false).map(|m| (m.route, m.matched_len))
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

#[test]
fn exact_host_beats_wildcard_beats_no_host() {
    let r = router(vec![
        route(0, &[], &["/api/orders/long"]),
        route(1, &["*.example.com"], &["/api/orders"]),
        route(2, &["api.example.com"], &["/"]),
    ]);
    let path = "/api/orders/long/1";
    assert_eq!(get(&r, Some("api.example.com"), path), Some((2, 1)));
    assert_eq!(get(&r, Some("web.example.com"), path), Some((1, 11)));
    assert_eq!(get(&r, Some("other.org"), path), Some((0, 16)));
    assert_eq!(get(&r, None, path), Some((0, 16)));
}

#[test]
fn longer_wildcard_suffix_wins() {
    let r = router(vec![route(0, &["*.example.com"], &["/long/prefix"]), route(1, &["*.a.example.com"], &["/"])]);
    assert_eq!(get(&r, Some("x.a.example.com"), "/long/prefix"), Some((1, 1)));
    assert_eq!(get(&r, Some("x.b.example.com"), "/long/prefix"), Some((0, 12)));
}

#[test]
fn wildcard_matches_one_or_more_labels_but_not_the_apex() {
    let r = router(vec![route(0, &["*.example.com"], &[])]);
    assert_eq!(get(&r, Some("x.example.com"), "/"), Some((0, 0)));
    assert_eq!(get(&r, Some("x.y.example.com"), "/"), Some((0, 0)));
    assert_eq!(get(&r, Some("example.com"), "/"), None);
    assert_eq!(get(&r, Some("xexample.com"), "/"), None);
    assert_eq!(get(&r, Some("example.com.evil"), "/"), None);
}

#[test]
fn host_port_and_case_are_ignored() {
    let r = router(vec![route(0, &["API.Example.com"], &["/"]), route(1, &["*.Example.COM"], &["/"])]);
    assert_eq!(get(&r, Some("api.example.com:8443"), "/x"), Some((0, 1)));
    assert_eq!(get(&r, Some("API.EXAMPLE.COM"), "/x"), Some((0, 1)));
    assert_eq!(get(&r, Some("Api.Example.Com:80"), "/x"), Some((0, 1)));
    assert_eq!(get(&r, Some("WWW.example.com:80"), "/x"), Some((1, 1)));
    assert_eq!(get(&r, Some("other.com:80"), "/x"), None);
}

#[test]
fn route_sits_in_every_host_group_it_matches_through() {
    let r =
        router(vec![route(0, &["api.example.com", "*.example.com"], &["/a"]), route(1, &["*.example.com"], &["/a/b"])]);
    // Exact group first, even though route 1 has the longer prefix.
    assert_eq!(get(&r, Some("api.example.com"), "/a/b"), Some((0, 2)));
    // Through the wildcard, route 1's longer prefix wins.
    assert_eq!(get(&r, Some("web.example.com"), "/a/b"), Some((1, 4)));
    assert_eq!(get(&r, Some("web.example.com"), "/a/c"), Some((0, 2)));
}

#[test]
fn longest_prefix_wins_and_prefix_is_plain_bytes() {
    let r = router(vec![route(0, &[], &["/"]), route(1, &[], &["/orders"]), route(2, &[], &["/orders/items"])]);
    assert_eq!(get(&r, None, "/orders/items/7"), Some((2, 13)));
    assert_eq!(get(&r, None, "/orders/1"), Some((1, 7)));
    assert_eq!(get(&r, None, "/orders"), Some((1, 7)));
    assert_eq!(get(&r, None, "/ordersx"), Some((1, 7)));
    assert_eq!(get(&r, None, "/order"), Some((0, 1)));
    assert_eq!(get(&r, None, "orders"), None);
}

#[test]
fn prefix_beats_regex_beats_no_path() {
    let r = router(vec![
        route(0, &[], &[]),
        with_priority(route(1, &[], &[r"~/orders/\d+"]), 100),
        route(2, &[], &["/orders/"]),
    ]);
    assert_eq!(get(&r, None, "/orders/12"), Some((2, 8)));
    let r = router(vec![
        route(0, &[], &[]),
        with_priority(route(1, &[], &[r"~/orders/\d+"]), 100),
        route(2, &[], &["/users"]),
    ]);
    assert_eq!(get(&r, None, "/orders/12"), Some((1, 10)));
    assert_eq!(get(&r, None, "/orders/x"), Some((0, 0)));
}

#[test]
fn regex_by_priority_then_lowest_id() {
    let r = router(vec![
        with_priority(route(5, &[], &[r"~/a/\d+"]), 1),
        with_priority(route(3, &[], &[r"~/a/\d"]), 1),
        with_priority(route(9, &[], &[r"~/a"]), 2),
        with_priority(route(1, &[], &[r"~/b"]), 0),
    ]);
    assert_eq!(get(&r, None, "/a/123"), Some((9, 2)));
    let r = router(vec![with_priority(route(5, &[], &[r"~/a/\d+"]), 1), with_priority(route(3, &[], &[r"~/a/\d"]), 1)]);
    assert_eq!(get(&r, None, "/a/123"), Some((3, 4)));
    // Conditions do not reorder regex routes: only priority, then id.
    let r = router(vec![with_methods(route(2, &[], &[r"~/a"]), &[Method::GET]), route(1, &[], &[r"~/a"])]);
    assert_eq!(get(&r, None, "/a"), Some((1, 2)));
}

#[test]
fn regex_is_anchored_at_path_start() {
    let r =
        router(vec![route(0, &[], &[r"~/orders/\d+$"]), route(1, &[], &[r"~^/users"]), route(2, &[], &[r"~/x|/y"])]);
    assert_eq!(get(&r, None, "/orders/12"), Some((0, 10)));
    assert_eq!(get(&r, None, "/orders/12/x"), None);
    assert_eq!(get(&r, None, "/api/orders/12"), None);
    assert_eq!(get(&r, None, "/users/1"), Some((1, 6)));
    assert_eq!(get(&r, None, "/a/users"), None);
    assert_eq!(get(&r, None, "/y/1"), Some((2, 2)));
    assert_eq!(get(&r, None, "/a/y"), None);
}

#[test]
fn ties_go_to_more_headers_then_methods_then_lowest_id() {
    let plain = route(1, &[], &["/a"]);
    let methods = with_methods(route(2, &[], &["/a"]), &[Method::GET]);
    let one_header = with_header(route(3, &[], &["/a"]), "x-env", &["prod"]);
    let two_headers = with_header(with_header(route(4, &[], &["/a"]), "x-env", &["prod"]), "x-v", &["1"]);
    let plain_low = route(0, &[], &["/a"]);
    let r = router(vec![plain.clone(), methods.clone(), one_header.clone(), two_headers, plain_low.clone()]);
    let h = headers(&[("x-env", "prod"), ("x-v", "1")]);
    assert_eq!(request(&r, None, "/a", &Method::GET, &h), Some((4, 2)));
    let h = headers(&[("x-env", "prod")]);
    assert_eq!(request(&r, None, "/a", &Method::GET, &h), Some((3, 2)));
    assert_eq!(get(&r, None, "/a"), Some((2, 2)));
    assert_eq!(request(&r, None, "/a", &Method::POST, &HeaderMap::new()), Some((0, 2)));
    // The same order applies to routes without paths.
    let strip = |mut r: RouteSpec| {
        r.paths.clear();
        r
    };
    let r = router(vec![strip(plain), strip(methods), strip(one_header), strip(plain_low)]);
    assert_eq!(request(&r, None, "/", &Method::GET, &headers(&[("x-env", "prod")])), Some((3, 0)));
    assert_eq!(get(&r, None, "/"), Some((2, 0)));
    assert_eq!(request(&r, None, "/", &Method::PUT, &HeaderMap::new()), Some((0, 0)));
}

#[test]
fn method_filter_falls_through_to_next_candidate() {
    let r = router(vec![
        with_methods(route(0, &["api.example.com"], &["/a/b"]), &[Method::POST]),
        with_methods(route(1, &["api.example.com"], &["/a"]), &[Method::PUT, Method::POST]),
        with_methods(route(2, &["api.example.com"], &[r"~/a/b"]), &[Method::DELETE]),
        with_methods(route(3, &["*.example.com"], &["/a/b"]), &[Method::PATCH]),
        route(4, &[], &[]),
    ]);
    let at = |m: Method| request(&r, Some("api.example.com"), "/a/b", &m, &HeaderMap::new());
    assert_eq!(at(Method::POST), Some((0, 4)));
    assert_eq!(at(Method::PUT), Some((1, 2)));
    assert_eq!(at(Method::DELETE), Some((2, 4)));
    assert_eq!(at(Method::PATCH), Some((3, 4)));
    assert_eq!(at(Method::GET), Some((4, 0)));
}

#[test]
fn header_filter_is_case_insensitive_and_all_required() {
    let guarded = with_header(with_header(route(0, &[], &["/a"]), "x-env", &["Prod", "canary"]), "x-tenant", &["acme"]);
    let r = router(vec![guarded, route(1, &[], &[])]);
    let at = |pairs: &[(&'static str, &str)]| request(&r, None, "/a", &Method::GET, &headers(pairs));
    assert_eq!(at(&[("x-env", "PROD"), ("x-tenant", "ACME")]), Some((0, 2)));
    assert_eq!(at(&[("x-env", "canary"), ("x-tenant", "acme")]), Some((0, 2)));
    assert_eq!(at(&[("x-env", "prod")]), Some((1, 0)));
    assert_eq!(at(&[("x-tenant", "acme")]), Some((1, 0)));
    assert_eq!(at(&[("x-env", "dev"), ("x-tenant", "acme")]), Some((1, 0)));
    // Any occurrence of a repeated header may satisfy the condition.
    assert_eq!(at(&[("x-env", "dev"), ("x-env", "canary"), ("x-tenant", "acme")]), Some((0, 2)));
}

#[test]
fn header_without_values_requires_presence() {
    let r = router(vec![with_header(route(0, &[], &[]), "x-debug", &[])]);
    assert_eq!(request(&r, None, "/", &Method::GET, &headers(&[("x-debug", "")])), Some((0, 0)));
    assert_eq!(get(&r, None, "/"), None);
}

#[test]
fn matched_len_for_prefix_regex_and_no_path() {
    let r = router(vec![
        route(0, &["p.test"], &["/svc"]),
        route(1, &["r.test"], &[r"~/svc/v\d+"]),
        route(2, &["n.test"], &[]),
    ]);
    assert_eq!(get(&r, Some("p.test"), "/svc/v2/items"), Some((0, 4)));
    assert_eq!(get(&r, Some("r.test"), "/svc/v22/items"), Some((1, 8)));
    assert_eq!(get(&r, Some("n.test"), "/svc/v2/items"), Some((2, 0)));
    assert_eq!(
        r.find(Some("p.test"), "/svc", &Method::GET, &HeaderMap::new(), false),
        Some(Match { route: 0, matched_len: 4 })
    );
}

#[test]
fn bad_regex_and_bad_host_are_errors() {
    match Router::new(&[route(0, &[], &["/ok"]), route(7, &[], &["~/(unclosed"])]) {
        Err(RouterError::InvalidRegex { route: 7, pattern, .. }) => assert_eq!(pattern, "/(unclosed"),
        other => panic!("expected InvalidRegex, got {other:?}"),
    }
    // A pattern that only parses once wrapped must still be rejected.
    assert!(matches!(Router::new(&[route(1, &[], &["~a)|(b"])]), Err(RouterError::InvalidRegex { route: 1, .. })));
    assert!(matches!(Router::new(&[route(2, &["*."], &[])]), Err(RouterError::InvalidHost { route: 2, .. })));
}

#[test]
fn empty_router_matches_nothing() {
    let r = router(vec![]);
    assert!(r.is_empty());
    assert_eq!(r.len(), 0);
    assert_eq!(get(&r, Some("a.example.com"), "/"), None);
    assert_eq!(get(&r, None, ""), None);
    let r = router(vec![route(0, &[], &[]), route(1, &["a.b"], &["/x"])]);
    assert!(!r.is_empty());
    assert_eq!(r.len(), 2);
}

#[test]
fn requests_without_host_only_reach_hostless_routes() {
    let r = router(vec![route(0, &["a.example.com"], &[]), route(1, &["*.example.com"], &[])]);
    assert_eq!(get(&r, None, "/"), None);
    assert_eq!(get(&r, Some(""), "/"), None);
}

#[test]
fn the_route_serving_the_scheme_wins_and_a_route_of_the_other_scheme_is_the_last_resort() {
    let only = |mut r: RouteSpec, http: bool, https: bool| {
        r.schemes = Schemes { http, https };
        r
    };
    let r = router(vec![
        only(route(0, &[], &["/a"]), false, true),
        only(route(1, &[], &["/a"]), true, false),
        only(route(2, &[], &["/secure"]), false, true),
    ]);
    let find = |path: &str, https: bool| r.find(None, path, &Method::GET, &HeaderMap::new(), https).map(|m| m.route);
    assert_eq!(find("/a", true), Some(0));
    assert_eq!(find("/a", false), Some(1));
    // No route serves plain HTTP here: the HTTPS-only one is found, for the caller to redirect.
    assert_eq!(find("/secure", false), Some(2));
    assert_eq!(find("/secure", true), Some(2));
    assert_eq!(find("/other", false), None);
}
