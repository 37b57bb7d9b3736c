//! The `request-transformer` plugin's config, with Kong's fields and defaults: what to
//! `remove`, `rename`, `replace`, `add` and `append` in the request's headers, query string and
//! body, in that order, and an `http_method` and `replace.uri` for the upstream.
//!
//! Every list is empty by default (a config of `{}` changes nothing). Entries are Kong's
//! strings: names in `remove`, `"old:new"` in `rename`, `"name:value"` elsewhere, each checked
//! here with its path (`routes/r.plugins.request-transformer.add.headers[0]`). Values may hold
//! templates ([`super::transformers::parse_template`]); names may not.

use super::transformers::{
    check_entry, check_field_name, check_header_name, check_template, is_header_value_text, unsettable_request_header,
    TemplatePiece,
};
use crate::validate::Errors;
use serde::{Deserialize, Serialize};

/// What one operation acts on: names for `remove`, `"name:value"` entries for `add` and
/// `append`, `"old:new"` for `rename`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestEntries {
    /// Headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Query parameters.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub querystring: Vec<String>,
    /// Body fields: top-level JSON fields, or form fields (string values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub body: Vec<String>,
}

/// `replace`: `"name:value"` entries, and the upstream path.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestReplace {
    /// Header entries; `host:<value>` sets the upstream's `Host`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Query parameter entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub querystring: Vec<String>,
    /// Body field entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub body: Vec<String>,
    /// The whole upstream path (the service's path is not prepended), starting with `/`; may
    /// hold templates. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// The `request-transformer` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestTransformer {
    /// The upstream request's method (upper case). Default: the client's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_method: Option<String>,
    /// Removed first.
    pub remove: RequestEntries,
    /// Then renamed, when present.
    pub rename: RequestEntries,
    /// Then replaced, only when present.
    pub replace: RequestReplace,
    /// Then added, only when absent.
    pub add: RequestEntries,
    /// Then appended: one more value (a header line, a query parameter, a JSON array element).
    pub append: RequestEntries,
}

impl RequestTransformer {
    /// Whether any body operation is configured: only then is a request body read.
    pub fn has_body_ops(&self) -> bool {
        !(self.remove.body.is_empty()
            && self.rename.body.is_empty()
            && self.replace.body.is_empty()
            && self.add.body.is_empty()
            && self.append.body.is_empty())
    }

