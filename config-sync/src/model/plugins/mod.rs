//! Plugin configs, with Kong's field names and defaults, and the one table of the plugins this
//! build knows ([`PluginConfig`]).
//!
//! A plugin is set on a route, a service, a consumer, or globally; for each plugin name the most
//! specific one wins. `plugins` is a map from plugin name to config: a name not in the table, or
//! a bad field, is an error with its path (`routes/orders.plugins.key-auth.key_names[0]`). This
//! module only holds and checks configs; the gateway runs them.
//!
//! Adding a plugin: its config type in a file here, with `validate`, and one line in the
//! `plugins!` table below; then its code in the gateway's plugin registry.

mod auth;
mod correlation_id;
mod cors;
mod http_log;
mod ip_restriction;
mod proxy_cache;
mod rate_limiting;
mod request_size_limiting;
mod request_transformer;
mod response_transformer;
mod traffic_split;
mod transformers;

pub use auth::{Acl, BasicAuth, Claim, Jwt, KeyAuth};
pub use correlation_id::{CorrelationId, IdGenerator};
pub use cors::{exact_origin, Cors, DEFAULT_CORS_METHODS};
pub use http_log::{redact_secrets, Endpoint, HttpLog, LogMethod, LogQueue};
pub use ip_restriction::{parse_ip_or_cidr, IpRestriction};
pub use proxy_cache::{CacheStrategy, ProxyCache};
pub use rate_limiting::{LimitBy, RateLimitPolicy, RateLimitWindow, RateLimiting};
pub use request_size_limiting::{RequestSizeLimiting, SizeUnit};
pub use request_transformer::{RequestEntries, RequestReplace, RequestTransformer};
pub use response_transformer::{JsonType, ResponseEntries, ResponseNames, ResponseTransformer};
pub use traffic_split::{SplitMatch, SplitRule, TrafficSplit, WeightedUpstream};
pub use transformers::{has_template, parse_template, split_entry, TemplatePiece};

use crate::validate::Errors;
use serde::de::{DeserializeSeed, Error as _, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// Declares [`PluginConfig`]: one variant per plugin, with its name as written in config.
macro_rules! plugins {
    ($($name:literal => $variant:ident($config:ty)),+ $(,)?) => {
        /// One plugin's config; the variant says which plugin.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum PluginConfig {
            $(#[doc = concat!("`", $name, "`.")] $variant($config),)+
        }

        impl PluginConfig {
            /// The plugin names this build knows, as written in config.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The plugin's name, as written in config.
            pub fn name(&self) -> &'static str {
                match self {
                    $(PluginConfig::$variant(_) => $name,)+
                }
            }

            /// Pushes every problem onto `errors`, under `path`.
            pub fn validate(&self, path: &str, errors: &mut Errors) {
                match self {
                    $(PluginConfig::$variant(config) => config.validate(path, errors),)+
                }
            }

            fn serialize_config<S: SerializeMap>(&self, map: &mut S) -> Result<(), S::Error> {
                match self {
                    $(PluginConfig::$variant(config) => map.serialize_entry($name, config),)+
                }
            }

            /// Reads the config of the plugin named `name`; None for a name not in the table.
            fn deserialize_named<'de, D: Deserializer<'de>>(name: &str, d: D) -> Result<Option<Self>, D::Error> {
                match name {
                    $($name => <$config>::deserialize(d).map(PluginConfig::$variant).map(Some),)+
                    _ => Ok(None),
                }
            }
        }
    };
}

plugins! {
    "key-auth" => KeyAuth(KeyAuth),
    "basic-auth" => BasicAuth(BasicAuth),
    "jwt" => Jwt(Jwt),
    "acl" => Acl(Acl),
    "rate-limiting" => RateLimiting(RateLimiting),
    "proxy-cache" => ProxyCache(ProxyCache),
    "cors" => Cors(Cors),
    "ip-restriction" => IpRestriction(IpRestriction),
    "correlation-id" => CorrelationId(CorrelationId),
    "http-log" => HttpLog(HttpLog),
    "request-size-limiting" => RequestSizeLimiting(RequestSizeLimiting),
    "traffic-split" => TrafficSplit(TrafficSplit),
    "request-transformer" => RequestTransformer(RequestTransformer),
    "response-transformer" => ResponseTransformer(ResponseTransformer),
}

/// The plugins that tell who a caller is or check it: Kong does not let a consumer carry them.
const NOT_ON_CONSUMERS: [&str; 4] = ["key-auth", "basic-auth", "jwt", "acl"];

/// The plugins that run before any auth plugin (see the gateway's order), so before the consumer
/// is known: a consumer's config of them could never apply. Kong refuses `cors` and
/// `correlation-id` on consumers too; its `ip-restriction` runs after authentication, this one
/// before (the contract's order), so it is refused as well rather than silently ignored.
const BEFORE_IDENTIFICATION: [&str; 3] = ["correlation-id", "ip-restriction", "cors"];

