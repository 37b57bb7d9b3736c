//! The `traffic-split` plugin's config: APISIX's plugin, with its field names where they fit.
//!
//! `rules` are tried in order, and the first whose `match` holds decides where the request goes:
//! one of its `weighted_upstreams`, picked by weight. An entry without `upstream` stands for the
//! service's own destination, and so does a request no rule holds for. A `match` is one set of
//! conditions that must all hold (each header and each query argument, values exact); the
//! alternatives APISIX writes as several `match` entries are written here as several rules.
//!
//! Upstreams are named, not numbered: an `upstream` that names no configured upstream is a
//! dangling reference ([`crate::Config::dangling`]), and the entity carrying the plugin is left
//! out, as a route naming an unknown service is.

use super::auth::is_token;
use crate::validate::Errors;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The `traffic-split` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrafficSplit {
    /// Tried in order; the first whose `match` holds decides. At least one.
    pub rules: Vec<SplitRule>,
}

/// One rule: which requests, and where they go.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitRule {
    /// What a request must carry for the rule to hold. Default none: every request.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<SplitMatch>,
    /// Where the rule's requests go, one entry picked per request by weight. At least one, and
    /// not every weight zero.
    #[serde(default)]
    pub weighted_upstreams: Vec<WeightedUpstream>,
}

/// Conditions on a request, all of which must hold. Empty: every request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SplitMatch {
    /// Header name (any case) to the exact value the request must carry in it (one of its
    /// values, when it is sent more than once).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Query argument name to the exact value, percent-decoded, the request must carry.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
}

/// One destination of a rule, and its share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedUpstream {
    /// The upstream's name. None: the service's own destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Its share: this weight over the sum of the rule's weights. Default 1, as in APISIX; 0
    /// sends it nothing.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// What `match` reads, before it is a [`SplitMatch`].
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MatchFields {
    headers: BTreeMap<String, String>,
    query: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for SplitMatch {
    /// A mapping, as derived; a list (APISIX's `match: [{vars: ...}]`) is refused with what to
    /// write instead, rather than with serde's puzzling "expected a string".
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SplitMatch, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = SplitMatch;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of `headers` and `query`")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SplitMatch, A::Error> {
                let MatchFields { headers, query } = MatchFields::deserialize(MapAccessDeserializer::new(map))?;
                Ok(SplitMatch { headers, query })
            }

            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<SplitMatch, A::Error> {
                Err(A::Error::custom(
                    "must be one mapping of `headers` and `query`, all of which must hold; write alternatives \
                     (APISIX's list of `vars`) as rules of their own",
                ))
            }
        }
        deserializer.deserialize_any(Fields)
    }
}

impl TrafficSplit {
    /// Pushes every problem onto `errors`, under `path`. Whether the upstreams exist is checked
    /// with the rest of the config ([`crate::Config::dangling`]).
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        if self.rules.is_empty() {
            errors.push(format!("{path}.rules"), "needs at least one rule");
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("{path}.rules[{i}]");
            if let Some(matches) = &rule.matches {
                matches.validate(&format!("{at}.match"), errors);
            }
            let upstreams = format!("{at}.weighted_upstreams");
            if rule.weighted_upstreams.is_empty() {
                errors.push(
                    upstreams,
                    "needs at least one entry: an upstream and its weight, or a weight alone for the service's own \
                     destination",
                );
            } else if rule.weighted_upstreams.iter().all(|w| w.weight == 0) {
                errors.push(upstreams, "the weights are all zero: the rule's requests could go nowhere");
            }
            for (j, entry) in rule.weighted_upstreams.iter().enumerate() {
                if entry.upstream.as_deref() == Some("") {
                    errors.push(
                        format!("{at}.weighted_upstreams[{j}].upstream"),
                        "must name an upstream; leave it out for the service's own destination",
                    );
                }
            }
        }
    }

    /// Every upstream named, with the path of the field that names it (after the plugin's own:
    /// `rules[0].weighted_upstreams[1].upstream`).
    pub fn upstreams(&self) -> impl Iterator<Item = (String, &str)> {
        self.rules.iter().enumerate().flat_map(|(i, rule)| {
            rule.weighted_upstreams.iter().enumerate().filter_map(move |(j, entry)| {
                let name = entry.upstream.as_deref()?;
                Some((format!("rules[{i}].weighted_upstreams[{j}].upstream"), name))
            })
        })
    }
}

