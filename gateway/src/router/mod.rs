//! The request router: compiles one configuration snapshot's routes into
//! indexes once, then maps each request (host, path, method, headers) to the
//! most specific matching route at a cost that does not grow with the
//! number of routes.
//!
//! Precedence, as implemented:
//! 1. Host groups: routes listing the request host exactly; then routes
//!    with a matching wildcard (`*.example.com` matches one or more labels
//!    before `example.com`), longest suffix first; then routes without hosts.
//!    A route listing several hosts sits in every group it matches through.
//! 2. Within a group: prefix paths, longest matching prefix first (plain
//!    byte prefix, as in Kong); then regex paths (anchored at the start of
//!    the path), highest priority first, ties by lowest id; then routes
//!    without paths.
//! 3. Routes tied on all of that (same group, same prefix, or both without
//!    paths): more header conditions first, then routes restricting
//!    methods, then lowest id.
//! 4. A candidate is taken only if its method and header conditions hold and
//!    it serves the request's scheme; otherwise the search goes on to the
//!    next candidate.
//! 5. When no candidate serves the scheme, the first whose other conditions
//!    hold is the match (the caller answers it with a redirect to HTTPS, or
//!    as no route, as Kong does).
//!
//! Layout: `hosts` maps the request host to its groups, each a
//! `group::Group` holding a `prefix` trie, a `regex_paths` set and a no-path
//! list, all pre-sorted; `matchers` holds the per-route method and header
//! checks.

mod group;
mod hosts;
mod matchers;
mod prefix;
#[cfg(test)]
mod reference_tests;
mod regex_paths;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, Method};

use group::{Group, GroupBuilder};
use hosts::{HostIndex, HostPattern, HostScratch};
use matchers::Conditions;
use regex_paths::RegexEntry;

/// One route as the router sees it; validated already (regexes compile,
/// hosts well-formed), but [`Router::new`] still returns an error rather
/// than panicking on a bad regex or host.
#[derive(Debug, Clone, Default)]
pub struct RouteSpec {
    /// The caller's index for this route, reported in [`Match::route`].
    pub id: usize,
    /// Exact hosts (`api.example.com`) or wildcards with one leading `*.`
    /// (`*.example.com`); compared case-insensitively. Empty matches any host.
    pub hosts: Vec<String>,
    /// Path prefixes (`/orders`), or regexes with a leading `~`
    /// (`~/orders/\d+$`). Empty matches any path.
    pub paths: Vec<String>,
    /// Accepted methods; empty accepts any.
    pub methods: Vec<Method>,
    /// Every header listed must be present with one of its values (ASCII
    /// case-insensitive); a header with no values only needs to be present.
    /// Empty means no header condition.
    pub headers: Vec<(HeaderName, Vec<String>)>,
    /// Among regex routes, higher wins.
    pub priority: i32,
    /// The schemes the route serves.
    pub schemes: Schemes,
}

/// The schemes a route serves (Kong's `protocols`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schemes {
    /// Plain HTTP.
    pub http: bool,
    /// HTTP over TLS.
    pub https: bool,
}

impl Default for Schemes {
    fn default() -> Self {
        Schemes { http: true, https: true }
    }
}

/// The route chosen for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// The [`RouteSpec::id`] of the chosen route.
    pub route: usize,
    /// Bytes of the request path the route's path matched: the prefix
    /// length, the end of the regex match, or 0 for a route without paths.
    pub matched_len: usize,
}

/// Why a route table could not be compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouterError {
    /// A regex path did not compile.
    #[error("route {route}: invalid path regex {pattern:?}: {source}")]
    InvalidRegex {
        /// The [`RouteSpec::id`] of the route.
        route: usize,
        /// The pattern, without its leading `~`.
        pattern: String,
        /// The compiler's complaint.
        source: regex::Error,
    },
    /// A host is empty, has a `*` other than one leading `*.`, or is `*.`.
    #[error("route {route}: invalid host {host:?}")]
    InvalidHost {
        /// The [`RouteSpec::id`] of the route.
        route: usize,
        /// The host as configured.
        host: String,
    },
    /// A host group's regexes compile one by one but not as a set (e.g.
    /// the set exceeds its size limit).
    #[error("cannot compile path regex set: {source}")]
    RegexSet {
        /// The compiler's complaint.
        source: regex::Error,
    },
    /// The table is beyond the router's 32-bit internal indexes.
    #[error("route table too large")]
    TooLarge,
}

impl RouterError {
    /// The route at fault, when one route is.
    pub fn route(&self) -> Option<usize> {
        match self {
            RouterError::InvalidRegex { route, .. } | RouterError::InvalidHost { route, .. } => Some(*route),
            _ => None,
        }
    }
}