/// The plugins set on one entity (or globally), by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plugins(BTreeMap<&'static str, PluginConfig>);

impl Plugins {
    /// Whether no plugin is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The config of the plugin named `name`, if set.
    pub fn get(&self, name: &str) -> Option<&PluginConfig> {
        self.0.get(name)
    }

    /// Every plugin set, by name.
    pub fn iter(&self) -> impl Iterator<Item = &PluginConfig> {
        self.0.values()
    }

    /// Sets a plugin, replacing any config of the same plugin.
    pub fn insert(&mut self, config: PluginConfig) {
        self.0.insert(config.name(), config);
    }

    /// Removes the plugin named `name`, if set.
    pub fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }

    /// Every upstream a plugin names (`traffic-split`), with the path of the field that names
    /// it, after the plugins' own path: `traffic-split.rules[0].weighted_upstreams[1].upstream`.
    pub fn upstreams(&self) -> impl Iterator<Item = (String, &str)> {
        self.0.values().flat_map(|config| {
            let named = match config {
                PluginConfig::TrafficSplit(split) => Some(split.upstreams()),
                _ => None,
            };
            named.into_iter().flatten().map(move |(field, name)| (format!("{}.{field}", config.name()), name))
        })
    }

    /// Each plugin of `self`, or else of `fallback`: a route's plugins over its service's.
    pub fn or(&self, fallback: &Plugins) -> Plugins {
        let mut merged = fallback.clone();
        merged.0.extend(self.0.iter().map(|(name, config)| (*name, config.clone())));
        merged
    }

    /// Pushes every problem onto `errors`, under `path` (`routes/<name>.plugins`).
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        for (name, config) in &self.0 {
            config.validate(&format!("{path}.{name}"), errors);
        }
    }

    /// As [`Plugins::validate`], for the plugins of a consumer, which may not authenticate.
    pub fn validate_on_consumer(&self, path: &str, errors: &mut Errors) {
        self.validate(path, errors);
        for name in self.0.keys().filter(|name| NOT_ON_CONSUMERS.contains(name)) {
            errors.push(format!("{path}.{name}"), "cannot be set on a consumer: it decides who the consumer is");
        }
        for name in self.0.keys().filter(|name| BEFORE_IDENTIFICATION.contains(name)) {
            errors.push(format!("{path}.{name}"), "cannot be set on a consumer: it runs before the consumer is known");
        }
    }
}

impl FromIterator<PluginConfig> for Plugins {
    fn from_iter<I: IntoIterator<Item = PluginConfig>>(iter: I) -> Self {
        Plugins(iter.into_iter().map(|config| (config.name(), config)).collect())
    }
}

impl Serialize for Plugins {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for config in self.0.values() {
            config.serialize_config(&mut map)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Plugins {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(PluginsVisitor)
    }
}

struct PluginsVisitor;

impl<'de> Visitor<'de> for PluginsVisitor {
    type Value = Plugins;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of plugin name to config")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Plugins, A::Error> {
        let mut plugins = Plugins::default();
        while let Some(name) = map.next_key::<String>()? {
            // Read through a seed, so that an error inside the config carries its path.
            let config = map.next_value_seed(Named(&name))?;
            if plugins.0.contains_key(config.name()) {
                return Err(A::Error::custom(format!("plugin `{name}` is set twice")));
            }
            plugins.insert(config);
        }
        Ok(plugins)
    }
}

