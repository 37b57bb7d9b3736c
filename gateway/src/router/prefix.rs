//! The prefix index of one host group: a compressed byte trie (radix tree)
//! over the group's path prefixes. Walking a request path through it yields
//! the matching prefixes longest first, each with its candidate routes
//! already in precedence order. A walk costs O(path length), independent of
//! how many prefixes the trie holds, and does not allocate.

use std::collections::{BTreeMap, VecDeque};

/// Marks "no node" in the `u32` node links.
const NONE: u32 = u32::MAX;

/// One node of the compiled trie. Children of a node are contiguous in
/// `PrefixTrie::nodes` and sorted by `first_byte`.
#[derive(Debug, Clone)]
struct Node {
    /// First byte of the edge label leading here (unused for the root).
    first_byte: u8,
    /// The edge label leading here, as a range of `PrefixTrie::labels`.
    label_start: u32,
    label_len: u32,
    /// Children, as a range of `PrefixTrie::nodes`.
    first_child: u32,
    child_count: u32,
    /// Candidate routes of the prefix ending here, as a range of
    /// `PrefixTrie::candidates`; empty when no prefix ends here.
    cand_start: u32,
    cand_end: u32,
    /// Length in bytes of the prefix spelled from the root to here.
    depth: u32,
    /// The nearest proper ancestor that has candidates, or `NONE`.
    fallback: u32,
}

/// A compiled radix tree of path prefixes with candidate routes.
#[derive(Debug)]
pub(crate) struct PrefixTrie {
    nodes: Vec<Node>,
    labels: Vec<u8>,
    candidates: Vec<u32>,
}

/// Uncompressed byte-trie node used while building.
#[derive(Default)]
struct BuildNode {
    children: BTreeMap<u8, usize>,
    cands: Vec<u32>,
}

impl PrefixTrie {
    /// Builds the trie from `(prefix, candidate)` pairs. Candidates sharing
    /// a prefix keep the order in which they are given, so callers pass the
    /// pairs already sorted by their tie-break rule. A candidate repeated on
    /// the same prefix is kept once.
    pub(crate) fn build<'a>(entries: impl IntoIterator<Item = (&'a [u8], u32)>) -> Self {
        let mut build = vec![BuildNode::default()];
        for (prefix, cand) in entries {
            let mut at = 0;
            for &b in prefix {
                at = match build[at].children.get(&b) {
                    Some(&next) => next,
                    None => {
                        build.push(BuildNode::default());
                        let next = build.len() - 1;
                        build[at].children.insert(b, next);
                        next
                    }
                };
            }
            if !build[at].cands.contains(&cand) {
                build[at].cands.push(cand);
            }
        }
        Self::compress(&build)
    }

    /// Lays the build trie out breadth-first, merging chains of nodes that
    /// have one child and no candidates into a single edge.
    fn compress(build: &[BuildNode]) -> Self {
        let mut trie = PrefixTrie {
            nodes: vec![Node {
                first_byte: 0,
                label_start: 0,
                label_len: 0,
                first_child: 0,
                child_count: 0,
                cand_start: 0,
                cand_end: 0,
                depth: 0,
                fallback: NONE,
            }],
            labels: Vec::new(),
            candidates: Vec::new(),
        };
        // (build node, compiled node, nearest proper ancestor with candidates)
        let mut queue = VecDeque::from([(0usize, 0usize, NONE)]);
        while let Some((b, f, fallback)) = queue.pop_front() {
            let src = &build[b];
            let cand_start = to_u32(trie.candidates.len());
            trie.candidates.extend_from_slice(&src.cands);
            let first_child = to_u32(trie.nodes.len());
            let depth = trie.nodes[f].depth;
            let node = &mut trie.nodes[f];
            node.cand_start = cand_start;
            node.cand_end = to_u32(trie.candidates.len());
            node.fallback = fallback;
            node.first_child = first_child;
            node.child_count = to_u32(src.children.len());
            let child_fallback = if src.cands.is_empty() { fallback } else { to_u32(f) };
            for (&byte, &child) in &src.children {
                let label_start = to_u32(trie.labels.len());
                trie.labels.push(byte);
                let mut end = child;
                while build[end].cands.is_empty() && build[end].children.len() == 1 {
                    let Some((&next_byte, &next)) = build[end].children.iter().next() else {
                        break;
                    };
                    trie.labels.push(next_byte);
                    end = next;
                }
                let label_len = to_u32(trie.labels.len()) - label_start;
                trie.nodes.push(Node {
                    first_byte: byte,
                    label_start,
                    label_len,
                    first_child: 0,
                    child_count: 0,
                    cand_start: 0,
                    cand_end: 0,
                    depth: depth + label_len,
                    fallback: NONE,
                });
                queue.push_back((end, trie.nodes.len() - 1, child_fallback));
            }
        }
        trie
    }

    /// Whether no prefix was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// The prefixes of `path` held by the trie, longest first, each as
    /// `(prefix length, candidates in precedence order)`.
    pub(crate) fn matches<'t>(&'t self, path: &[u8]) -> PrefixMatches<'t> {
        PrefixMatches { trie: self, next: self.deepest(path) }
    }

    /// The deepest node with candidates whose prefix starts `path`.
    fn deepest(&self, path: &[u8]) -> u32 {
        let has_cands = |n: &Node| n.cand_end > n.cand_start;
        let mut at = 0usize;
        let mut best = if has_cands(&self.nodes[0]) { 0 } else { NONE };
        let mut pos = 0usize;
        while let Some(&byte) = path.get(pos) {
            let node = &self.nodes[at];
            let first = node.first_child as usize;
            let children = &self.nodes[first..first + node.child_count as usize];
            let Ok(i) = children.binary_search_by_key(&byte, |c| c.first_byte) else {
                break;
            };
            let child = &children[i];
            let start = child.label_start as usize;
            let label = &self.labels[start..start + child.label_len as usize];
            if !path[pos..].starts_with(label) {
                break;
            }
            pos += label.len();
            at = first + i;
            if has_cands(child) {
                best = to_u32(at);
            }
        }
        best
    }
}

