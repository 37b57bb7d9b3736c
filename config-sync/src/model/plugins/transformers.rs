//! What `request-transformer` and `response-transformer` share: Kong's `"name:value"` entries,
//! the templates a request value may hold (`$(headers.x)`, `$(query_params["y"])`), and which
//! headers a transformer may not set.
//!
//! Templates are parsed here, to check them, and again by the gateway once per snapshot to
//! compile them; [`parse_template`] is the one parser both use.

use super::auth::is_token;
use crate::validate::Errors;

/// Splits a `"name:value"` entry at its first colon; None without a colon. The value may hold
/// more colons (`"url:http://a"`).
pub fn split_entry(entry: &str) -> Option<(&str, &str)> {
    entry.split_once(':')
}

/// One piece of a value that may hold templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplatePiece<'a> {
    /// Text, as written.
    Text(&'a str),
    /// `$(headers.name)` or `$(headers["name"])`: the request header's value (its values joined
    /// with `, ` when it has several; empty when it is absent). The name as written.
    Header(&'a str),
    /// `$(query_params.name)` or `$(query_params["name"])`: the query parameter's first value,
    /// percent-decoded (empty when it is absent).
    QueryParam(&'a str),
}

/// Reads `value` as text and templates. A `$` not followed by `(` is text. An expression other
/// than a header or a query parameter, or one left open, is an error saying why.
pub fn parse_template(value: &str) -> Result<Vec<TemplatePiece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        if start > 0 {
            pieces.push(TemplatePiece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        // Balanced parentheses, as Kong's templates find the expression's end.
        let mut depth = 1usize;
        let end = after.char_indices().find_map(|(i, c)| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            (depth == 0).then_some(i)
        });
        let Some(end) = end else { return Err(format!("template `{}` is not closed with `)`", &rest[start..])) };
        pieces.push(expression(after[..end].trim())?);
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        pieces.push(TemplatePiece::Text(rest));
    }
    Ok(pieces)
}

/// Whether `value` holds a template.
pub fn has_template(value: &str) -> bool {
    value.contains("$(")
}

fn expression(text: &str) -> Result<TemplatePiece<'_>, String> {
    let unsupported = || {
        format!(
            "unsupported template `$({text})`: use headers.<name>, headers[\"<name>\"], query_params.<name> or \
             query_params[\"<name>\"]"
        )
    };
    if text.starts_with("uri_captures") {
        return Err(format!(
            "template `$({text})`: uri_captures is not supported (the router does not keep a path regex's captures)"
        ));
    }
    let (header, name) = if let Some(rest) = text.strip_prefix("headers") {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix("query_params") {
        (false, rest)
    } else {
        return Err(unsupported());
    };
    let name = if let Some(dotted) = name.strip_prefix('.') {
        dotted
    } else if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        let inner = inner.trim();
        let quoted = |q: char| inner.strip_prefix(q).and_then(|i| i.strip_suffix(q));
        quoted('"').or_else(|| quoted('\'')).ok_or_else(unsupported)?
    } else {
        return Err(unsupported());
    };
    match header {
        true if is_token(name) => Ok(TemplatePiece::Header(name)),
        false if !name.is_empty() && !name.contains(['"', '\'', '[', ']', '(', ')']) => {
            Ok(TemplatePiece::QueryParam(name))
        }
        _ => Err(unsupported()),
    }
}

/// Why a request transformer may not set or rename to header `name` (lower case), if it may not.
/// `Host` may only be replaced: that sets the upstream's `Host`.
pub(super) fn unsettable_request_header(name: &str) -> Option<&'static str> {
    match name {
        "host" => Some("`Host` can only be replaced (replace.headers), which sets the upstream's Host"),
        "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "x-forwarded-port" | "x-forwarded-path"
        | "x-forwarded-prefix" | "x-real-ip" => {
            Some("is set by the proxy after the plugins run: a value set here would be replaced")
        }
        _ => unsettable_header(name),
    }
}

/// Why a transformer may not set header `name` (lower case) on any message, if it may not: the
/// headers that frame a message or describe one connection.
pub(super) fn unsettable_header(name: &str) -> Option<&'static str> {
    match name {
        "content-length" | "transfer-encoding" => Some("frames the body: the gateway sets it"),
        "connection"
        | "keep-alive"
        | "proxy-connection"
        | "te"
        | "trailer"
        | "upgrade"
        | "proxy-authenticate"
        | "proxy-authorization" => Some("is a hop-by-hop header: it never passes the gateway"),
        _ => None,
    }
}