/// Reads the config of one named plugin.
struct Named<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for Named<'_> {
    type Value = PluginConfig;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<PluginConfig, D::Error> {
        PluginConfig::deserialize_named(self.0, deserializer)?.ok_or_else(|| {
            D::Error::custom(format!("unknown plugin `{}`; known plugins: {}", self.0, PluginConfig::NAMES.join(", ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::from_value;

    #[test]
    fn unknown_plugins_are_refused_with_their_path() {
        let e = from_value::<Plugins>(serde_json::json!({"rate-limit": {}}), "routes/r.plugins").unwrap_err();
        assert_eq!(e.path, "routes/r.plugins.rate-limit");
        assert!(e.message.starts_with("unknown plugin `rate-limit`; known plugins: key-auth,"), "{}", e.message);
    }

    #[test]
    fn a_bad_field_carries_its_path() {
        let value = serde_json::json!({"key-auth": {"key_names": "apikey"}});
        let e = from_value::<Plugins>(value, "routes/r.plugins").unwrap_err();
        assert_eq!(e.path, "routes/r.plugins.key-auth.key_names");
        let value = serde_json::json!({"rate-limiting": {"minute": 1, "colour": "blue"}});
        let e = from_value::<Plugins>(value, "plugins").unwrap_err();
        assert!(e.message.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn plugins_round_trip_as_a_map_by_name() {
        let value = serde_json::json!({"proxy-cache": {"cache_ttl": 30}, "key-auth": {"hide_credentials": true}});
        let plugins: Plugins = serde_json::from_value(value).unwrap();
        assert_eq!(plugins.iter().map(PluginConfig::name).collect::<Vec<_>>(), ["key-auth", "proxy-cache"]);
        let again: Plugins = serde_json::from_value(serde_json::to_value(&plugins).unwrap()).unwrap();
        assert_eq!(again, plugins);
    }

    #[test]
    fn rate_limiting_rules() {
        let rl: RateLimiting = serde_json::from_str(r#"{"second":10,"minute":5,"limit_by":"header"}"#).unwrap();
        assert_eq!(rl.window, RateLimitWindow::Sliding);
        assert!(rl.fault_tolerant);
        let mut errors = Errors::default();
        rl.validate("p", &mut errors);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["p.minute", "p.header_name"]);
        let mut errors = Errors::default();
        serde_json::from_str::<RateLimiting>("{}").unwrap().validate("p", &mut errors);
        assert_eq!(errors.len(), 1);
        let by: RateLimiting = serde_json::from_str(r#"{"minute":1,"limit_by":"consumer"}"#).unwrap();
        assert_eq!(by.limit_by, LimitBy::Consumer);
    }

    #[test]
    fn proxy_cache_defaults() {
        let pc: ProxyCache = serde_json::from_str(r#"{"cache_ttl":30}"#).unwrap();
        assert_eq!(pc.cache_ttl, std::time::Duration::from_secs(30));
        assert_eq!(pc.response_code, [200, 301, 404]);
        assert_eq!(pc.max_body_bytes, 1 << 20);
        assert!(!pc.cdn_cache_control);
        let mut errors = Errors::default();
        let cdn_alone: ProxyCache = serde_json::from_str(r#"{"cdn_cache_control":true}"#).unwrap();
        cdn_alone.validate("p", &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(format!("{errors:?}").contains("p.cdn_cache_control"), "{errors:?}");
        let mut errors = Errors::default();
        let both: ProxyCache = serde_json::from_str(r#"{"cdn_cache_control":true,"cache_control":true}"#).unwrap();
        both.validate("p", &mut errors);
        assert_eq!(errors.len(), 0, "{errors:?}");
    }

    #[test]
    fn route_plugins_win_over_service_plugins() {
        let route: Plugins = serde_json::from_str(r#"{"rate-limiting":{"minute":1}}"#).unwrap();
        let service: Plugins = serde_json::from_str(r#"{"rate-limiting":{"minute":9},"proxy-cache":{}}"#).unwrap();
        let merged = route.or(&service);
        match merged.get("rate-limiting") {
            Some(PluginConfig::RateLimiting(rl)) => assert_eq!(rl.minute, Some(1)),
            other => panic!("{other:?}"),
        }
        assert!(merged.get("proxy-cache").is_some());
    }

    #[test]
    fn consumers_may_not_carry_auth_plugins() {
        let plugins: Plugins = serde_json::from_str(r#"{"key-auth":{},"rate-limiting":{"minute":1}}"#).unwrap();
        let mut errors = Errors::default();
        plugins.validate_on_consumer("consumers/ann.plugins", &mut errors);
        let got: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(got, ["consumers/ann.plugins.key-auth"]);
    }

    #[test]
    fn consumers_may_not_carry_plugins_that_run_before_they_are_known() {
        let value = serde_json::json!({"cors": {}, "ip-restriction": {"deny": ["10.0.0.0/8"]}, "correlation-id": {}});
        let plugins: Plugins = serde_json::from_value(value).unwrap();
        let mut errors = Errors::default();
        plugins.validate_on_consumer("consumers/ann.plugins", &mut errors);
        let got: Vec<_> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "consumers/ann.plugins.correlation-id: cannot be set on a consumer: it runs before the consumer is known",
                "consumers/ann.plugins.cors: cannot be set on a consumer: it runs before the consumer is known",
                "consumers/ann.plugins.ip-restriction: cannot be set on a consumer: it runs before the consumer is known",
            ]
        );
    }

    #[test]
    fn a_bad_cidr_or_regex_in_a_route_config_carries_its_path() {
        let value = serde_json::json!({
            "ip-restriction": {"allow": ["10.0.0.0/8", "10.0.0/8"]},
            "cors": {"origins": ["~(unclosed"]},
        });
        let plugins = from_value::<Plugins>(value, "routes/r.plugins").unwrap();
        let mut errors = Errors::default();
        plugins.validate("routes/r.plugins", &mut errors);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["routes/r.plugins.cors.origins[0]", "routes/r.plugins.ip-restriction.allow[1]"]);
    }
}