/// Iterator over the prefixes of a path held by a [`PrefixTrie`], longest
/// first; see [`PrefixTrie::matches`].
pub(crate) struct PrefixMatches<'t> {
    trie: &'t PrefixTrie,
    next: u32,
}

impl<'t> Iterator for PrefixMatches<'t> {
    type Item = (usize, &'t [u32]);

    fn next(&mut self) -> Option<Self::Item> {
        let node = self.trie.nodes.get(self.next as usize)?;
        self.next = node.fallback;
        let cands = &self.trie.candidates[node.cand_start as usize..node.cand_end as usize];
        Some((node.depth as usize, cands))
    }
}

/// Converts an index to the trie's `u32` links. Route tables and path
/// lengths beyond 4 GiB are not a configuration this router is built for;
/// exceeding them is a programming error, not bad input.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("prefix trie larger than u32::MAX entries")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(trie: &PrefixTrie, path: &str) -> Vec<(usize, Vec<u32>)> {
        trie.matches(path.as_bytes()).map(|(len, c)| (len, c.to_vec())).collect()
    }

    #[test]
    fn trie_yields_longest_prefix_first() {
        let entries: [(&[u8], u32); 6] =
            [(b"/orders", 1), (b"/orders/items", 2), (b"/", 3), (b"/ord", 4), (b"/orders", 5), (b"/users", 6)];
        let trie = PrefixTrie::build(entries);
        assert_eq!(walk(&trie, "/orders/items/9"), vec![(13, vec![2]), (7, vec![1, 5]), (4, vec![4]), (1, vec![3])]);
        assert_eq!(walk(&trie, "/ordersx"), vec![(7, vec![1, 5]), (4, vec![4]), (1, vec![3])]);
        assert_eq!(walk(&trie, "/orde"), vec![(4, vec![4]), (1, vec![3])]);
        assert_eq!(walk(&trie, "/u"), vec![(1, vec![3])]);
        assert_eq!(walk(&trie, "x"), vec![]);
        assert_eq!(walk(&trie, ""), vec![]);
    }

    #[test]
    fn trie_empty_prefix_and_duplicates() {
        let entries: [(&[u8], u32); 3] = [(b"", 7), (b"/a", 8), (b"/a", 8)];
        let trie = PrefixTrie::build(entries);
        assert_eq!(walk(&trie, "/a/b"), vec![(2, vec![8]), (0, vec![7])]);
        assert_eq!(walk(&trie, ""), vec![(0, vec![7])]);
        assert!(PrefixTrie::build(std::iter::empty()).is_empty());
    }
}
