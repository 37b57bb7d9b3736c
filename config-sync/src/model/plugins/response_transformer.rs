//! The `response-transformer` plugin's config, with Kong's fields and defaults: what to
//! `remove`, `rename`, `replace`, `add` and `append` in the response's headers and top-level
//! JSON fields, in that order.
//!
//! Every list is empty by default. Values are literal, as in Kong (no templates); a JSON value
//! is a string unless `json_types` (aligned with `json` by position) says `number` or
//! `boolean`, and is then checked to be one.

use super::transformers::{check_entry, check_field_name, check_header_name, is_header_value_text, unsettable_header};
use crate::validate::Errors;
use serde::{Deserialize, Serialize};

/// The JSON type of a configured value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonType {
    /// A JSON string (the default).
    #[default]
    String,
    /// `true` or `false`.
    Boolean,
    /// A JSON number.
    Number,
}

/// Names to remove, or `"old:new"` entries to rename.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseNames {
    /// Header names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Top-level JSON field names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub json: Vec<String>,
}

/// `"name:value"` entries, and the types of the JSON ones.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseEntries {
    /// Header entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Top-level JSON field entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub json: Vec<String>,
    /// The type of `json[i]`'s value; `string` past the end of the list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub json_types: Vec<JsonType>,
}

impl ResponseEntries {
    /// Each JSON entry's name, and its value as JSON text (quoted for a string). Validated
    /// entries only: others are skipped.
    pub fn json_values(&self) -> impl Iterator<Item = (&str, String)> {
        self.json.iter().enumerate().filter_map(|(i, entry)| {
            let (name, value) = entry.split_once(':')?;
            json_text(value, self.json_types.get(i).copied().unwrap_or_default()).map(|v| (name, v))
        })
    }
}

/// `value` as JSON text of `kind`; None when it is not one (a number that does not parse).
fn json_text(value: &str, kind: JsonType) -> Option<String> {
    match kind {
        JsonType::String => serde_json::to_string(value).ok(),
        JsonType::Boolean => matches!(value, "true" | "false").then(|| value.to_owned()),
        JsonType::Number => {
            let number: serde_json::Number = serde_json::from_str(value.trim()).ok()?;
            Some(number.to_string())
        }
    }
}

/// The `response-transformer` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseTransformer {
    /// Removed first.
    pub remove: ResponseNames,
    /// Then renamed, when present.
    pub rename: ResponseNames,
    /// Then replaced, only when present.
    pub replace: ResponseEntries,
    /// Then added, only when absent.
    pub add: ResponseEntries,
    /// Then appended: one more header line, or one more JSON array element.
    pub append: ResponseEntries,
}

impl ResponseTransformer {
    /// Whether any JSON operation is configured: only then is a response body buffered.
    pub fn has_json_ops(&self) -> bool {
        !(self.remove.json.is_empty()
            && self.rename.json.is_empty()
            && self.replace.json.is_empty()
            && self.add.json.is_empty()
            && self.append.json.is_empty())
    }

    /// Pushes every problem onto `errors`, under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        let settable = |name: &str, at: &str, errors: &mut Errors| {
            if let Some(why) = check_header_name(name, at, errors).and_then(|lower| unsettable_header(&lower)) {
                errors.push(at, format!("{name}: {why}"));
            }
        };
        for (i, name) in self.remove.headers.iter().enumerate() {
            check_header_name(name, &format!("{path}.remove.headers[{i}]"), errors);
        }
        for (i, name) in self.remove.json.iter().enumerate() {
            check_field_name(name, &format!("{path}.remove.json[{i}]"), errors);
        }
        for (i, entry) in self.rename.headers.iter().enumerate() {
            let at = format!("{path}.rename.headers[{i}]");
            if let Some((old, new)) = check_entry(entry, &at, errors) {
                check_header_name(old, &at, errors);
                settable(new, &at, errors);
            }
        }
        for (i, entry) in self.rename.json.iter().enumerate() {
            let at = format!("{path}.rename.json[{i}]");
            if let Some((old, new)) = check_entry(entry, &at, errors) {
                for name in [old, new] {
                    check_field_name(name, &at, errors);
                }
            }
        }
        for (op, entries) in [("replace", &self.replace), ("add", &self.add), ("append", &self.append)] {
            for (i, entry) in entries.headers.iter().enumerate() {
                let at = format!("{path}.{op}.headers[{i}]");
                if let Some((name, value)) = check_entry(entry, &at, errors) {
                    settable(name, &at, errors);
                    if !is_header_value_text(value) {
                        errors.push(&at, "a header value may not hold control characters");
                    }
                }
            }
            for (i, entry) in entries.json.iter().enumerate() {
                let at = format!("{path}.{op}.json[{i}]");
                let Some((name, value)) = check_entry(entry, &at, errors) else { continue };
                check_field_name(name, &at, errors);
                let kind = entries.json_types.get(i).copied().unwrap_or_default();
                if json_text(value, kind).is_none() {
                    let kind = if kind == JsonType::Number { "number" } else { "boolean (true or false)" };
                    errors.push(&at, format!("{value:?} is not a {kind}, as json_types[{i}] says"));
                }
            }
            if entries.json_types.len() > entries.json.len() {
                errors.push(
                    format!("{path}.{op}.json_types[{}]", entries.json.len()),
                    "has no json entry at its position",
                );
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
        let config: ResponseTransformer = from_value(value, "p").unwrap();
        let mut errors = Errors::default();
        config.validate("p", &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn json_values_are_typed_by_position() {
        let config: ResponseTransformer = from_value(
            json!({"add": {"json": ["a:1", "b:true", "c:x\"y", "d:2.5"], "json_types": ["number", "boolean"]}}),
            "p",
        )
        .unwrap();
        let values: Vec<(&str, String)> = config.add.json_values().collect();
        assert_eq!(
            values,
            [("a", "1".into()), ("b", "true".into()), ("c", "\"x\\\"y\"".into()), ("d", "\"2.5\"".into())]
        );
        assert!(config.has_json_ops());
        assert!(errors_of(serde_json::to_value(&config).unwrap()).is_empty());
        assert!(!ResponseTransformer::default().has_json_ops());
    }

    #[test]
    fn bad_values_are_reported_with_their_paths() {
        let got = errors_of(json!({
            "remove": {"headers": ["a b"], "json": [""]},
            "rename": {"headers": ["X-A:Transfer-Encoding"], "json": ["a"]},
            "replace": {"json": ["n:ten"], "json_types": ["number", "string"]},
            "add": {"headers": ["X-A"], "json": ["ok:yes"], "json_types": ["boolean"]},
            "append": {"headers": ["Connection:close"]},
        }));
        assert_eq!(
            got,
            [
                "p.remove.headers[0]: \"a b\" is not a valid header name",
                "p.remove.json[0]: a name must not be empty",
                "p.rename.headers[0]: Transfer-Encoding: frames the body: the gateway sets it",
                "p.rename.json[0]: \"a\" has no value: write \"name:value\"",
                "p.replace.json[0]: \"ten\" is not a number, as json_types[0] says",
                "p.replace.json_types[1]: has no json entry at its position",
                "p.add.headers[0]: \"X-A\" has no value: write \"name:value\"",
                "p.add.json[0]: \"yes\" is not a boolean (true or false), as json_types[0] says",
                "p.append.headers[0]: Connection: is a hop-by-hop header: it never passes the gateway",
            ]
        );
        assert!(from_value::<ResponseTransformer>(json!({"add": {"json_types": ["date"]}}), "p").is_err());
    }
}
