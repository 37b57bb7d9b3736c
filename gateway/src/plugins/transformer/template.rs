//! Templates in `request-transformer` values, as Kong writes them: `$(headers.x-user)`,
//! `$(headers["x-user"])`, `$(query_params.page)`, `$(query_params["page"])`, between text.
//!
//! They are parsed by `config_sync` (which refuses anything else, `uri_captures` included) and
//! compiled here once per snapshot. Rendering reads the request as it reached the plugin,
//! before any of the plugin's own changes. A header or parameter the request lacks renders as
//! the empty string, as in Kong (whose templates render a missing value as ""); a header sent
//! several times renders its values joined with `, `; a parameter sent several times, its
//! first value, percent-decoded.

use crate::exchange::query;
use config_sync::model::TemplatePiece;
use http::{HeaderMap, HeaderName, Uri};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// How the rendered values of a template are escaped where they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Escape {
    /// As they are: the caller makes the whole value ready (a header value, an encoded query
    /// value, a JSON string).
    None,
    /// Percent-encoded where a path may not hold them (`/` is kept): the rendered template is
    /// the upstream path.
    Path,
}

/// The characters a rendered value is percent-encoded in, in a path: controls, space, and
/// those that would end or change the path (`?`, `#`, `%`), or that URIs never carry raw.
const PATH: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'<').add(b'>').add(b'?').add(b'`').add(b'{').add(b'}');

#[derive(Debug)]
enum Piece {
    Text(Box<str>),
    Header(HeaderName),
    Query(Box<str>),
}

/// A compiled template.
#[derive(Debug)]
pub(super) struct Template {
    pieces: Vec<Piece>,
    escape: Escape,
}

impl Template {
    pub(super) fn compile(pieces: &[TemplatePiece<'_>], escape: Escape) -> Template {
        let pieces = pieces
            .iter()
            .map(|piece| match piece {
                TemplatePiece::Text(text) => Piece::Text((*text).into()),
                // Validated: a header name (a token); lower-cased by `from_bytes`.
                TemplatePiece::Header(name) => {
                    HeaderName::from_bytes(name.as_bytes()).map_or_else(|_| Piece::Text(Box::default()), Piece::Header)
                }
                TemplatePiece::QueryParam(name) => Piece::Query((*name).into()),
            })
            .collect();
        Template { pieces, escape }
    }

    /// The template rendered from a request's `headers` and `uri`.
    pub(super) fn render(&self, headers: &HeaderMap, uri: &Uri) -> String {
        let mut out = String::new();
        let push = |out: &mut String, value: &str| match self.escape {
            Escape::None => out.push_str(value),
            Escape::Path => out.extend(utf8_percent_encode(value, PATH)),
        };
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Header(name) => {
                    for (i, value) in headers.get_all(name).iter().enumerate() {
                        if i > 0 {
                            push(&mut out, ", ");
                        }
                        push(&mut out, &String::from_utf8_lossy(value.as_bytes()));
                    }
                }
                Piece::Query(name) => {
                    if let Some(value) = query::values(uri, name).next() {
                        push(&mut out, &value);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, escape: Escape, headers: &[(&str, &str)], uri: &str) -> String {
        let pieces = config_sync::model::parse_template(template).unwrap();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        Template::compile(&pieces, escape).render(&map, &uri.parse().unwrap())
    }

    #[test]
    fn headers_and_query_parameters_are_rendered_between_text() {
        let headers = [("x-user", "ann"), ("x-tag", "a"), ("x-tag", "b")];
        assert_eq!(
            render(
                "u=$(headers.X-User) q=$(query_params[\"q\"]) t=$(headers['x-tag'])",
                Escape::None,
                &headers,
                "/p?q=a%20b&q=c"
            ),
            "u=ann q=a b t=a, b"
        );
    }

    #[test]
    fn what_the_request_lacks_renders_empty() {
        assert_eq!(render("[$(headers.x-missing)][$(query_params.none)]", Escape::None, &[], "/p"), "[][]");
    }

    #[test]
    fn path_templates_escape_what_would_change_the_path() {
        let headers = [("x-id", "a b?c#d%e/f")];
        assert_eq!(render("/v2/$(headers.x-id)", Escape::Path, &headers, "/"), "/v2/a%20b%3Fc%23d%25e/f");
    }
}
