//! `request-transformer` and `response-transformer`: Kong's `remove`, `rename`, `replace`,
//! `add` and `append` of headers, query parameters and body fields, in that order.
//!
//! - [`request`]: the request plugin (headers, query string, JSON and form bodies, the method
//!   and the upstream path), [`response`]: the response plugin (headers, JSON bodies through a
//!   body filter that buffers them).
//! - [`headers`], [`pairs`] (query strings and form bodies), [`json`] (top-level fields of a
//!   JSON object): the operations on each kind of thing, compiled once per snapshot and applied
//!   without I/O, so that tests drive them directly.
//! - [`template`]: `$(headers.x)` and `$(query_params.y)` in request values, rendered from the
//!   request as it reached the plugin.
//!
//! An operation that finds nothing to do changes nothing and allocates nothing: a headers-only
//! transformer costs a few header-map operations a request, and a body is read only when body
//! operations are configured and its content type is one they apply to.

mod headers;
mod json;
mod pairs;
pub(crate) mod request;
pub(crate) mod response;
mod template;

pub(crate) use request::RequestTransformer;
pub(crate) use response::ResponseTransformer;

use std::borrow::Cow;
use template::Template;

/// A configured value: a literal, made ready for where it goes once per snapshot, or the
/// index of a template rendered once per request.
#[derive(Debug)]
enum Value<L> {
    Literal(L),
    Template(usize),
}

impl<L> Value<L> {
    /// Reads value text: a literal made by `literal` (None: the value cannot be used there),
    /// or a template, compiled onto `templates`.
    fn compile(
        text: &str,
        templates: &mut Vec<Template>,
        escape: template::Escape,
        literal: impl FnOnce(&str) -> Option<L>,
    ) -> Option<Value<L>> {
        if !config_sync::model::has_template(text) {
            return literal(text).map(Value::Literal);
        }
        // Validated by config_sync: it parses.
        let pieces = config_sync::model::parse_template(text).ok()?;
        templates.push(Template::compile(&pieces, escape));
        Some(Value::Template(templates.len() - 1))
    }
}

impl Value<String> {
    /// The value's text: the literal, or its template rendered and made ready by `ready`.
    fn text<'v>(&'v self, rendered: &[String], ready: impl FnOnce(&str) -> String) -> Cow<'v, str> {
        match self {
            Value::Literal(text) => Cow::Borrowed(text),
            Value::Template(i) => Cow::Owned(ready(rendered.get(*i).map_or("", String::as_str))),
        }
    }
}

/// Kong's five operations on one kind of thing (headers, pairs, JSON fields), in the order they
/// run: `N` is how a name is held, `V` how a value is. Each kind applies them in its module.
#[derive(Debug)]
struct Ops<N, V> {
    remove: Vec<N>,
    rename: Vec<(N, N)>,
    replace: Vec<(N, V)>,
    add: Vec<(N, V)>,
    append: Vec<(N, V)>,
}

/// A config's lists for one kind of thing: names to remove, `"old:new"` to rename, and
/// `"name:value"` to replace, add and append.
struct Lists<'c> {
    remove: &'c [String],
    rename: &'c [String],
    valued: [&'c [String]; 3],
}

impl<N, V> Ops<N, V> {
    /// Compiles `lists`: `name` reads a name and `value` a value (None: the entry is skipped).
    fn compile(lists: &Lists<'_>, name: impl Fn(&str) -> Option<N>, mut value: impl FnMut(&str) -> Option<V>) -> Self {
        let valued = lists.valued.map(|list| entries(list).filter_map(|(n, v)| Some((name(n)?, value(v)?))).collect());
        Ops::with_values(lists.remove, lists.rename, name, valued)
    }

    /// The operations with replace, add and append made already.
    fn with_values(
        remove: &[String],
        rename: &[String],
        name: impl Fn(&str) -> Option<N>,
        [replace, add, append]: [Vec<(N, V)>; 3],
    ) -> Self {
        Ops {
            remove: remove.iter().filter_map(|n| name(n)).collect(),
            rename: entries(rename).filter_map(|(old, new)| Some((name(old)?, name(new)?))).collect(),
            replace,
            add,
            append,
        }
    }

    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.append.is_empty()
    }
}

/// Each `"name:value"` entry split at its first colon (entries without one were refused by
/// validation and are skipped).
fn entries(list: &[String]) -> impl Iterator<Item = (&str, &str)> {
    list.iter().filter_map(|entry| config_sync::model::split_entry(entry))
}
