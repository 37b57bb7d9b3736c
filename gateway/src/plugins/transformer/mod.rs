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

/// Each `"name:value"` entry split at its first colon (entries without one were refused by
/// validation and are skipped).
fn entries(list: &[String]) -> impl Iterator<Item = (&str, &str)> {
    list.iter().filter_map(|entry| config_sync::model::split_entry(entry))
}
