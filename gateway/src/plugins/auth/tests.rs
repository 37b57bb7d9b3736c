//! The auth plugins driven through a compiled runtime: each request runs the route's real chain.

use crate::exchange::ClientInfo;
use crate::health::Registry;
use crate::plugins::pipeline::{Ctx, Flow};
use crate::plugins::Shared;
use crate::runtime::Runtime;
use crate::telemetry::{Metrics, Name};
use base64::Engine as _;
use config_sync::Snapshot;
use futures_util::FutureExt as _;
use http::{HeaderMap, Request, StatusCode};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

const CONFIG: &str = r#"
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - { name: key, paths: [/key], plugins: { key-auth: { hide_credentials: true } } }
      - { name: basic, paths: [/basic], plugins: { basic-auth: {} } }
      - { name: jwt, paths: [/jwt], plugins: { jwt: { maximum_expiration: 3600 } } }
      - { name: jwt-nbf, paths: [/nbf], plugins: { jwt: { claims_to_verify: [exp, nbf] } } }
      - name: either
        paths: [/either]
        plugins:
          key-auth: { anonymous: guest }
          basic-auth: { anonymous: guest }
      - name: staff
        paths: [/staff]
        plugins: { key-auth: {}, acl: { allow: [staff] } }
      - name: no-interns
        paths: [/no-interns]
        plugins: { key-auth: {}, acl: { deny: [interns], hide_groups_header: true } }
      - { name: acl-alone, paths: [/acl-alone], plugins: { acl: { allow: [staff] } } }
      - name: limited
        paths: [/limited]
        plugins: { key-auth: {}, rate-limiting: { minute: 1, limit_by: consumer, policy: local } }
      - { name: ghost, paths: [/ghost], plugins: { key-auth: { anonymous: nobody } } }
consumers:
  - username: ann
    custom_id: ann-7
    groups: [staff, admins]
    keyauth_credentials: [{ id: ann-key, key: ann-secret-key }]
    basicauth_credentials: [{ id: ann-basic, username: ann, password: "open sesame" }]
    jwt_secrets:
      - { id: ann-hs, key: ann-issuer, algorithm: HS256, secret: ann-hmac-secret }
      - { id: ann-hs512, key: ann-512, algorithm: HS512, secret: ann-hmac-512 }
    plugins:
      rate-limiting: { minute: 3, limit_by: consumer, policy: local }
  - username: bob
    groups: [interns]
    keyauth_credentials: [{ key: bob-key }]
  - username: guest
"#;

fn runtime() -> Runtime {
    let config = config_sync::declarative::parse(CONFIG).unwrap();
    Runtime::build(Arc::new(Snapshot::new(config, 1, vec![])), None, &Registry::new(), &Shared::in_memory()).unwrap()
}

/// What the chain did with a request: its answer, or the headers that go upstream.
#[derive(Debug)]
enum Outcome {
    Passed { headers: HeaderMap, uri: String },
    Refused { status: StatusCode, message: String, headers: HeaderMap },
}

impl Outcome {
    fn passed(self) -> (HeaderMap, String) {
        match self {
            Outcome::Passed { headers, uri } => (headers, uri),
            other => panic!("expected to pass, got {other:?}"),
        }
    }

