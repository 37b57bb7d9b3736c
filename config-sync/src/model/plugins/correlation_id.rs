//! The `correlation-id` plugin's config, with Kong's fields and defaults.

use super::auth::is_token;
use crate::validate::Errors;
use serde::{Deserialize, Serialize};

/// How `correlation-id` makes an id for a request that has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum IdGenerator {
    /// A random (version 4) UUID per request.
    #[serde(rename = "uuid")]
    Uuid,
    /// A random UUID made once per process, then `#` and a counter: `<uuid>#42` (the default,
    /// as Kong's). Cheaper, and ids from one node sort by arrival.
    #[default]
    #[serde(rename = "uuid#counter")]
    UuidCounter,
}

/// The `correlation-id` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationId {
    /// The header the id is read from and set in. Default `X-Request-ID`.
    pub header_name: String,
    /// How a missing id is made. Default `uuid#counter`.
    pub generator: IdGenerator,
    /// Also set the header on the response to the client. Default false.
    pub echo_downstream: bool,
}

impl Default for CorrelationId {
    fn default() -> Self {
        CorrelationId { header_name: "X-Request-ID".into(), generator: IdGenerator::default(), echo_downstream: false }
    }
}

impl CorrelationId {
    /// Pushes every problem onto `errors`, under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        if !is_token(&self.header_name) {
            errors.push(format!("{path}.header_name"), format!("{:?} is not a valid header name", self.header_name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kongs_and_the_generators_have_kongs_names() {
        let c: CorrelationId = serde_json::from_str("{}").unwrap();
        assert_eq!(
            (c.header_name.as_str(), c.generator, c.echo_downstream),
            ("X-Request-ID", IdGenerator::UuidCounter, false)
        );
        let c: CorrelationId = serde_json::from_str(r#"{"generator":"uuid"}"#).unwrap();
        assert_eq!(c.generator, IdGenerator::Uuid);
        assert_eq!(serde_json::to_value(IdGenerator::UuidCounter).unwrap(), "uuid#counter");
        let e = serde_json::from_str::<CorrelationId>(r#"{"generator":"tracker"}"#).unwrap_err();
        assert!(e.to_string().contains("expected `uuid` or `uuid#counter`"), "{e}");
        let c: CorrelationId = serde_json::from_str(r#"{"header_name":"X Request"}"#).unwrap();
        let mut errors = Errors::default();
        c.validate("p", &mut errors);
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["p.header_name: \"X Request\" is not a valid header name"]
        );
    }
}