impl SplitMatch {
    fn validate(&self, path: &str, errors: &mut Errors) {
        for (name, value) in &self.headers {
            let at = format!("{path}.headers.{name}");
            if !is_token(name) {
                errors.push(at, format!("{name:?} is not a valid header name"));
            } else if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                errors.push(at, "not a valid header value: it has control characters");
            }
        }
        if self.query.contains_key("") {
            errors.push(format!("{path}.query"), "a query argument's name must not be empty");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(json: serde_json::Value) -> Vec<String> {
        let config: TrafficSplit = serde_json::from_value(json).unwrap();
        let mut errors = Errors::default();
        config.validate("p", &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_canary_and_a_weighted_rule_read_as_written() {
        let json = serde_json::json!({"rules": [
            {"match": {"headers": {"X-Canary": "1"}, "query": {"beta": "yes"}},
             "weighted_upstreams": [{"upstream": "orders-v2", "weight": 1}]},
            {"weighted_upstreams": [{"upstream": "orders-v2", "weight": 10}, {"weight": 90}, {"upstream": "x"}]},
        ]});
        let split: TrafficSplit = serde_json::from_value(json.clone()).unwrap();
        let rule = &split.rules[0];
        let matches = rule.matches.as_ref().unwrap();
        assert_eq!((matches.headers["X-Canary"].as_str(), matches.query["beta"].as_str()), ("1", "yes"));
        assert_eq!(split.rules[1].weighted_upstreams[1], WeightedUpstream { upstream: None, weight: 90 });
        assert_eq!(split.rules[1].weighted_upstreams[2].weight, 1, "APISIX's default weight");
        assert!(errors_of(json).is_empty());
        let named: Vec<_> = split.upstreams().collect();
        assert_eq!(
            named,
            [
                ("rules[0].weighted_upstreams[0].upstream".to_owned(), "orders-v2"),
                ("rules[1].weighted_upstreams[0].upstream".to_owned(), "orders-v2"),
                ("rules[1].weighted_upstreams[2].upstream".to_owned(), "x"),
            ]
        );
        let again: TrafficSplit = serde_json::from_value(serde_json::to_value(&split).unwrap()).unwrap();
        assert_eq!(again, split);
    }

    #[test]
    fn no_rules_an_empty_rule_and_all_zero_weights_are_refused() {
        assert_eq!(errors_of(serde_json::json!({})), ["p.rules: needs at least one rule"]);
        assert_eq!(errors_of(serde_json::json!({"rules": []})), ["p.rules: needs at least one rule"]);
        let got = errors_of(serde_json::json!({"rules": [
            {"match": {"headers": {"x-a": "1"}}},
            {"weighted_upstreams": []},
            {"weighted_upstreams": [{"upstream": "a", "weight": 0}, {"weight": 0}]},
            {"weighted_upstreams": [{"upstream": "", "weight": 5}]},
        ]}));
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].starts_with("p.rules[0].weighted_upstreams: needs at least one entry"), "{got:?}");
        assert!(got[1].starts_with("p.rules[1].weighted_upstreams: needs at least one entry"), "{got:?}");
        assert_eq!(
            got[2],
            "p.rules[2].weighted_upstreams: the weights are all zero: the rule's requests could go nowhere"
        );
        assert!(got[3].starts_with("p.rules[3].weighted_upstreams[0].upstream: must name an upstream"), "{got:?}");
    }

    #[test]
    fn bad_header_names_and_values_are_refused_with_their_path() {
        let got = errors_of(serde_json::json!({"rules": [{
            "match": {"headers": {"x canary": "1", "x-ok": "a\nb", "": "z"}, "query": {"": "1"}},
            "weighted_upstreams": [{"upstream": "a"}],
        }]}));
        assert_eq!(
            got,
            [
                "p.rules[0].match.headers.: \"\" is not a valid header name",
                "p.rules[0].match.headers.x canary: \"x canary\" is not a valid header name",
                "p.rules[0].match.headers.x-ok: not a valid header value: it has control characters",
                "p.rules[0].match.query: a query argument's name must not be empty",
            ]
        );
    }

    #[test]
    fn unknown_fields_and_apisix_only_shapes_are_refused() {
        let e = serde_json::from_value::<TrafficSplit>(
            serde_json::json!({"rules": [{"weighted_upstreams": [{"upstream_id": 1}]}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `upstream_id`"), "{e}");
        let e = serde_json::from_value::<TrafficSplit>(
            serde_json::json!({"rules": [{"match": [{"vars": []}], "weighted_upstreams": []}]}),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("must be one mapping of `headers` and `query`"), "{e}");
        let value = serde_json::json!({"rules": [{"match": {"headers": {"x": 1}}}]});
        let e = crate::validate::from_value::<TrafficSplit>(value, "p").unwrap_err();
        assert_eq!(e.path, "p.rules[0].match.headers.x", "the path reaches inside `match`");
        let value = serde_json::json!({"rules": [{"match": {"vars": []}}]});
        let e = crate::validate::from_value::<TrafficSplit>(value, "p").unwrap_err();
        assert!(e.message.contains("unknown field `vars`"), "{e}");
    }
}
