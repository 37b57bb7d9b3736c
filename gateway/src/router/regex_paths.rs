//! The regex index of one host group: every regex path of the group's
//! routes in one [`RegexSet`], anchored at the start of the path, with the
//! candidates laid out in precedence order (priority descending, then route
//! id) so the set's ascending match indices are already in the order `find`
//! must try them. One set search replaces one search per regex.

use regex::{Regex, RegexSet, RegexSetBuilder};

use super::RouterError;

/// Compiled-program size limit for one group's set. The regex crate's
/// default (10 MiB) is sized for one pattern; a group may hold thousands.
const SET_SIZE_LIMIT: usize = 256 << 20;

/// One regex path of one route, compiled on its own but not yet in a set.
#[derive(Debug, Clone)]
pub(crate) struct RegexEntry<'a> {
    /// The pattern as configured, without the leading `~`.
    pub(crate) pattern: &'a str,
    /// `pattern` compiled as is (see [`compile`]).
    pub(crate) regex: Regex,
    /// Index of the route in the router's table.
    pub(crate) route: u32,
}

/// A compiled group of regex paths; see the module docs.
#[derive(Debug)]
pub(crate) struct RegexPaths {
    set: RegexSet,
    /// `regexes[i]` is pattern `i` of the set, unanchored as configured;
    /// used for the match end once the set says pattern `i` matches.
    regexes: Vec<Regex>,
    /// `routes[i]` is the route index owning pattern `i`.
    routes: Vec<u32>,
}

/// Wraps `pattern` so it only matches at the start of the path. Wrapping in
/// a group, rather than only prepending `^`, also anchors every branch of a
/// top-level alternation (`a|b`). The pattern is known to compile on its
/// own, so its parentheses balance and the wrapper cannot change its parse.
pub(crate) fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})")
}

/// Compiles `pattern` as configured, mapping failure to a router error
/// naming route `id`. This also validates the pattern before [`anchored`]
/// wraps it.
pub(crate) fn compile(pattern: &str, id: usize) -> Result<Regex, RouterError> {
    Regex::new(pattern).map_err(|source| RouterError::InvalidRegex { route: id, pattern: pattern.to_owned(), source })
}

impl RegexPaths {
    /// Compiles `entries`, which must already be in precedence order, into
    /// one set. Returns `None` for an empty list.
    pub(crate) fn build(entries: Vec<RegexEntry<'_>>) -> Result<Option<Self>, RouterError> {
        if entries.is_empty() {
            return Ok(None);
        }
        let set = RegexSetBuilder::new(entries.iter().map(|e| anchored(e.pattern)))
            .size_limit(SET_SIZE_LIMIT)
            .build()
            .map_err(|source| RouterError::RegexSet { source })?;
        let routes = entries.iter().map(|e| e.route).collect();
        Ok(Some(RegexPaths { set, regexes: entries.into_iter().map(|e| e.regex).collect(), routes }))
    }

    /// Tries the patterns matching `path` in precedence order and returns
    /// the first route `accept` takes, with the end of its match. Allocates
    /// (the set's match list) only when at least one pattern matches.
    pub(crate) fn find(&self, path: &str, mut accept: impl FnMut(u32) -> bool) -> Option<(u32, usize)> {
        if !self.set.is_match(path) {
            return None;
        }
        self.set.matches(path).iter().find_map(|i| {
            let route = self.routes[i];
            if !accept(route) {
                return None;
            }
            // The anchored set matched, so the pattern has a match starting
            // at 0, and a leftmost search reports exactly that match.
            let m = self.regexes[i].find(path)?;
            debug_assert_eq!(m.start(), 0);
            Some((route, m.end()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pattern: &str, route: u32) -> RegexEntry<'_> {
        let regex = compile(pattern, route as usize).unwrap();
        RegexEntry { pattern, regex, route }
    }

    #[test]
    fn regex_paths_are_anchored_and_ordered() {
        let entries = vec![entry(r"/a/\d+", 0), entry(r"x|/a", 1), entry(r"/a/\d+$", 2)];
        let paths = RegexPaths::build(entries).unwrap().unwrap();
        assert_eq!(paths.find("/a/12/b", |_| true), Some((0, 5)));
        assert_eq!(paths.find("/a/12/b", |r| r != 0), Some((1, 2)));
        assert_eq!(paths.find("/a/12", |r| r == 2), Some((2, 5)));
        assert_eq!(paths.find("/x/a/1", |_| true), None);
        assert_eq!(paths.find("/b", |_| true), None);
        assert!(RegexPaths::build(Vec::new()).unwrap().is_none());
    }

    #[test]
    fn regex_paths_reject_bad_patterns() {
        // Valid once wrapped as `^(?:a)|(b)`, so it must be checked alone.
        match compile("a)|(b", 42) {
            Err(RouterError::InvalidRegex { route: 42, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
