//! `cors`: answers CORS preflights itself and adds the `Access-Control-Allow-*` headers to
//! every other answer, as Kong's plugin does.
//!
//! Origins are compiled once per snapshot: exact ones (normalized as Kong does), `*`, and the
//! `~regex` ones joined into one regex anchored on the whole origin. Where the answer depends on
//! the request's origin (a list of origins, or credentials with any origin), it carries
//! `Vary: Origin` so that a cache keeps one answer per origin.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered 204,
//! without contacting the upstream; one from an origin that is not allowed, or asking for a
//! method not in `methods`, is refused 403 with a message saying which (Kong answers those 200
//! without CORS headers, which a browser refuses too, less legibly). With `preflight_continue`
//! preflights go to the upstream, and this plugin leaves their answer alone.

use super::pipeline::{Access, BodyFilter, Ctx, Flow, Plugin, Refusal};
use bytes::Bytes;
use config_sync::model::exact_origin;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{response, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use regex::Regex;

static REQUEST_PRIVATE_NETWORK: HeaderName = HeaderName::from_static("access-control-request-private-network");
static ALLOW_PRIVATE_NETWORK: HeaderName = HeaderName::from_static("access-control-allow-private-network");

/// A compiled `cors` config.
pub(crate) struct Cors {
    origins: Origins,
    credentials: bool,
    /// `methods`, as a preflight's requested method is compared with them.
    methods: Vec<String>,
    allow_methods: HeaderValue,
    /// `headers` joined; None: echo the preflight's `Access-Control-Request-Headers`.
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    preflight_continue: bool,
    private_network: bool,
}

/// Which origins are allowed.
enum Origins {
    /// Any: no origins configured, or `*` among them.
    Any,
    /// Those listed: exact (lower case, normalized), and the regex ones as one regex.
    Listed { exact: Vec<String>, regex: Option<Regex> },
}

/// What the access phase tells the response phase.
enum Kept {
    /// A preflight: answered here, refused, or passed on whole; the response is left alone.
    Preflight,
    /// The request's `Origin`, as the client sent it (a later plugin may change the request).
    Origin(HeaderValue),
}

/// The CORS headers an answer gets for an origin.
struct Decision {
    /// `Access-Control-Allow-Origin`; None: the origin is not allowed.
    allow_origin: Option<HeaderValue>,
    /// `Access-Control-Allow-Credentials: true`.
    credentials: bool,
    /// `Vary: Origin`: the answer depends on the origin.
    vary: bool,
}

impl Cors {
    pub(crate) fn new(config: &config_sync::model::Cors) -> Cors {
        let origins = if config.origins.is_empty() || config.origins.iter().any(|o| o == "*") {
            Origins::Any
        } else {
            // Validated: every regex compiles.
            let regex = config.origin_regex().and_then(Result::ok);
            Origins::Listed { exact: config.exact_origins().collect(), regex }
        };
        let joined = |list: &[String]| (!list.is_empty()).then(|| HeaderValue::try_from(list.join(",")).ok()).flatten();
        Cors {
            origins,
            credentials: config.credentials,
            methods: config.methods.clone(),
            allow_methods: joined(&config.methods).unwrap_or(HeaderValue::from_static("")),
            allow_headers: joined(&config.headers),
            expose_headers: joined(&config.exposed_headers),
            max_age: config.max_age.map(HeaderValue::from),
            preflight_continue: config.preflight_continue,
            private_network: config.private_network,
        }
    }

    /// Whether a listed origin allows `origin`.
    fn listed(exact: &[String], regex: Option<&Regex>, origin: &str) -> bool {
        exact.iter().any(|e| e.eq_ignore_ascii_case(origin))
            || regex.is_some_and(|r| r.is_match(origin))
            // A client that wrote a default port or a trailing slash (browsers never do).
            || exact_origin(origin).is_some_and(|o| exact.contains(&o))
    }

    /// The CORS headers for a request from `origin` (None: no `Origin` header).
    fn decide(&self, origin: Option<&HeaderValue>) -> Decision {
        match (&self.origins, origin) {
            // Browsers refuse `*` with credentials: the origin is echoed instead.
            (Origins::Any, Some(origin)) if self.credentials => {
                Decision { allow_origin: Some(origin.clone()), credentials: true, vary: true }
            }
            (Origins::Any, _) => Decision {
                allow_origin: Some(HeaderValue::from_static("*")),
                credentials: false,
                vary: self.credentials,
            },
            (Origins::Listed { exact, regex }, Some(origin)) => {
                let allowed = origin.to_str().is_ok_and(|o| Cors::listed(exact, regex.as_ref(), o));
                Decision {
                    allow_origin: allowed.then(|| origin.clone()),
                    credentials: allowed && self.credentials,
                    vary: true,
                }
            }
            (Origins::Listed { .. }, None) => Decision { allow_origin: None, credentials: false, vary: true },
        }
    }

    /// The answer to a preflight from `origin`.
    fn preflight(&self, ctx: &Ctx<'_>, origin: &HeaderValue, method: &HeaderValue) -> Flow {
        let decision = self.decide(Some(origin));
        let mut headers = HeaderMap::new();
        if decision.vary {
            headers.insert(VARY, HeaderValue::from_static("Origin"));
        }
        let Some(allow_origin) = decision.allow_origin else {
            return refused("CORS preflight refused: origin not allowed", headers);
        };
        if !self.methods.iter().any(|m| m.as_bytes() == method.as_bytes()) {
            return refused("CORS preflight refused: method not allowed", headers);
        }
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if decision.credentials {
            headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        let request = &ctx.request.headers;
        let allow_headers = self.allow_headers.as_ref().or_else(|| request.get(ACCESS_CONTROL_REQUEST_HEADERS));
        if let Some(allow_headers) = allow_headers {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow_headers.clone());
        }
        if let Some(max_age) = &self.max_age {
            headers.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        if self.private_network && request.get(&REQUEST_PRIVATE_NETWORK).is_some_and(|v| v == "true") {
            headers.insert(ALLOW_PRIVATE_NETWORK.clone(), HeaderValue::from_static("true"));
        }
        let mut answer = Response::new(Bytes::new());
        *answer.status_mut() = StatusCode::NO_CONTENT;
        *answer.headers_mut() = headers;
        Flow::Respond(answer)
    }
}

fn refused(message: &'static str, headers: HeaderMap) -> Flow {
    let mut refusal = Refusal::new(StatusCode::FORBIDDEN, message);
    *refusal.headers = headers;
    refusal.into()
}

/// Adds `Origin` to `Vary`, unless it is there already (or `Vary: *`).
fn vary_on_origin(headers: &mut HeaderMap) {
    let listed = headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| v.split(',').map(str::trim).any(|t| t == "*" || t.eq_ignore_ascii_case("origin")))
    });
    if !listed {
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

impl Plugin for Cors {
    fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
        let Some(origin) = ctx.request.headers.get(ORIGIN).cloned() else { return Access::Ready(Flow::Continue) };
        let method = (ctx.request.method == Method::OPTIONS)
            .then(|| ctx.request.headers.get(ACCESS_CONTROL_REQUEST_METHOD).cloned())
            .flatten();
        let Some(method) = method else {
            ctx.keep(Kept::Origin(origin));
            return Access::Ready(Flow::Continue);
        };
        ctx.keep(Kept::Preflight);
        if self.preflight_continue {
            return Access::Ready(Flow::Continue);
        }
        Access::Ready(self.preflight(ctx, &origin, &method))
    }

    fn response(&self, ctx: &mut Ctx<'_>, head: &mut response::Parts) -> Option<BodyFilter> {
        let origin = match ctx.take::<Kept>() {
            Some(Kept::Preflight) => return None,
            Some(Kept::Origin(origin)) => Some(origin),
            // The access phase did not run (an earlier plugin answered) or saw no origin.
            None => ctx.request.headers.get(ORIGIN).cloned(),
        };
        let decision = self.decide(origin.as_ref());
        let headers = &mut head.headers;
        if decision.vary {
            vary_on_origin(headers);
        }
        if let Some(allow_origin) = decision.allow_origin {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
            if decision.credentials {
                headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            }
            if let Some(expose) = &self.expose_headers {
                headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{header, run, Outcome, Run};
    use http::Request;

    fn cors(json: serde_json::Value) -> Cors {
        Cors::new(&serde_json::from_value(json).unwrap())
    }

    const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn preflight(plugin: &Cors, origin: &str, method: &str, extra: &[(&str, &str)]) -> Run {
        let mut request =
            Request::options("/x").header("origin", origin).header("access-control-request-method", method);
        for (k, v) in extra {
            request = request.header(*k, *v);
        }
        run(plugin, request.body(()).unwrap(), LOCAL)
    }

    fn simple(plugin: &Cors, origin: Option<&str>) -> Run {
        let mut request = Request::get("/x");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        run(plugin, request.body(()).unwrap(), LOCAL)
    }

    #[test]
    fn origins_exact_regex_and_any() {
        let c = cors(serde_json::json!({"origins": ["https://a.example", "~https://[a-z]+\\.b\\.example"]}));
        let allowed = |o: &str| c.decide(Some(&HeaderValue::from_str(o).unwrap())).allow_origin.is_some();
        assert!(allowed("https://a.example"));
        assert!(allowed("HTTPS://A.example"), "scheme and host compare case-insensitively");
        assert!(allowed("https://a.example:443"), "a default port is the same origin");
        assert!(allowed("https://x.b.example"));
        assert!(!allowed("https://x.b.example.evil"), "regexes match the whole origin");
        assert!(!allowed("https://evil.example"));
        assert!(!allowed("http://a.example"), "another scheme is another origin");
        let d = c.decide(None);
        assert!(d.allow_origin.is_none() && d.vary, "without an origin: nothing allowed, but it varies on it");

        let any = cors(serde_json::json!({}));
        let d = any.decide(Some(&HeaderValue::from_static("https://x")));
        assert_eq!((d.allow_origin.unwrap().to_str().unwrap(), d.credentials, d.vary), ("*", false, false));
        let star = cors(serde_json::json!({"origins": ["https://a.example", "*"]}));
        assert_eq!(star.decide(Some(&HeaderValue::from_static("https://z"))).allow_origin.unwrap(), "*");
        let credentials = cors(serde_json::json!({"credentials": true}));
        let d = credentials.decide(Some(&HeaderValue::from_static("https://x")));
        assert_eq!(
            (d.allow_origin.unwrap().to_str().unwrap(), d.credentials, d.vary),
            ("https://x", true, true),
            "echoed, never *"
        );
    }

    #[test]
    fn a_preflight_is_answered_204_with_every_header() {
        let c = cors(serde_json::json!({
            "origins": ["https://a.example"], "credentials": true, "max_age": 600,
            "methods": ["GET", "PUT"], "exposed_headers": ["X-Total"], "private_network": true,
        }));
        let extra = [
            ("access-control-request-headers", "x-one, content-type"),
            ("access-control-request-private-network", "true"),
        ];
        let r = preflight(&c, "https://a.example", "PUT", &extra);
        assert!(matches!(r.outcome, Outcome::Answered(StatusCode::NO_CONTENT)), "{:?}", r.outcome);
        let h = &r.response;
        assert_eq!(header(h, "access-control-allow-origin"), "https://a.example");
        assert_eq!(header(h, "access-control-allow-credentials"), "true");
        assert_eq!(header(h, "access-control-allow-methods"), "GET,PUT");
        assert_eq!(header(h, "access-control-allow-headers"), "x-one, content-type", "echoed when headers is unset");
        assert_eq!(header(h, "access-control-max-age"), "600");
        assert_eq!(header(h, "access-control-allow-private-network"), "true");
        assert_eq!(header(h, "vary"), "Origin");
        assert_eq!(header(h, "access-control-expose-headers"), "", "not on a preflight");

        let c = cors(serde_json::json!({"headers": ["X-One", "X-Two"]}));
        let r = preflight(&c, "https://z.example", "DELETE", &extra);
        let h = &r.response;
        assert_eq!(header(h, "access-control-allow-origin"), "*");
        assert_eq!(header(h, "access-control-allow-headers"), "X-One,X-Two");
        assert_eq!(header(h, "access-control-allow-methods"), "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT");
        assert!(h.get("vary").is_none() && h.get("access-control-max-age").is_none());
        assert!(h.get("access-control-allow-private-network").is_none());
    }

    #[test]
    fn a_preflight_from_another_origin_or_for_another_method_is_refused() {
        let c = cors(serde_json::json!({"origins": ["https://a.example"], "methods": ["GET", "POST"]}));
        let r = preflight(&c, "https://evil.example", "GET", &[]);
        match r.outcome {
            Outcome::Refused(status, message) => {
                assert_eq!(
                    (status, message.as_str()),
                    (StatusCode::FORBIDDEN, "CORS preflight refused: origin not allowed")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(header(&r.response, "vary"), "Origin");
        assert!(r.response.get("access-control-allow-origin").is_none(), "the response phase leaves it alone");
        let r = preflight(&c, "https://a.example", "DELETE", &[]);
        assert!(matches!(&r.outcome, Outcome::Refused(_, m) if m == "CORS preflight refused: method not allowed"));
        let r = preflight(&c, "https://a.example", "post", &[]);
        assert!(matches!(&r.outcome, Outcome::Refused(..)), "methods compare exactly");
    }

    #[test]
    fn preflight_continue_passes_preflights_on_untouched() {
        let c = cors(serde_json::json!({"origins": ["https://a.example"], "preflight_continue": true}));
        let r = preflight(&c, "https://evil.example", "PUT", &[]);
        assert!(matches!(r.outcome, Outcome::Continue));
        assert!(r.response.is_empty(), "the upstream answers preflights: {:?}", r.response);
        // An OPTIONS that is not a preflight is a request like any other.
        let request = Request::options("/x").header("origin", "https://a.example").body(()).unwrap();
        let r = run(&c, request, LOCAL);
        assert!(matches!(r.outcome, Outcome::Continue));
        assert_eq!(header(&r.response, "access-control-allow-origin"), "https://a.example");
    }

    #[test]
    fn other_requests_pass_and_their_answers_get_the_headers() {
        let c = cors(
            serde_json::json!({"origins": ["https://a.example"], "credentials": true, "exposed_headers": ["X-A", "X-B"]}),
        );
        let r = simple(&c, Some("https://a.example"));
        assert!(matches!(r.outcome, Outcome::Continue));
        let h = &r.response;
        assert_eq!(header(h, "access-control-allow-origin"), "https://a.example");
        assert_eq!(header(h, "access-control-allow-credentials"), "true");
        assert_eq!(header(h, "access-control-expose-headers"), "X-A,X-B");
        assert_eq!(header(h, "vary"), "Origin");
        let r = simple(&c, Some("https://evil.example"));
        assert!(matches!(r.outcome, Outcome::Continue), "the browser, not the gateway, withholds the answer");
        assert_eq!(r.response.len(), 1, "only Vary: {:?}", r.response);
        let r = simple(&cors(serde_json::json!({})), None);
        assert_eq!(header(&r.response, "access-control-allow-origin"), "*", "as Kong, also without an Origin");
    }

    #[test]
    fn vary_keeps_what_the_upstream_said() {
        let mut headers = HeaderMap::new();
        headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        vary_on_origin(&mut headers);
        let all: Vec<_> = headers.get_all(VARY).iter().collect();
        assert_eq!(all, ["Accept-Encoding", "Origin"]);
        vary_on_origin(&mut headers);
        assert_eq!(headers.get_all(VARY).iter().count(), 2, "not twice");
        let mut headers = HeaderMap::new();
        headers.insert(VARY, HeaderValue::from_static("accept, origin"));
        vary_on_origin(&mut headers);
        assert_eq!(headers.get_all(VARY).iter().count(), 1);
    }
}
