//! `traffic-split`: sends a route's requests to other upstreams by rule and by weight, for
//! canary and blue-green releases (APISIX's plugin of the same name).
//!
//! The first rule whose conditions all hold decides; one of its destinations is picked by
//! weight, and its name goes in [`Ctx::upstream`], which the proxy resolves to the runtime's
//! upstream and forwards to with the service's settings. A destination without an upstream,
//! and a request no rule holds for, leave the service's own destination.
//!
//! **The pick** takes no lock and no random number: each rule counts its requests (one relaxed
//! atomic add), and the `n`th request falls at `frac(n / φ)` of the rule's total weight, the
//! golden-ratio sequence, whose first `n` points spread over `[0, 1)` more evenly than any
//! random draw would. The shares are therefore exact to a request or two from the first requests
//! on, on every node, however the requests interleave across threads; and, unlike plain round
//! robin over the weights, destinations are mixed rather than sent in runs as long as their
//! weights. A new config starts the count again.

use super::pipeline::{Access, Ctx, Flow, Plugin};
use crate::exchange::query;
use config_sync::model::SplitRule;
use http::{request, HeaderName};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A compiled `traffic-split` config.
pub(crate) struct TrafficSplit {
    rules: Box<[Rule]>,
}

/// One rule: its conditions, and where its requests go.
struct Rule {
    /// Header name and the exact value one of its values must have.
    headers: Box<[(HeaderName, Box<[u8]>)]>,
    /// Query argument name and the exact decoded value one of its values must have.
    query: Box<[(String, String)]>,
    split: Split,
}

/// Where a rule's requests go: destinations of weight above zero, each with the end of its
/// share of `[0, total)`, shares in config order.
struct Split {
    shares: Box<[(u64, Option<Arc<str>>)]>,
    total: u64,
    /// Requests the rule has sent: the position in the sequence of the next one.
    turn: AtomicU64,
}

impl TrafficSplit {
    pub(crate) fn new(config: &config_sync::model::TrafficSplit) -> TrafficSplit {
        TrafficSplit { rules: config.rules.iter().map(Rule::new).collect() }
    }

    /// The rule that decides for `request`, if one holds.
    fn rule(&self, request: &request::Parts) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.holds(request))
    }
}

impl Rule {
    fn new(config: &SplitRule) -> Rule {
        let conditions = config.matches.as_ref();
        let headers = conditions.into_iter().flat_map(|m| &m.headers);
        // Names were validated as HTTP tokens, which `HeaderName` accepts (lower-casing them).
        let headers = headers
            .filter_map(|(name, value)| Some((HeaderName::from_bytes(name.as_bytes()).ok()?, value.as_bytes().into())));
        let query = conditions.into_iter().flat_map(|m| &m.query).map(|(n, v)| (n.clone(), v.clone()));
        let mut total = 0u64;
        let mut shares = Vec::with_capacity(config.weighted_upstreams.len());
        for entry in config.weighted_upstreams.iter().filter(|e| e.weight > 0) {
            total += u64::from(entry.weight);
            shares.push((total, entry.upstream.as_deref().map(Arc::from)));
        }
        let split = Split { shares: shares.into(), total, turn: AtomicU64::new(0) };
        Rule { headers: headers.collect(), query: query.collect(), split }
    }

    /// Whether every condition holds for `request`.
    fn holds(&self, request: &request::Parts) -> bool {
        let header = |(name, value): &(HeaderName, Box<[u8]>)| {
            request.headers.get_all(name).iter().any(|v| v.as_bytes() == &**value)
        };
        let argument = |(name, value): &(String, String)| query::values(&request.uri, name).any(|v| v == *value);
        self.headers.iter().all(header) && self.query.iter().all(argument)
    }
}

/// 2^64 / φ: stepping by it around 2^64 is the golden-ratio sequence.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Split {
    /// The destination of the rule's next request: an upstream's name, or None for the
    /// service's own destination.
    fn pick(&self) -> Option<&Arc<str>> {
        let at = match self.shares.len() {
            // One destination (validation leaves none empty): no count to keep.
            0 | 1 => 0,
            _ => self.at(self.turn.fetch_add(1, Ordering::Relaxed)),
        };
        self.destination(at)
    }

    /// Where the `turn`th request falls in `[0, total)`.
    fn at(&self, turn: u64) -> u64 {
        ((u128::from(turn.wrapping_mul(GOLDEN)) * u128::from(self.total)) >> 64) as u64
    }

    /// The destination whose share holds `at`.
    fn destination(&self, at: u64) -> Option<&Arc<str>> {
        self.shares.iter().find(|(end, _)| at < *end).and_then(|(_, upstream)| upstream.as_ref())
    }
}

