//! Operations on the top-level fields of a JSON object body.
//!
//! The body is checked to be JSON by serde_json, skipping values without recursion, then cut
//! into its top-level members by a scan that tracks strings and nesting. Members no operation
//! touches keep their bytes (numbers are never re-read: a 20-digit id stays exact), and the
//! fields keep their order; new ones go at the end. What is not a JSON object, or is nested
//! deeper than [`MAX_DEPTH`] (serde_json's own limit), is left alone; so is a body no operation
//! changes.
//!
//! As Kong: `rename` moves a field over any of the new name, `replace` sets a field that is
//! present, `add` one that is absent, and `append` makes the field an array with one more
//! element (an absent field becomes a one-element array, a non-array value the first element).

use super::template::{Escape, Template};
use super::{Lists, Ops, Value};
use std::borrow::Cow;

/// The deepest nesting of arrays and objects a body may have, the outer object counted: deeper
/// bodies pass unchanged. serde_json's default recursion limit.
pub(super) const MAX_DEPTH: usize = 128;

/// The JSON operations of one config. Values are held as JSON text.
pub(super) type JsonOps = Ops<Box<str>, Value<String>>;

/// One top-level member: its name decoded, its key as written (quoted), its value as written.
struct Member<'b> {
    name: Cow<'b, str>,
    key: Cow<'b, str>,
    value: Cow<'b, str>,
}

impl JsonOps {
    /// Compiles a request config's lists, whose values are strings and may hold templates.
    pub(super) fn json_strings(lists: &Lists<'_>, templates: &mut Vec<Template>) -> JsonOps {
        let value = |value: &str| Value::compile(value, templates, Escape::None, |v| serde_json::to_string(v).ok());
        Ops::compile(lists, |name| Some(Box::from(name)), value)
    }

    /// Compiles a response config's lists, whose values are JSON text already (typed by
    /// `json_types`).
    pub(super) fn json_typed(remove: &[String], rename: &[String], valued: [Vec<(&str, String)>; 3]) -> JsonOps {
        let valued =
            valued.map(|list| list.into_iter().map(|(name, text)| (Box::from(name), Value::Literal(text))).collect());
        Ops::with_values(remove, rename, |name| Some(Box::from(name)), valued)
    }

    /// `body` with the operations applied, in order; None when it is left alone. An empty body
    /// is an empty object when `empty_is_object` (a request's, as Kong), else left alone.
    pub(super) fn apply(&self, body: &[u8], rendered: &[String], empty_is_object: bool) -> Option<Vec<u8>> {
        let mut members = if body.is_empty() && empty_is_object { Vec::new() } else { members(body)? };
        let mut changed = false;
        let position = |members: &[Member<'_>], name: &str| members.iter().position(|m| m.name == name);
        for name in &self.remove {
            let before = members.len();
            members.retain(|m| m.name != **name);
            changed |= members.len() != before;
        }
        for (old, new) in &self.rename {
            if old == new || position(&members, old).is_none() {
                continue;
            }
            members.retain(|m| m.name != **new);
            for member in members.iter_mut().filter(|m| m.name == **old) {
                member.name = Cow::Owned(new.to_string());
                member.key = Cow::Owned(key(new));
            }
            changed = true;
        }
        for (name, v) in &self.replace {
            let mut found = false;
            for member in members.iter_mut().filter(|m| m.name == **name) {
                member.value = Cow::Owned(json_value(v, rendered).into_owned());
                found = true;
            }
            changed |= found;
        }
        for (name, v) in &self.add {
            if position(&members, name).is_none() {
                members.push(Member {
                    name: Cow::Owned(name.to_string()),
                    key: Cow::Owned(key(name)),
                    value: json_value(v, rendered),
                });
                changed = true;
            }
        }
        for (name, v) in &self.append {
            let v = json_value(v, rendered);
            match position(&members, name) {
                Some(at) => {
                    let old = &members[at].value;
                    let appended = match old.strip_prefix('[').and_then(|o| o.strip_suffix(']')) {
                        Some(inner) if inner.trim_matches(WHITESPACE).is_empty() => format!("[{v}]"),
                        Some(inner) => format!("[{},{v}]", inner.trim_end_matches(WHITESPACE)),
                        None => format!("[{old},{v}]"),
                    };
                    members[at].value = Cow::Owned(appended);
                }
                None => members.push(Member {
                    name: Cow::Owned(name.to_string()),
                    key: Cow::Owned(key(name)),
                    value: Cow::Owned(format!("[{v}]")),
                }),
            }
            changed = true;
        }
        if !changed {
            return None;
        }
        let mut out = Vec::with_capacity(body.len() + 64);
        out.push(b'{');
        for (i, member) in members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(member.key.as_bytes());
            out.push(b':');
            out.extend_from_slice(member.value.as_bytes());
        }
        out.push(b'}');
        Some(out)
    }
}

/// A value's JSON text: the literal, or the rendered template as a JSON string.
fn json_value<'v>(value: &'v Value<String>, rendered: &[String]) -> Cow<'v, str> {
    value.text(rendered, |text| serde_json::to_string(text).unwrap_or_default())
}

/// JSON's whitespace.
const WHITESPACE: &[char] = &[' ', '\t', '\n', '\r'];

/// `name` as a JSON object key.
fn key(name: &str) -> String {
    serde_json::to_string(name).unwrap_or_default()
}

