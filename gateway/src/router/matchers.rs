//! Per-route request conditions other than host and path: the method filter
//! and the header filter, plus the "more conditions first" ordering key used
//! to break ties between routes that sit at the same place in a group.

use std::cmp::Reverse;

use http::{HeaderMap, HeaderName, Method};

use super::{RouteSpec, Schemes};

/// The compiled non-path, non-host conditions of one route.
#[derive(Debug)]
pub(crate) struct Conditions {
    /// The caller's route id, reported in [`super::Match::route`].
    pub(crate) id: usize,
    /// Position of the route in the slice given to `Router::new`; a final
    /// tie-breaker so ordering is total even if ids repeat.
    pub(crate) pos: usize,
    /// Accepted methods; empty accepts any.
    methods: Box<[Method]>,
    /// Required headers with their accepted values, lower-cased.
    headers: Box<[HeaderRule]>,
    schemes: Schemes,
}

/// One header condition: the header must be present with one of `values`.
#[derive(Debug)]
struct HeaderRule {
    name: HeaderName,
    /// Accepted values, ASCII lower-cased; empty means presence is enough.
    values: Box<[Box<[u8]>]>,
}

/// Sort key of rule 3: more header conditions first, then routes that
/// restrict methods, then lowest id, then lowest position.
pub(crate) type TieKey = (Reverse<usize>, Reverse<bool>, usize, usize);

impl Conditions {
    /// Compiles the conditions of `spec`, which sits at `pos` in the input.
    pub(crate) fn new(spec: &RouteSpec, pos: usize) -> Self {
        let headers = spec
            .headers
            .iter()
            .map(|(name, values)| HeaderRule {
                name: name.clone(),
                values: values.iter().map(|v| v.to_ascii_lowercase().into_bytes().into_boxed_slice()).collect(),
            })
            .collect();
        let methods = spec.methods.clone().into_boxed_slice();
        Conditions { id: spec.id, pos, methods, headers, schemes: spec.schemes }
    }

    /// The rule-3 ordering key of this route.
    pub(crate) fn tie_key(&self) -> TieKey {
        (Reverse(self.headers.len()), Reverse(!self.methods.is_empty()), self.id, self.pos)
    }

    /// Whether the request's method and headers satisfy this route.
    #[inline]
    pub(crate) fn accepts(&self, method: &Method, headers: &HeaderMap) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|rule| rule.accepts(headers))
    }

    /// Whether this route serves requests of the scheme (`https` or plain HTTP).
    #[inline]
    pub(crate) fn serves(&self, https: bool) -> bool {
        if https {
            self.schemes.https
        } else {
            self.schemes.http
        }
    }
}

impl HeaderRule {
    /// Any occurrence of the header whose value equals one of the accepted
    /// values, ignoring ASCII case.
    fn accepts(&self, headers: &HeaderMap) -> bool {
        let mut present = headers.get_all(&self.name).iter().peekable();
        if self.values.is_empty() {
            return present.peek().is_some();
        }
        present.any(|value| {
            let value = value.as_bytes();
            self.values.iter().any(|want| want.eq_ignore_ascii_case(value))
        })
    }
}
