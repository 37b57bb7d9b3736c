//! Queries: a question for every live member, each member's answer, and the members that did not
//! answer in time. The asker sends a `Query` frame to each live member; each hands it to its user
//! ([`IncomingQuery`]), whose answer goes back in as many `Answer` frames as it takes (at most
//! [`MAX_PARTS`]); the asker puts the parts together ([`Answers`]) until every member answered or
//! the time is up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// The most parts one answer may have (about 85 kB at the default packet size); a longer answer
/// is cut and its member listed as not having answered.
pub(crate) const MAX_PARTS: usize = 64;

/// The most queries from other members waiting for this node's user to take them.
pub const QUERIES_WAITING: usize = 256;

/// A question from another member, for this node's user to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingQuery {
    /// The asker's address, where the answer goes.
    pub from: SocketAddr,
    /// The asker's number for the query.
    pub id: u64,
    /// What is asked.
    pub payload: Vec<u8>,
}

/// One part of a member's answer, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerPart {
    /// The query's number.
    pub id: u64,
    /// The member answering.
    pub from: String,
    pub(crate) part: u16,
    pub(crate) parts: u16,
    pub(crate) bytes: Vec<u8>,
}

/// What came back for one query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// Each member's whole answer, by member name.
    pub answers: BTreeMap<String, Vec<u8>>,
    /// The members asked that did not answer in full in time.
    pub missing: Vec<String>,
}

/// The answers to one query as they arrive.
#[derive(Debug)]
pub(crate) struct Answers {
    asked: BTreeSet<String>,
    partial: BTreeMap<String, Vec<Option<Vec<u8>>>>,
    done: BTreeMap<String, Vec<u8>>,
}

impl Answers {
    pub(crate) fn new(asked: impl IntoIterator<Item = String>) -> Answers {
        Answers { asked: asked.into_iter().collect(), partial: BTreeMap::new(), done: BTreeMap::new() }
    }

    /// Takes one part; parts from members not asked, repeated, or out of range are ignored.
    pub(crate) fn add(&mut self, part: AnswerPart) {
        let (index, parts) = (usize::from(part.part), usize::from(part.parts));
        if !self.asked.contains(&part.from) || self.done.contains_key(&part.from) || parts == 0 || parts > MAX_PARTS {
            return;
        }
        let slots = self.partial.entry(part.from.clone()).or_insert_with(|| vec![None; parts]);
        if slots.len() != parts || index >= parts {
            return;
        }
        slots[index] = Some(part.bytes);
        if slots.iter().all(Option::is_some) {
            let whole = self.partial.remove(&part.from).unwrap_or_default().into_iter().flatten().flatten().collect();
            self.done.insert(part.from, whole);
        }
    }

    /// Whether every member asked answered in full.
    pub(crate) fn complete(&self) -> bool {
        self.done.len() == self.asked.len()
    }

    pub(crate) fn finish(self) -> QueryResult {
        let missing = self.asked.iter().filter(|m| !self.done.contains_key(*m)).cloned().collect();
        QueryResult { answers: self.done, missing }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(from: &str, part: u16, parts: u16, bytes: &[u8]) -> AnswerPart {
        AnswerPart { id: 1, from: from.into(), part, parts, bytes: bytes.to_vec() }
    }

    #[test]
    fn parts_in_any_order_make_the_answer_and_strays_are_ignored() {
        let mut answers = Answers::new(["a".to_owned(), "b".to_owned(), "c".to_owned()]);
        answers.add(part("a", 1, 2, b"world"));
        answers.add(part("x", 0, 1, b"not asked"));
        answers.add(part("b", 0, 1, b"alone"));
        answers.add(part("a", 0, 3, b"wrong count"));
        answers.add(part("a", 7, 2, b"out of range"));
        assert!(!answers.complete());
        answers.add(part("a", 0, 2, b"hello "));
        answers.add(part("b", 0, 1, b"again"));
        let result = answers.finish();
        assert_eq!(result.answers["a"], b"hello world");
        assert_eq!(result.answers["b"], b"alone");
        assert_eq!(result.missing, ["c"]);
    }
}