/// The top-level members of `body`, when it is a JSON object no deeper than [`MAX_DEPTH`].
fn members(body: &[u8]) -> Option<Vec<Member<'_>>> {
    let text = std::str::from_utf8(body).ok()?;
    // Checks the whole text is JSON without building it: serde_json skips values with a loop,
    // not recursion, so no depth can exhaust the stack here. The scan below then trusts it.
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let bytes = text.as_bytes();
    let mut at = skip_whitespace(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    let mut members = Vec::new();
    at = skip_whitespace(bytes, at + 1);
    if bytes.get(at) == Some(&b'}') {
        return Some(members);
    }
    loop {
        at = skip_whitespace(bytes, at);
        let key_end = string_end(bytes, at)?;
        let key = &text[at..key_end];
        // Past the `:`.
        let value_start = skip_whitespace(bytes, skip_whitespace(bytes, key_end) + 1);
        let value_end = value_end(bytes, value_start)?;
        let value = text[value_start..value_end].trim_end_matches(WHITESPACE);
        let name = if key.contains('\\') {
            Cow::Owned(serde_json::from_str(key).ok()?)
        } else {
            Cow::Borrowed(&key[1..key.len() - 1])
        };
        members.push(Member { name, key: Cow::Borrowed(key), value: Cow::Borrowed(value) });
        match bytes.get(value_end) {
            Some(b',') => at = value_end + 1,
            _ => return Some(members),
        }
    }
}

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Where the string starting at `start` (its opening quote) ends: just past its closing quote.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    while let Some(b) = bytes.get(at) {
        match b {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
    None
}

/// Where the member value starting at `start` ends: at the `,` or `}` after it. None past
/// [`MAX_DEPTH`].
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    // The outer object is one level.
    let mut depth = 1;
    let mut at = start;
    while let Some(b) = bytes.get(at) {
        match b {
            b'"' => {
                at = string_end(bytes, at)?;
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return None;
                }
            }
            b']' | b'}' if depth == 1 => return Some(at),
            b']' | b'}' => depth -= 1,
            b',' if depth == 1 => return Some(at),
            _ => {}
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_ops(lists: [&[&str]; 5]) -> JsonOps {
        let owned: Vec<Vec<String>> = lists.iter().map(|l| l.iter().map(|s| (*s).to_owned()).collect()).collect();
        let lists = Lists { remove: &owned[0], rename: &owned[1], valued: [&owned[2], &owned[3], &owned[4]] };
        JsonOps::json_strings(&lists, &mut Vec::new())
    }

    fn apply(ops: &JsonOps, body: &str) -> Option<String> {
        ops.apply(body.as_bytes(), &[], true).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn each_operation_does_what_kong_does_keeping_untouched_bytes() {
        let ops = request_ops([
            &["secret", "absent"],
            &["user:username", "nothing:something"],
            &["r:replaced", "not-there:x"],
            &["r:not-added", "source:gateway"],
            &["tags:new", "one:1", "empty:e", "fresh:f"],
        ]);
        let body = r#" { "secret": "s", "user" : {"id": 12345678901234567890123, "n": [1.50, 2]},
            "username": "stale", "r": 0, "tags": [ "a" , "b" ] , "one": 1, "empty": [ ] } "#;
        assert_eq!(
            apply(&ops, body).unwrap(),
            r#"{"username":{"id": 12345678901234567890123, "n": [1.50, 2]},"r":"replaced","tags":[ "a" , "b","new"],"one":[1,"1"],"empty":["e"],"source":"gateway","fresh":["f"]}"#
        );
    }

    #[test]
    fn operations_run_in_order_and_an_empty_request_body_becomes_an_object() {
        let ops = request_ops([&["a"], &[], &[], &["a:added"], &["a:more"]]);
        assert_eq!(apply(&ops, r#"{"a":"client"}"#).unwrap(), r#"{"a":["added","more"]}"#);
        assert_eq!(apply(&ops, "").unwrap(), r#"{"a":["added","more"]}"#);
        assert_eq!(ops.apply(b"", &[], false), None, "a response's empty body is not JSON");
    }

    #[test]
    fn escaped_keys_and_strings_are_read_right() {
        let ops = request_ops([&["a\"b"], &[], &["x:y"], &[], &[]]);
        assert_eq!(apply(&ops, r#"{"a\"b": "}{,", "x": "\"],", "k\u00e9": 1}"#).unwrap(), r#"{"x":"y","k\u00e9":1}"#);
    }

    #[test]
    fn what_is_not_a_json_object_passes_unchanged() {
        let ops = request_ops([&["a"], &[], &[], &["b:1"], &[]]);
        for body in ["not json", "[1,2]", "\"text\"", "{\"a\":1", "{\"a\":1} x", "{\"a\":tru}", " "] {
            assert_eq!(apply(&ops, body), None, "{body:?}");
        }
        assert_eq!(ops.apply(b"{\"a\":\"\xff\"}", &[], true), None, "not UTF-8");
        let unchanged = request_ops([&["absent"], &[], &[], &[], &[]]);
        assert_eq!(apply(&unchanged, r#"{"a":1}"#), None, "nothing done, nothing written");
    }

    #[test]
    fn deep_nesting_passes_unchanged_without_exhausting_the_stack() {
        let ops = request_ops([&[], &[], &[], &["b:1"], &[]]);
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(apply(&ops, &deep), None);
        let array = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(apply(&ops, &array), None);
        // At the limit, it is edited.
        let deepest = format!("{{\"a\":{}1{}}}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        assert!(apply(&ops, &deepest).unwrap().ends_with(",\"b\":\"1\"}"));
    }

    #[test]
    fn typed_values_are_written_as_their_type() {
        let ops = JsonOps::json_typed(
            &[],
            &[],
            [vec![], vec![("n", "2.5".to_owned()), ("t", "true".to_owned())], vec![("list", "3".to_owned())]],
        );
        assert_eq!(
            ops.apply(br#"{"list":[1,2]}"#, &[], false).map(|b| String::from_utf8(b).unwrap()).unwrap(),
            r#"{"list":[1,2,3],"n":2.5,"t":true}"#
        );
    }
}
