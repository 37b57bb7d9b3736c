//! Operations on `name=value&...` text: a query string, or an
//! `application/x-www-form-urlencoded` body. Names are compared percent-decoded; pairs no
//! operation touches keep their bytes and their order, and new ones go at the end.
//!
//! As Kong: `rename` moves every value of the old name over any of the new name, `replace` sets
//! one value for a name that is present, `add` sets one for a name that is absent, and `append`
//! adds one more (`a=1&a=2`).

use super::template::{Escape, Template};
use super::{Lists, Ops, Value};
use crate::exchange::query::decode;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::borrow::Cow;

/// What a name or value is percent-encoded in: everything but RFC 3986's unreserved
/// characters, so that the text means the same in a query and in a form body.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `text` percent-encoded as a query or form name or value.
pub(super) fn encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// A configured name: as compared, and as written out.
#[derive(Debug)]
pub(super) struct Name {
    plain: Box<str>,
    encoded: Box<str>,
}

impl Name {
    fn new(plain: &str) -> Name {
        Name { plain: plain.into(), encoded: encode(plain).into() }
    }
}

/// The operations of one config on one kind of pairs. Literal values are held encoded.
pub(super) type PairOps = Ops<Name, Value<String>>;

/// One pair as found: its decoded name, and its text.
struct Pair<'t> {
    name: Cow<'t, str>,
    raw: Cow<'t, str>,
}

impl PairOps {
    /// Compiles a config's lists. Templates in values go onto `templates`.
    pub(super) fn pairs(lists: &Lists<'_>, templates: &mut Vec<Template>) -> PairOps {
        let value = |value: &str| Value::compile(value, templates, Escape::None, |v| Some(encode(v)));
        Ops::compile(lists, |name| Some(Name::new(name)), value)
    }

    /// `text` with the operations applied, in order; None when none of them changed it.
    /// `rendered` holds the request's rendered templates.
    pub(super) fn apply(&self, text: &str, rendered: &[String]) -> Option<String> {
        let mut pairs: Vec<Pair<'_>> = text
            .split('&')
            .filter(|raw| !raw.is_empty())
            .map(|raw| Pair {
                name: decode(raw.split_once('=').map_or(raw, |(name, _)| name)),
                raw: Cow::Borrowed(raw),
            })
            .collect();
        let before = pairs.len();
        let mut changed = false;
        for name in &self.remove {
            pairs.retain(|p| *p.name != *name.plain);
        }
        changed |= pairs.len() != before;
        for (old, new) in &self.rename {
            if old.plain == new.plain || !pairs.iter().any(|p| *p.name == *old.plain) {
                continue;
            }
            pairs.retain(|p| *p.name != *new.plain);
            for pair in pairs.iter_mut().filter(|p| *p.name == *old.plain) {
                let value = pair.raw.find('=').map_or("", |at| &pair.raw[at..]);
                let raw = format!("{}{value}", new.encoded);
                *pair = Pair { name: Cow::Owned(new.plain.to_string()), raw: Cow::Owned(raw) };
            }
            changed = true;
        }
        let value = |v: &Value<String>| v.text(rendered, encode).into_owned();
        let pair = |name: &Name, v: &Value<String>| Pair {
            name: Cow::Owned(name.plain.to_string()),
            raw: Cow::Owned(format!("{}={}", name.encoded, value(v))),
        };
        for (name, v) in &self.replace {
            let Some(first) = pairs.iter().position(|p| *p.name == *name.plain) else { continue };
            pairs[first] = pair(name, v);
            let mut at = 0;
            pairs.retain(|p| {
                at += 1;
                at - 1 <= first || *p.name != *name.plain
            });
            changed = true;
        }
        for (name, v) in &self.add {
            if !pairs.iter().any(|p| *p.name == *name.plain) {
                pairs.push(pair(name, v));
                changed = true;
            }
        }
        for (name, v) in &self.append {
            pairs.push(pair(name, v));
            changed = true;
        }
        if !changed {
            return None;
        }
        let mut out = String::with_capacity(text.len() + 32);
        for (i, p) in pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(&p.raw);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(lists: [&[&str]; 5]) -> (PairOps, Vec<Template>) {
        let owned: Vec<Vec<String>> = lists.iter().map(|l| l.iter().map(|s| (*s).to_owned()).collect()).collect();
        let mut templates = Vec::new();
        let lists = Lists { remove: &owned[0], rename: &owned[1], valued: [&owned[2], &owned[3], &owned[4]] };
        let ops = PairOps::pairs(&lists, &mut templates);
        (ops, templates)
    }

    #[test]
    fn each_operation_does_what_kong_does() {
        let (ops, _) = ops([
            &["gone", "absent"],
            &["old:new", "nothing:something"],
            &["r:one value", "not-there:1"],
            &["r:2", "added:é"],
            &["r:4", "tags:x"],
        ]);
        let got = ops.apply("keep=1&gone=1&old=a&r=0&new=stale&old=b&r=00&gone&flag&tags=w", &[]).unwrap();
        assert_eq!(got, "keep=1&new=a&r=one%20value&new=b&flag&tags=w&added=%C3%A9&r=4&tags=x");
    }

    #[test]
    fn names_are_compared_decoded_and_nothing_changes_when_nothing_matches() {
        let (remove, _) = ops([&["api key"], &[], &[], &[], &[]]);
        assert_eq!(remove.apply("a=1&api+key=s&api%20key=t", &[]).as_deref(), Some("a=1"));
        assert_eq!(remove.apply("a=1&b=2", &[]), None, "nothing to remove: unchanged, no new text");
        let (add, _) = ops([&[], &[], &[], &["a:1"], &[]]);
        assert_eq!(add.apply("", &[]).as_deref(), Some("a=1"));
        assert_eq!(add.apply("a=0", &[]), None);
    }

    #[test]
    fn templates_are_encoded_once_rendered() {
        let (ops, templates) = ops([&[], &[], &[], &["who:$(headers.x-user)"], &[]]);
        assert_eq!(templates.len(), 1);
        assert_eq!(ops.apply("a=1", &["ann & bob".to_owned()]).as_deref(), Some("a=1&who=ann%20%26%20bob"));
    }
}