/// The compiled routes of one configuration snapshot.
#[derive(Debug)]
pub struct Router {
    /// Per-route conditions, indexed by position in the input slice.
    routes: Vec<Conditions>,
    hosts: HostIndex<Group>,
}

impl Router {
    /// Compiles `routes`. All ordering is decided here, so [`Router::find`]
    /// only walks.
    pub fn new(routes: &[RouteSpec]) -> Result<Router, RouterError> {
        // Every internal index (routes, trie nodes, label bytes, candidate
        // slots) is bounded by this sum, so checking it here makes the
        // `u32` conversions in the trie infallible.
        let size = routes.iter().try_fold(routes.len(), |acc, r| {
            let paths = r.paths.iter().map(|p| p.len() + 1).sum::<usize>();
            paths.checked_mul(r.hosts.len().max(1))?.checked_add(acc)
        });
        if size.is_none_or(|n| n >= u32::MAX as usize) {
            return Err(RouterError::TooLarge);
        }

        let table: Vec<Conditions> = routes.iter().enumerate().map(|(pos, spec)| Conditions::new(spec, pos)).collect();
        let mut exact: HashMap<String, GroupBuilder<'_>> = HashMap::new();
        let mut wildcard: HashMap<String, GroupBuilder<'_>> = HashMap::new();
        let mut any = GroupBuilder::default();

        for (pos, spec) in routes.iter().enumerate() {
            let route = pos as u32; // < u32::MAX, checked above
            let mut keys = Vec::with_capacity(spec.hosts.len());
            for host in &spec.hosts {
                let key = hosts::parse_host(host)
                    .ok_or_else(|| RouterError::InvalidHost { route: spec.id, host: host.clone() })?;
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            let paths = compile_paths(spec, route)?;
            if keys.is_empty() {
                add_route(&mut any, spec, route, &paths);
            }
            for key in keys {
                let group = match key {
                    HostPattern::Exact(h) => exact.entry(h).or_default(),
                    HostPattern::Wildcard(s) => wildcard.entry(s).or_default(),
                };
                add_route(group, spec, route, &paths);
            }
        }

        let build_all = |m: HashMap<String, GroupBuilder<'_>>| {
            m.into_iter().map(|(k, g)| Ok((k, g.build(&table)?))).collect::<Result<HashMap<_, _>, RouterError>>()
        };
        let exact = build_all(exact)?;
        let wildcard = build_all(wildcard)?;
        let any = any.build(&table)?;
        Ok(Router { routes: table, hosts: HostIndex::new(exact, wildcard, any) })
    }

    /// Finds the route for a request. `host` is the Host header or
    /// `:authority` (any `:port` suffix is ignored, comparison is
    /// case-insensitive), `None` when absent; `https` is the request's scheme.
    pub fn find(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        https: bool,
    ) -> Option<Match> {
        let mut scratch = HostScratch::new();
        let host = host.map(|h| hosts::normalize(h, &mut scratch));
        // Rule 5: the first candidate that fails on its scheme alone.
        let mut other_scheme = None;
        let mut accept = |r: u32| {
            let route = &self.routes[r as usize];
            let fits = route.accepts(method, headers);
            if fits && !route.serves(https) {
                other_scheme.get_or_insert(r);
                return false;
            }
            fits
        };
        let found = self.hosts.groups(host).find_map(|group| group.find(path, &mut accept));
        let (r, matched_len) = match (found, other_scheme) {
            (Some(found), _) => found,
            (None, Some(other)) => self.hosts.groups(host).find_map(|group| group.find(path, |r| r == other))?,
            (None, None) => return None,
        };
        Some(Match { route: self.routes[r as usize].id, matched_len })
    }

    /// Number of routes compiled.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the router has no routes (and so matches nothing).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// One configured path of a route, classified and (for regexes) compiled.
enum PathSpec<'a> {
    Prefix(&'a str),
    Regex(RegexEntry<'a>),
}

/// Classifies and compiles the paths of `spec` (route number `route`).
fn compile_paths(spec: &RouteSpec, route: u32) -> Result<Vec<PathSpec<'_>>, RouterError> {
    spec.paths
        .iter()
        .map(|path| match path.strip_prefix('~') {
            Some(pattern) => {
                Ok(PathSpec::Regex(RegexEntry { pattern, regex: regex_paths::compile(pattern, spec.id)?, route }))
            }
            None => Ok(PathSpec::Prefix(path)),
        })
        .collect()
}

/// Adds route number `route`, with its compiled `paths`, to `group`.
fn add_route<'a>(group: &mut GroupBuilder<'a>, spec: &RouteSpec, route: u32, paths: &[PathSpec<'a>]) {
    if paths.is_empty() {
        group.no_path(route);
    }
    for path in paths {
        match path {
            PathSpec::Prefix(prefix) => group.prefix(prefix, route),
            PathSpec::Regex(entry) => group.regex(entry.clone(), spec.priority),
        }
    }
}