/// Whether `text` may be (part of) a header value: visible ASCII, spaces, tabs and bytes past
/// ASCII; no control characters.
pub(super) fn is_header_value_text(text: &str) -> bool {
    text.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Checks a header name at `at`: a token. Returns it in lower case when valid.
pub(super) fn check_header_name(name: &str, at: &str, errors: &mut Errors) -> Option<String> {
    if is_token(name) {
        Some(name.to_ascii_lowercase())
    } else {
        errors.push(at, format!("{name:?} is not a valid header name"));
        None
    }
}

/// Checks a `"name:value"` entry at `at`; its name and value when it has a colon.
pub(super) fn check_entry<'e>(entry: &'e str, at: &str, errors: &mut Errors) -> Option<(&'e str, &'e str)> {
    let split = split_entry(entry);
    if split.is_none() {
        errors.push(at, format!("{entry:?} has no value: write \"name:value\""));
    }
    split
}

/// Checks a query parameter or JSON field name at `at`: not empty, and no template (names are
/// not rendered).
pub(super) fn check_field_name(name: &str, at: &str, errors: &mut Errors) -> bool {
    if name.is_empty() {
        errors.push(at, "a name must not be empty");
        false
    } else if has_template(name) {
        errors.push(at, format!("{name:?}: templates are rendered in values, not in names"));
        false
    } else {
        true
    }
}

/// Checks the templates of a value at `at`.
pub(super) fn check_template<'v>(value: &'v str, at: &str, errors: &mut Errors) -> Option<Vec<TemplatePiece<'v>>> {
    match parse_template(value) {
        Ok(pieces) => Some(pieces),
        Err(message) => {
            errors.push(at, message);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TemplatePiece::{Header, QueryParam, Text};

    #[test]
    fn templates_are_read_as_kong_writes_them() {
        assert_eq!(parse_template("plain").unwrap(), [Text("plain")]);
        assert_eq!(parse_template("").unwrap(), []);
        assert_eq!(
            parse_template("Bearer $(headers.x-token) for $(query_params[\"user\"])!").unwrap(),
            [Text("Bearer "), Header("x-token"), Text(" for "), QueryParam("user"), Text("!")]
        );
        assert_eq!(parse_template("$(headers['X-A'])$( query_params.q )").unwrap(), [Header("X-A"), QueryParam("q")]);
        assert_eq!(parse_template("costs $5 (or so)").unwrap(), [Text("costs $5 (or so)")]);
    }

    #[test]
    fn templates_that_cannot_be_rendered_are_refused_saying_why() {
        let error = |v| parse_template(v).unwrap_err();
        assert_eq!(error("a $(headers.x"), "template `$(headers.x` is not closed with `)`");
        assert!(error("$(uri_captures[1])").contains("uri_captures is not supported"));
        assert!(error("$(os.exit())").starts_with("unsupported template `$(os.exit())`"));
        assert!(error("$(headers)").starts_with("unsupported template"));
        assert!(error("$(headers[x])").starts_with("unsupported template"));
        assert!(error("$(headers[\"bad name\"])").starts_with("unsupported template"));
        assert!(error("$(query_params.)").starts_with("unsupported template"));
    }

    #[test]
    fn entries_split_at_their_first_colon() {
        assert_eq!(split_entry("x-a:1"), Some(("x-a", "1")));
        assert_eq!(split_entry("url:http://a:80/"), Some(("url", "http://a:80/")));
        assert_eq!(split_entry("x-a:"), Some(("x-a", "")));
        assert_eq!(split_entry("x-a"), None);
    }

    #[test]
    fn framing_hop_by_hop_and_proxy_headers_are_not_set() {
        assert!(unsettable_request_header("content-length").is_some());
        assert!(unsettable_request_header("connection").is_some());
        assert!(unsettable_request_header("x-forwarded-for").is_some());
        assert!(unsettable_request_header("host").is_some());
        assert!(unsettable_request_header("x-custom").is_none());
        assert!(unsettable_header("x-forwarded-for").is_none(), "a response may carry it");
        assert!(is_header_value_text("a b\tc é") && !is_header_value_text("a\r\nb"));
    }
}
