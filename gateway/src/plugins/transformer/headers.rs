//! Header operations, the same on requests and responses: remove, rename (when present),
//! replace (only when present), add (only when absent), append (one more line), in that order.
//! Names are compared case-insensitively, as header names are.

use super::{Lists, Ops};
use http::header::{Entry, HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

/// The header operations of one config; `V` is how a value is held (a literal, or a template
/// to render).
pub(super) type HeaderOps<V> = Ops<HeaderName, V>;

impl<V> HeaderOps<V> {
    /// Compiles `lists`; `value` reads a value (None: the entry is skipped). `skip` names a
    /// header the caller handles itself (the request's `Host`).
    pub(super) fn headers(lists: &Lists<'_>, skip: Option<&HeaderName>, value: impl FnMut(&str) -> Option<V>) -> Self {
        // Validated by config_sync: every name is a header name.
        let name = |text: &str| HeaderName::from_bytes(text.as_bytes()).ok().filter(|n| Some(n) != skip);
        Ops::compile(lists, name, value)
    }

    /// Applies the operations to `headers`, in order. `value` makes an operation's header value;
    /// None skips the operation (a rendered template that cannot be a header value).
    pub(super) fn apply(&self, headers: &mut HeaderMap, value: impl Fn(&V) -> Option<HeaderValue>) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (old, new) in &self.rename {
            if old == new {
                continue;
            }
            let Entry::Occupied(entry) = headers.entry(old) else { continue };
            let (_, values) = entry.remove_entry_mult();
            let values: SmallVec<[HeaderValue; 2]> = values.collect();
            // As Kong: the renamed header takes the place of one of the new name.
            headers.remove(new);
            for v in values {
                headers.append(new.clone(), v);
            }
        }
        // Through entries: one lookup of the name each.
        for (name, v) in &self.replace {
            if let Entry::Occupied(mut entry) = headers.entry(name) {
                if let Some(v) = value(v) {
                    // Every line of it replaced by one.
                    entry.insert(v);
                }
            }
        }
        for (name, v) in &self.add {
            if let Entry::Vacant(entry) = headers.entry(name) {
                if let Some(v) = value(v) {
                    entry.insert(v);
                }
            }
        }
        for (name, v) in &self.append {
            if let Some(v) = value(v) {
                headers.append(name.clone(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(
        remove: &[&str],
        rename: &[&str],
        replace: &[&str],
        add: &[&str],
        append: &[&str],
    ) -> HeaderOps<HeaderValue> {
        let owned = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let (remove, rename, replace, add, append) =
            (owned(remove), owned(rename), owned(replace), owned(add), owned(append));
        let lists = Lists { remove: &remove, rename: &rename, valued: [&replace, &add, &append] };
        HeaderOps::headers(&lists, None, |v| HeaderValue::from_str(v).ok())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    fn lines(map: &HeaderMap) -> Vec<String> {
        let mut lines: Vec<String> = map.iter().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap())).collect();
        lines.sort();
        lines
    }

    fn apply(ops: &HeaderOps<HeaderValue>, map: &mut HeaderMap) {
        ops.apply(map, |v| Some(v.clone()));
    }

    #[test]
    fn each_operation_does_what_kong_does() {
        let mut map = headers(&[("x-gone", "1"), ("x-old", "a"), ("x-old", "b"), ("x-new", "stale"), ("x-r", "0")]);
        let ops = ops(
            &["X-Gone", "x-absent"],
            &["X-Old:X-New", "x-nothing:x-something"],
            &["x-r:1", "x-not-there:1"],
            &["x-r:2", "x-added:3"],
            &["x-r:4", "x-appended:5"],
        );
        apply(&ops, &mut map);
        assert_eq!(
            lines(&map),
            ["x-added: 3", "x-appended: 5", "x-new: a", "x-new: b", "x-r: 1", "x-r: 4"],
            "removed; renamed with every value over the old new one; replaced only when present; added only when \
             absent; appended as another line"
        );
    }

    #[test]
    fn operations_run_in_kongs_order() {
        // Removed, then added back: remove runs before add.
        let mut map = headers(&[("x-a", "client")]);
        apply(&ops(&["x-a"], &[], &[], &["x-a:added"], &[]), &mut map);
        assert_eq!(lines(&map), ["x-a: added"]);
        // Renamed, then replaced under the new name, then appended.
        let mut map = headers(&[("x-a", "client")]);
        apply(&ops(&[], &["x-a:x-b"], &["x-b:replaced"], &["x-b:not-added"], &["x-b:more"]), &mut map);
        assert_eq!(lines(&map), ["x-b: more", "x-b: replaced"]);
    }

    #[test]
    fn a_value_that_cannot_be_made_skips_its_operation() {
        let mut map = headers(&[("x-a", "1")]);
        ops(&[], &[], &["x-a:2"], &["x-b:3"], &["x-c:4"]).apply(&mut map, |_| None);
        assert_eq!(lines(&map), ["x-a: 1"]);
    }
}
