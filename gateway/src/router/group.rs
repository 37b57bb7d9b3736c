//! One host group: everything the router searches for one host key (an
//! exact host, a wildcard suffix, or "no host"). A group tries its prefix
//! trie (longest prefix first), then its regex set (priority order), then
//! its routes without paths, taking the first candidate whose conditions
//! hold. All ordering is fixed when the group is built.

use std::cmp::Reverse;

use super::matchers::Conditions;
use super::prefix::PrefixTrie;
use super::regex_paths::{RegexEntry, RegexPaths};
use super::RouterError;

/// A compiled host group.
#[derive(Debug)]
pub(crate) struct Group {
    prefixes: PrefixTrie,
    regexes: Option<RegexPaths>,
    /// Routes without paths, in rule-3 order.
    no_path: Box<[u32]>,
}

/// The routes of one host group, collected before compiling.
#[derive(Debug, Default)]
pub(crate) struct GroupBuilder<'a> {
    prefixes: Vec<(&'a str, u32)>,
    /// Regex paths with their route's priority.
    regexes: Vec<(RegexEntry<'a>, i32)>,
    no_path: Vec<u32>,
}

impl<'a> GroupBuilder<'a> {
    /// Adds a prefix path of route `route`.
    pub(crate) fn prefix(&mut self, prefix: &'a str, route: u32) {
        self.prefixes.push((prefix, route));
    }

    /// Adds a regex path (without its `~`) of a route with `priority`.
    pub(crate) fn regex(&mut self, entry: RegexEntry<'a>, priority: i32) {
        self.regexes.push((entry, priority));
    }

    /// Adds a route that has no paths.
    pub(crate) fn no_path(&mut self, route: u32) {
        self.no_path.push(route);
    }

    /// Orders every candidate list and compiles the group. `routes` is the
    /// router's route table, indexed by the `u32` route numbers given.
    pub(crate) fn build(mut self, routes: &[Conditions]) -> Result<Group, RouterError> {
        let key = |r: &u32| routes[*r as usize].tie_key();
        // Stable sorts: a route's own paths keep their configured order.
        self.prefixes.sort_by_key(|(_, r)| key(r));
        self.regexes.sort_by_key(|(e, priority)| {
            let route = &routes[e.route as usize];
            (Reverse(*priority), route.id, route.pos)
        });
        self.no_path.sort_by_key(key);
        self.no_path.dedup();
        let regexes = self.regexes.into_iter().map(|(e, _)| e).collect();
        Ok(Group {
            prefixes: PrefixTrie::build(self.prefixes.iter().map(|(p, r)| (p.as_bytes(), *r))),
            regexes: RegexPaths::build(regexes)?,
            no_path: self.no_path.into_boxed_slice(),
        })
    }
}

impl Group {
    /// The first candidate for `path` that `accept` takes, in precedence
    /// order, with the number of path bytes its path matched.
    #[inline]
    pub(crate) fn find(&self, path: &str, mut accept: impl FnMut(u32) -> bool) -> Option<(u32, usize)> {
        if !self.prefixes.is_empty() {
            for (len, cands) in self.prefixes.matches(path.as_bytes()) {
                if let Some(&route) = cands.iter().find(|&&r| accept(r)) {
                    return Some((route, len));
                }
            }
        }
        if let Some(found) = self.regexes.as_ref().and_then(|re| re.find(path, &mut accept)) {
            return Some(found);
        }
        self.no_path.iter().find(|&&r| accept(r)).map(|&r| (r, 0))
    }
}