impl Plugin for TrafficSplit {
    fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
        let upstream = self.rule(ctx.request).and_then(|rule| rule.split.pick());
        ctx.metrics.traffic_split(upstream);
        ctx.upstream = upstream.cloned();
        Access::Ready(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::run;
    use http::Request;
    use std::collections::BTreeMap;

    fn split(json: serde_json::Value) -> TrafficSplit {
        let config: config_sync::model::TrafficSplit = serde_json::from_value(json).unwrap();
        TrafficSplit::new(&config)
    }

    /// Where `request` goes: the upstream's name, or "" for the service's own destination.
    fn destination(plugin: &TrafficSplit, request: Request<()>) -> String {
        let run = run(plugin, request, [127, 0, 0, 1].into());
        run.upstream.as_deref().unwrap_or_default().to_owned()
    }

    fn get(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut request = Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap()
    }

    #[test]
    fn the_first_rule_that_holds_decides_and_no_rule_leaves_the_service() {
        let plugin = split(serde_json::json!({"rules": [
            {"match": {"headers": {"X-Canary": "1", "x-team": "blue"}}, "weighted_upstreams": [{"upstream": "v2"}]},
            {"match": {"query": {"beta": "yes please"}}, "weighted_upstreams": [{"upstream": "beta"}]},
            {"match": {"headers": {"x-canary": "1"}}, "weighted_upstreams": [{"upstream": "v3"}]},
        ]}));
        let both = [("x-canary", "1"), ("x-team", "blue")];
        assert_eq!(destination(&plugin, get("/", &both)), "v2", "header names in any case");
        assert_eq!(destination(&plugin, get("/", &[("x-canary", "1")])), "v3", "all of a rule's conditions must hold");
        assert_eq!(destination(&plugin, get("/", &[("x-canary", "1"), ("x-team", "Blue")])), "v3", "values exact");
        let repeated = get("/", &[("x-canary", "1"), ("x-team", "green"), ("x-team", "blue")]);
        assert_eq!(destination(&plugin, repeated), "v2", "one of a repeated header's values");
        assert_eq!(destination(&plugin, get("/?a=1&beta=yes+please", &[])), "beta", "query values decoded");
        assert_eq!(destination(&plugin, get("/?beta=yes%20please", &both)), "v2", "earlier rules first");
        assert_eq!(destination(&plugin, get("/?beta=yes", &[("x-canary", "2")])), "", "no rule: the service");
        assert_eq!(destination(&plugin, get("/?betax=yes+please", &[])), "");
    }

    #[test]
    fn an_entry_without_an_upstream_is_the_service_and_a_zero_weight_gets_nothing() {
        let plugin = split(serde_json::json!({"rules": [
            {"weighted_upstreams": [{"upstream": "blue", "weight": 0}, {"weight": 100}]},
        ]}));
        for _ in 0..50 {
            assert_eq!(destination(&plugin, get("/", &[])), "");
        }
        let plugin = split(serde_json::json!({"rules": [
            {"weighted_upstreams": [{"upstream": "blue", "weight": 0}, {"upstream": "green", "weight": 1}]},
        ]}));
        for _ in 0..50 {
            assert_eq!(destination(&plugin, get("/", &[])), "green");
        }
    }

    /// How many of `n` picks go where, by destination ("" for the service).
    fn shares(weights: &[(Option<&str>, u32)], n: usize) -> BTreeMap<String, usize> {
        let entries: Vec<_> = weights.iter().map(|(u, w)| serde_json::json!({"upstream": u, "weight": w})).collect();
        let plugin = split(serde_json::json!({"rules": [{"weighted_upstreams": entries}]}));
        let rule = &plugin.rules[0];
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let to = rule.split.pick().map_or(String::new(), |u| u.to_string());
            *counts.entry(to).or_default() += 1;
        }
        counts
    }

    #[test]
    fn picks_follow_the_weights_closely_from_the_first_requests() {
        let cases: [&[(Option<&str>, u32)]; 5] = [
            &[(Some("a"), 20), (Some("b"), 80)],
            &[(Some("v2"), 10), (None, 90)],
            &[(Some("a"), 1), (Some("b"), 2), (Some("c"), 7)],
            &[(Some("a"), 1), (Some("b"), 1)],
            &[(Some("a"), 3), (Some("b"), 65_535), (Some("c"), 1)],
        ];
        for weights in cases {
            let total: u32 = weights.iter().map(|(_, w)| w).sum();
            for n in [10, 100, 1_000, 3_000, 100_000] {
                let counts = shares(weights, n);
                for (upstream, weight) in weights {
                    let got = counts.get(upstream.unwrap_or_default()).copied().unwrap_or(0);
                    let expected = n as f64 * f64::from(*weight) / f64::from(total);
                    assert!(
                        (got as f64 - expected).abs() <= 2.0,
                        "{weights:?} over {n}: {upstream:?} got {got}, expected {expected:.1}"
                    );
                }
            }
        }
    }

    #[test]
    fn destinations_are_mixed_rather_than_sent_in_runs_of_their_weight() {
        let counts = shares(&[(Some("a"), 50), (Some("b"), 50)], 2);
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), [1, 1]);
        let plugin = split(serde_json::json!({"rules": [{"weighted_upstreams": [
            {"upstream": "a", "weight": 10}, {"upstream": "b", "weight": 30},
        ]}]}));
        let picks: String = (0..12).map(|_| plugin.rules[0].split.pick().map_or("-", |u| &**u).to_owned()).collect();
        assert_eq!(picks, "ababbabbbbab", "not ten a then thirty b");
    }

    #[test]
    fn requests_are_counted_by_route_and_destination() {
        let plugin = split(serde_json::json!({"rules": [
            {"match": {"headers": {"x-canary": "1"}}, "weighted_upstreams": [{"upstream": "v2"}]},
        ]}));
        let metrics = crate::telemetry::Metrics::new();
        let route = metrics.route(&crate::telemetry::Name("s".into()), &crate::telemetry::Name("r".into()));
        let (mut parts, ()) = get("/", &[("x-canary", "1")]).into_parts();
        let client = crate::exchange::ClientInfo::new(([127, 0, 0, 1], 1).into(), 80);
        for _ in 0..3 {
            let mut ctx = Ctx::new(&mut parts, &client, ("r", "s"), (None, "/"), &route);
            let _ = plugin.access(&mut ctx);
        }
        parts.headers.clear();
        let mut ctx = Ctx::new(&mut parts, &client, ("r", "s"), (None, "/"), &route);
        let _ = plugin.access(&mut ctx);
        let text = metrics.render();
        assert!(text.contains(r#"gateway_traffic_split_total{route="r",upstream="v2"} 3"#), "{text}");
        assert!(text.contains(r#"gateway_traffic_split_total{route="r",upstream="(service)"} 1"#), "{text}");
    }
}