    /// Pushes every problem onto `errors`, under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        if let Some(method) = &self.http_method {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                errors.push(format!("{path}.http_method"), format!("{method:?} is not a method: upper-case letters"));
            }
        }
        for (i, name) in self.remove.headers.iter().enumerate() {
            let at = format!("{path}.remove.headers[{i}]");
            if check_header_name(name, &at, errors).as_deref() == Some("host") {
                errors.push(at, unsettable_request_header("host").unwrap_or_default());
            }
        }
        for (field, names) in [("querystring", &self.remove.querystring), ("body", &self.remove.body)] {
            for (i, name) in names.iter().enumerate() {
                check_field_name(name, &format!("{path}.remove.{field}[{i}]"), errors);
            }
        }
        for (i, entry) in self.rename.headers.iter().enumerate() {
            let at = format!("{path}.rename.headers[{i}]");
            if let Some((old, new)) = check_entry(entry, &at, errors) {
                for name in [old, new] {
                    let why = check_header_name(name, &at, errors).and_then(|lower| unsettable_request_header(&lower));
                    if let Some(why) = why {
                        errors.push(&at, format!("{name}: {why}"));
                    }
                }
            }
        }
        for (field, entries) in [("querystring", &self.rename.querystring), ("body", &self.rename.body)] {
            for (i, entry) in entries.iter().enumerate() {
                let at = format!("{path}.rename.{field}[{i}]");
                if let Some((old, new)) = check_entry(entry, &at, errors) {
                    for name in [old, new] {
                        check_field_name(name, &at, errors);
                    }
                }
            }
        }
        let valued = [
            ("replace", &self.replace.headers, &self.replace.querystring, &self.replace.body),
            ("add", &self.add.headers, &self.add.querystring, &self.add.body),
            ("append", &self.append.headers, &self.append.querystring, &self.append.body),
        ];
        for (op, headers, querystring, body) in valued {
            for (i, entry) in headers.iter().enumerate() {
                let at = format!("{path}.{op}.headers[{i}]");
                let Some((name, value)) = check_entry(entry, &at, errors) else { continue };
                if let Some(lower) = check_header_name(name, &at, errors) {
                    match unsettable_request_header(&lower) {
                        Some(_) if lower == "host" && op == "replace" => {}
                        Some(why) => errors.push(&at, format!("{name}: {why}")),
                        None => {}
                    }
                }
                if let Some(pieces) = check_template(value, &at, errors) {
                    let text_ok =
                        pieces.iter().all(|p| !matches!(p, TemplatePiece::Text(t) if !is_header_value_text(t)));
                    if !text_ok {
                        errors.push(&at, "a header value may not hold control characters");
                    }
                }
            }
            for (field, entries) in [("querystring", querystring), ("body", body)] {
                for (i, entry) in entries.iter().enumerate() {
                    let at = format!("{path}.{op}.{field}[{i}]");
                    if let Some((name, value)) = check_entry(entry, &at, errors) {
                        if check_field_name(name, &at, errors) {
                            check_template(value, &at, errors);
                        }
                    }
                }
            }
        }
        if let Some(uri) = &self.replace.uri {
            let at = format!("{path}.replace.uri");
            if !uri.starts_with('/') {
                errors.push(&at, format!("{uri:?} is not a path: it must start with /"));
            } else if let Some(pieces) = check_template(uri, &at, errors) {
                let path_text = |t: &str| t.bytes().all(|b| b.is_ascii_graphic() && !b"?#\"<>\\^`{|}".contains(&b));
                if pieces.iter().any(|p| matches!(p, TemplatePiece::Text(t) if !path_text(t))) {
                    errors.push(&at, format!("{uri:?} is not a path: no spaces, controls, `?` or `#`"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::from_value;
    use serde_json::json;

    fn errors_of(value: serde_json::Value) -> Vec<String> {
        let config: RequestTransformer = from_value(value, "p").unwrap();
        let mut errors = Errors::default();
        config.validate("p", &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn an_empty_config_is_kongs_default_and_changes_nothing() {
        let config: RequestTransformer = from_value(json!({}), "p").unwrap();
        assert_eq!(config, RequestTransformer::default());
        assert!(!config.has_body_ops());
        assert!(errors_of(json!({})).is_empty());
        let dumped = serde_json::to_value(&config).unwrap();
        assert_eq!(dumped, json!({"remove": {}, "rename": {}, "replace": {}, "add": {}, "append": {}}));
    }

    #[test]
    fn a_good_config_passes_and_round_trips() {
        let value = json!({
            "http_method": "POST",
            "remove": {"headers": ["X-Secret"], "querystring": ["debug"], "body": ["password"]},
            "rename": {"headers": ["X-Old:X-New"], "querystring": ["q:search"], "body": ["user:username"]},
            "replace": {"headers": ["host:internal.example", "X-A:$(headers.x-b)"], "uri": "/v2/$(query_params.id)"},
            "add": {"headers": ["X-From:gateway"], "querystring": ["v:2"], "body": ["source:$(headers[\"x-src\"])"]},
            "append": {"headers": ["X-Tag:a:b"], "body": ["tags:new"]},
        });
        assert_eq!(errors_of(value.clone()), Vec::<String>::new());
        let config: RequestTransformer = from_value(value, "p").unwrap();
        assert!(config.has_body_ops());
        let again: RequestTransformer = serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn a_consumer_may_carry_both_transformers() {
        // They run after the auth plugins, once the consumer is known (Kong allows it too).
        let value = json!({"request-transformer": {"add": {"headers": ["x-tier:gold"]}}, "response-transformer": {}});
        let plugins: crate::model::Plugins = from_value(value, "consumers/ann.plugins").unwrap();
        let mut errors = Errors::default();
        plugins.validate_on_consumer("consumers/ann.plugins", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn bad_values_are_reported_with_their_paths() {
        let got = errors_of(json!({
            "http_method": "get",
            "remove": {"headers": ["bad header", "Host"], "querystring": [""]},
            "rename": {"headers": ["X-A:Connection"], "body": ["only-a-name"]},
            "replace": {"headers": ["Content-Length:5"], "querystring": ["q:$(uri_captures[1])"], "uri": "v2"},
            "add": {"headers": ["X-A", "X-B:$(headers.x", "X-Forwarded-For:1.2.3.4", "Host:a"], "body": ["$(headers.a):1"]},
            "append": {"querystring": ["a:$(os.getenv(\"HOME\"))"]},
        }));
        let paths: Vec<&str> = got.iter().map(|e| e.split(": ").next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "p.http_method",
                "p.remove.headers[0]",
                "p.remove.headers[1]",
                "p.remove.querystring[0]",
                "p.rename.headers[0]",
                "p.rename.body[0]",
                "p.replace.headers[0]",
                "p.replace.querystring[0]",
                "p.add.headers[0]",
                "p.add.headers[1]",
                "p.add.headers[2]",
                "p.add.headers[3]",
                "p.add.body[0]",
                "p.append.querystring[0]",
                "p.replace.uri",
            ],
            "{got:#?}"
        );
        assert_eq!(got[8], "p.add.headers[0]: \"X-A\" has no value: write \"name:value\"");
        assert!(got[7].contains("uri_captures is not supported"), "{}", got[7]);
        assert!(got[4].contains("Connection: is a hop-by-hop header"), "{}", got[4]);
        assert!(got[12].contains("templates are rendered in values, not in names"), "{}", got[12]);
    }
}