    fn refused(self) -> (StatusCode, String, HeaderMap) {
        match self {
            Outcome::Refused { status, message, headers } => (status, message, headers),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

fn call(rt: &Runtime, uri: &str, headers: &[(&str, &str)]) -> Outcome {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (mut parts, ()) = request.body(()).unwrap().into_parts();
    let path = parts.uri.path().to_owned();
    let entry = rt.routes.iter().find(|r| r.route.paths.iter().any(|p| path.starts_with(p.as_str()))).unwrap();
    let client = ClientInfo::new(([192, 0, 2, 1], 4000).into(), 8000);
    let name = |n: &str| Name(Arc::from(n));
    let metrics = Metrics::new().route(&name("s"), &name(&entry.route.name));
    let mut ctx = Ctx::new(&mut parts, &client, (&entry.route.name, "s"), (None, &path), &metrics);
    // Everything but a hash check (spawn_blocking) is ready at once; block on that.
    let flow = entry.plugins.access(&mut ctx);
    let flow = match flow.now_or_never() {
        Some(flow) => flow,
        None => tokio::runtime::Runtime::new().unwrap().block_on(entry.plugins.access(&mut ctx)),
    };
    match flow {
        Flow::Continue => Outcome::Passed { headers: parts.headers, uri: parts.uri.to_string() },
        Flow::Refuse(r) => Outcome::Refused { status: r.status, message: r.message.into_owned(), headers: *r.headers },
        Flow::Respond(_) => panic!("no auth plugin answers with a response"),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn hs256(claims: serde_json::Value, secret: &str) -> String {
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

#[test]
fn key_auth_identifies_and_hides_the_key() {
    let rt = runtime();
    let (headers, uri) = call(&rt, "/key?apikey=ann-secret-key&x=1", &[("x-consumer-username", "forged")]).passed();
    assert_eq!(headers["x-consumer-username"], "ann", "a client's own X-Consumer-* is replaced");
    assert_eq!(headers["x-consumer-id"], "ann");
    assert_eq!(headers["x-consumer-custom-id"], "ann-7");
    assert_eq!(headers["x-credential-identifier"], "ann-key");
    assert!(!headers.contains_key("x-anonymous-consumer"));
    assert_eq!(uri, "/key?x=1", "hide_credentials takes the key out of the query");
    let (headers, _) = call(&rt, "/key", &[("apikey", "bob-key")]).passed();
    assert!(!headers.contains_key("apikey"), "and out of the headers");
    assert!(!headers.contains_key("x-consumer-custom-id"), "bob has none");
}

#[test]
fn key_auth_refuses_with_kongs_answers() {
    let rt = runtime();
    let (status, message, headers) = call(&rt, "/key", &[]).refused();
    assert_eq!((status, message.as_str()), (StatusCode::UNAUTHORIZED, "No API key found in request"));
    assert_eq!(headers["www-authenticate"], "Key realm=\"gateway\"");
    let (status, message, _) = call(&rt, "/key", &[("apikey", "wrong")]).refused();
    assert_eq!((status, message.as_str()), (StatusCode::UNAUTHORIZED, "Invalid authentication credentials"));
    let (_, message, _) = call(&rt, "/key?apikey=a&apikey=b", &[]).refused();
    assert_eq!(message, "Duplicate API key found");
    let (status, _, _) = call(&rt, "/key?apikey=%FF%FE", &[]).refused();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a key that is not UTF-8 matches nothing");
}

#[test]
fn basic_auth_checks_the_password() {
    let rt = runtime();
    let good = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ann:open sesame"));
    let (headers, _) = call(&rt, "/basic", &[("authorization", &good)]).passed();
    assert_eq!(headers["x-credential-identifier"], "ann-basic");
    assert!(headers.contains_key("authorization"), "kept: hide_credentials is off");
    let bad = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ann:guess"));
    for value in [bad.as_str(), "Basic !!!not-base64", "Basic Zm9v", "Bearer abc", "Basic"] {
        let (status, message, headers) = call(&rt, "/basic", &[("authorization", value)]).refused();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{value}");
        assert_eq!(message, "Invalid authentication credentials", "{value}");
        assert_eq!(headers["www-authenticate"], "Basic realm=\"gateway\"");
    }
    let (_, message, _) = call(&rt, "/basic", &[]).refused();
    assert_eq!(message, "Unauthorized");
}

#[test]
fn jwt_accepts_a_good_token_and_refuses_every_bad_one() {
    let rt = runtime();
    let exp = now() + 600;
    let good = hs256(json!({"iss": "ann-issuer", "exp": exp}), "ann-hmac-secret");
    let (headers, _) = call(&rt, "/jwt", &[("authorization", &format!("Bearer {good}"))]).passed();
    assert_eq!(headers["x-credential-identifier"], "ann-hs");
    call(&rt, &format!("/jwt?jwt={good}"), &[]).passed();
    let hs512 = encode(
        &Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({"iss": "ann-512", "exp": exp}),
        &EncodingKey::from_secret(b"ann-hmac-512"),
    )
    .unwrap();
    call(&rt, "/jwt", &[("authorization", &format!("Bearer {hs512}"))]).passed();

    let refused = |token: &str| call(&rt, "/jwt", &[("authorization", &format!("Bearer {token}"))]).refused().1;
    assert_eq!(refused(&hs256(json!({"iss": "ann-issuer", "exp": exp}), "wrong")), "Invalid signature");
    assert_eq!(refused(&hs256(json!({"iss": "ann-issuer", "exp": now() - 1}), "ann-hmac-secret")), "token expired");
    assert_eq!(refused(&hs256(json!({"iss": "stranger", "exp": exp}), "x")), "No credentials found for given 'iss'");
    assert_eq!(refused(&hs256(json!({"exp": exp}), "ann-hmac-secret")), "No mandatory 'iss' in claims");
    assert_eq!(refused(&hs256(json!({"iss": "ann-issuer"}), "ann-hmac-secret")), "a claim to verify is missing");
    let too_long = hs256(json!({"iss": "ann-issuer", "exp": now() + 7200}), "ann-hmac-secret");
    assert_eq!(refused(&too_long), "exp exceeds the maximum allowed expiration");
    // Signed as HS384 by someone who knows the HS256 secret: not the credential's algorithm.
    let other_alg = encode(
        &Header::new(jsonwebtoken::Algorithm::HS384),
        &json!({"iss": "ann-issuer", "exp": exp}),
        &EncodingKey::from_secret(b"ann-hmac-secret"),
    )
    .unwrap();
    assert_eq!(refused(&other_alg), "Invalid algorithm");
    // `alg: none`, unsigned.
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(json!({"iss": "ann-issuer"})));
    assert!(refused(&none).starts_with("Bad token"), "{}", refused(&none));
    assert!(refused("not-a-token").starts_with("Bad token"));
    let (_, message, _) =
        call(&rt, &format!("/jwt?jwt={good}"), &[("authorization", &format!("Bearer {good}"))]).refused();
    assert_eq!(message, "Multiple tokens provided");
    let (_, message, _) = call(&rt, "/jwt", &[("authorization", "Basic abc")]).refused();
    assert_eq!(message, "Unauthorized");

    let early = hs256(json!({"iss": "ann-issuer", "exp": exp, "nbf": now() + 600}), "ann-hmac-secret");
    let nbf = call(&rt, "/nbf", &[("authorization", &format!("Bearer {early}"))]).refused().1;
    assert_eq!(nbf, "token not valid yet");
}

#[test]
fn anonymous_is_a_fallback_and_a_credential_wins() {
    let rt = runtime();
    let (headers, _) = call(&rt, "/either", &[]).passed();
    assert_eq!(headers["x-consumer-username"], "guest");
    assert_eq!(headers["x-anonymous-consumer"], "true");
    assert!(!headers.contains_key("x-credential-identifier"));
    // key-auth (higher priority) identifies ann; basic-auth, with anonymous set, leaves her be.
    let (headers, _) = call(&rt, "/either", &[("apikey", "ann-secret-key")]).passed();
    assert_eq!(headers["x-consumer-username"], "ann");
    assert!(!headers.contains_key("x-anonymous-consumer"));
    let good = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ann:open sesame"));
    let (headers, _) = call(&rt, "/either", &[("authorization", &good)]).passed();
    assert_eq!(headers["x-credential-identifier"], "ann-basic", "basic-auth identifies after key-auth fell back");
    let (status, message, _) = call(&rt, "/ghost", &[]).refused();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(message.contains("\"nobody\""), "{message}");
}

#[test]
fn acl_allows_and_denies_by_group() {
    let rt = runtime();
    let (headers, _) = call(&rt, "/staff", &[("apikey", "ann-secret-key")]).passed();
    assert_eq!(headers["x-consumer-groups"], "staff, admins");
    let (status, message, _) = call(&rt, "/staff", &[("apikey", "bob-key")]).refused();
    assert_eq!((status, message.as_str()), (StatusCode::FORBIDDEN, "You cannot consume this service"));
    let (headers, _) = call(&rt, "/no-interns", &[("apikey", "ann-secret-key"), ("x-consumer-groups", "x")]).passed();
    assert!(!headers.contains_key("x-consumer-groups"), "hidden, and a client's own is removed");
    call(&rt, "/no-interns", &[("apikey", "bob-key")]).refused();
    let (status, _, _) = call(&rt, "/acl-alone", &[]).refused();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no auth plugin identified anyone");
}

#[test]
fn a_consumers_own_config_wins_for_its_requests_only() {
    let rt = runtime();
    // The route allows 1 a minute per consumer; ann's own config allows her 3.
    for _ in 0..3 {
        call(&rt, "/limited", &[("apikey", "ann-secret-key")]).passed();
    }
    let (status, _, headers) = call(&rt, "/limited", &[("apikey", "ann-secret-key")]).refused();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["x-ratelimit-limit-minute"], "3");
    call(&rt, "/limited", &[("apikey", "bob-key")]).passed();
    let (_, _, headers) = call(&rt, "/limited", &[("apikey", "bob-key")]).refused();
    assert_eq!(headers["x-ratelimit-limit-minute"], "1", "bob has the route's limit");
}
