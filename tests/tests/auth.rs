//! Consumers and the auth plugins end to end, against real gateway processes on a real etcd and
//! Redis, with real echo upstreams: a credential written through one node authenticates on the
//! others and its delete through a third locks the key out everywhere; `limit_by: consumer` holds
//! one limit per consumer across three nodes; a consumer's own plugin config wins for its
//! requests only; basic-auth with a password hashed by the admin API, and malformed headers
//! (non-UTF-8 bytes included) refused without harm; RS256 and ES256 tokens with keys made by
//! `openssl`, and the algorithm-confusion attack refused; no secret in any log line at debug; a
//! bad plugin config in etcd listed in `/status` while the route keeps its last good value.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{Method, StatusCode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tests::http::{HttpClient, Reply};
use tests::{eventually, Etcd, Gateway, Redis, TempDir, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// The `message` of a JSON answer, or "" when there is none.
fn message(reply: &Reply) -> String {
    serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A header the echo upstream received, or "" when it did not.
fn upstream_header(reply: &Reply, name: &str) -> String {
    reply.json()["headers"][name].as_str().unwrap_or_default().to_owned()
}

/// PUT `body` at `path` of `gw`'s admin API; the revision written. Panics unless 200.
async fn put(gw: &Gateway, path: &str, body: Value) -> i64 {
    let reply = gw.admin_put(path, &body).await;
    assert_eq!(reply.status, 200, "PUT {path}: {}", String::from_utf8_lossy(&reply.body));
    reply.json()["revision"].as_i64().unwrap_or_else(|| panic!("PUT {path}: no revision"))
}

/// Waits until every node of `nodes` has applied `revision`.
async fn applied(nodes: &[Gateway], revision: i64) {
    for gw in nodes {
        eventually(WAIT, &format!("revision {revision} applied"), || async {
            (gw.status().await["config"]["version"].as_i64().unwrap_or(0) >= revision).then_some(())
        })
        .await;
    }
}

/// Rate-limit windows start on the hour: waits (polling the clock) until at least `needed`
/// seconds are left in the current one, so that a test's burst falls within one window (nearly
/// always at once).
async fn clear_of_the_hour_edge(needed: u64) {
    let left = || 3600 - now() % 3600;
    eventually(Duration::from_secs(70), "room before the hour ends", || async { (left() >= needed).then_some(()) })
        .await;
}

fn statuses(replies: &[Reply]) -> Vec<u16> {
    replies.iter().map(|r| r.status.as_u16()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_added_on_one_node_authenticates_on_the_others() {
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(Gateway::start_etcd(&format!("node-{i}"), &etcd.url(), &[]).await);
    }
    let c = HttpClient::new();
    put(&nodes[0], "/services/s", json!({"url": format!("http://{}", echo.addr)})).await;
    put(&nodes[0], "/routes/r", json!({"service": "s", "paths": ["/"], "plugins": {"key-auth": {}}})).await;
    put(&nodes[0], "/consumers/alice", json!({"custom_id": "A-1"})).await;
    put(&nodes[0], "/consumers/alice/key-auth/k1", json!({"key": "alice-key-7f3a"})).await;

    // Nodes 2 and 3 learn of it from etcd; node 1 too (its PUT did not wait).
    for gw in &nodes {
        let reply = eventually(WAIT, "the key to authenticate on every node", || async {
            let reply = c.get_with(&gw.url("/hello"), &[("apikey", "alice-key-7f3a")]).await;
            (reply.status == 200).then_some(reply)
        })
        .await;
        assert_eq!(upstream_header(&reply, "x-consumer-username"), "alice");
        assert_eq!(upstream_header(&reply, "x-credential-identifier"), "k1");
        assert_eq!(upstream_header(&reply, "x-consumer-custom-id"), "A-1");
        let other = c.get_with(&gw.url("/hello"), &[("apikey", "not-a-key")]).await;
        assert_eq!((other.status.as_u16(), message(&other)), (401, "Invalid authentication credentials".into()));
    }

    let reply = c.call(Method::DELETE, &nodes[2].admin_url("/consumers/alice/key-auth/k1"), "").await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    for gw in &nodes {
        let reply = eventually(WAIT, "the deleted key refused", || async {
            let reply = c.get_with(&gw.url("/hello"), &[("apikey", "alice-key-7f3a")]).await;
            (reply.status == 401).then_some(reply)
        })
        .await;
        assert_eq!(reply.json(), json!({"message": "Invalid authentication credentials"}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_by_consumer_holds_one_limit_across_three_nodes() {
    let redis = Redis::start().await;
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let url = redis.url();
    // A generous Redis bound: no decision may fall back to a node's own counters on a loaded
    // machine, or the count would not be the cluster's.
    let flags = ["--redis-url", url.as_str(), "--redis-timeout-ms", "1000"];
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(Gateway::start_etcd(&format!("node-{i}"), &etcd.url(), &flags).await);
    }
    put(&nodes[0], "/services/s", json!({"url": format!("http://{}", echo.addr)})).await;
    let route = json!({"service": "s", "paths": ["/"], "plugins": {
        "key-auth": {}, "rate-limiting": {"hour": 6, "limit_by": "consumer"}}});
    put(&nodes[0], "/routes/r", route).await;
    let mut last = 0;
    for user in ["ann", "bob"] {
        put(&nodes[0], &format!("/consumers/{user}"), json!({})).await;
        last = put(&nodes[0], &format!("/consumers/{user}/key-auth/k"), json!({"key": format!("{user}-key")})).await;
    }
    applied(&nodes, last).await;
    for gw in &nodes {
        eventually(WAIT, "redis connected", || async { (gw.status().await["redis"] == "connected").then_some(()) })
            .await;
    }

    clear_of_the_hour_edge(20).await;
    let c = HttpClient::new();
    let (mut ann, mut bob) = (Vec::new(), Vec::new());
    for i in 0..12 {
        ann.push(c.get_with(&nodes[i % 3].url("/"), &[("apikey", "ann-key")]).await);
        bob.push(c.get_with(&nodes[(i + 1) % 3].url("/"), &[("apikey", "bob-key")]).await);
    }
    for (user, replies) in [("ann", &ann), ("bob", &bob)] {
        let allowed = replies.iter().filter(|r| r.status == 200).count();
        let limited = replies.iter().filter(|r| r.status == 429).count();
        assert_eq!((allowed, limited), (6, 6), "{user}: {:?}", statuses(replies));
        let refused = replies.iter().find(|r| r.status == 429).expect("a 429");
        assert_eq!(message(refused), "API rate limit exceeded");
        assert_eq!(refused.header("x-ratelimit-limit-hour"), "6");
        assert_eq!(refused.header("x-ratelimit-remaining-hour"), "0");
        let passed = replies.iter().find(|r| r.status == 200).expect("a 200");
        assert_eq!(upstream_header(passed, "x-consumer-username"), user);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumers_own_plugin_config_overrides_the_route_for_its_requests_only() {
    let echo = Upstream::start("a").await;
    let yaml = format!(
        r#"
services:
  - name: s
    url: "http://{}"
    routes:
      - name: r
        paths: [/]
        plugins:
          key-auth: {{}}
          rate-limiting: {{ hour: 1, policy: local }}
consumers:
  - username: vip
    plugins:
      rate-limiting: {{ hour: 5, policy: local }}
    keyauth_credentials: [{{ key: vip-key }}]
  - username: regular
    keyauth_credentials: [{{ key: regular-key }}]
"#,
        echo.addr
    );
    let gw = Gateway::start(&yaml).await;
    let c = HttpClient::new();
    clear_of_the_hour_edge(15).await;
    for (key, limit) in [("vip-key", 5), ("regular-key", 1)] {
        let mut replies = Vec::new();
        for _ in 0..limit + 2 {
            replies.push(c.get_with(&gw.url("/"), &[("apikey", key)]).await);
        }
        let mut expected = vec![200; limit];
        expected.extend([429, 429]);
        assert_eq!(statuses(&replies), expected, "{key}");
        for reply in &replies {
            assert_eq!(reply.header("x-ratelimit-limit-hour"), limit.to_string(), "{key}");
        }
        assert_eq!(message(&replies[limit]), "API rate limit exceeded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_a_hashed_password_written_through_the_admin_api() {
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let gw = Gateway::start_etcd("node-1", &etcd.url(), &[]).await;
    put(&gw, "/services/s", json!({"url": format!("http://{}", echo.addr)})).await;
    put(&gw, "/routes/r", json!({"service": "s", "paths": ["/"], "plugins": {"basic-auth": {}}})).await;
    put(&gw, "/consumers/carol", json!({})).await;
    put(&gw, "/consumers/carol/basic-auth/b1", json!({"username": "carol", "password": "correct horse"})).await;
    let stored = etcd.client().await.get("/gateway/consumers/carol/basic-auth/b1", None).await.expect("etcd get");
    let stored = String::from_utf8_lossy(stored.kvs()[0].value()).into_owned();
    assert!(stored.contains("$argon2id$") && !stored.contains("correct horse"), "{stored}");

    let c = HttpClient::new();
    let good = basic("carol", "correct horse");
    let reply = eventually(WAIT, "the credential to be served", || async {
        let reply = c.get_with(&gw.url("/"), &[("authorization", good.as_str())]).await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(upstream_header(&reply, "x-consumer-username"), "carol");
    assert_eq!(upstream_header(&reply, "x-credential-identifier"), "b1");

    let wrong = basic("carol", "wrong horse");
    let unknown = basic("nobody", "correct horse");
    let no_colon = format!("Basic {}", STANDARD.encode("carol"));
    for value in [wrong.as_str(), unknown.as_str(), "Basic !!!", "Basic", "Basic ", "Bearer abc", no_colon.as_str()] {
        let reply = c.get_with(&gw.url("/"), &[("authorization", value)]).await;
        assert_eq!(reply.status, 401, "{value:?}");
        assert_eq!(reply.header("www-authenticate"), "Basic realm=\"gateway\"", "{value:?}");
        assert_eq!(message(&reply), "Invalid authentication credentials", "{value:?}");
    }
    let none = c.get(&gw.url("/")).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), "Basic realm=\"gateway\"");

    // An Authorization header whose bytes are not UTF-8 (obs-text, which HTTP allows).
    let mut raw = Vec::new();
    raw.extend_from_slice(b"GET / HTTP/1.1\r\nHost: test\r\nAuthorization: Basic \xff\xfe\xc3(\r\n");
    raw.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(gw.proxy).await.expect("connect to the proxy");
    stream.write_all(&raw).await.expect("send the request");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.expect("an answer in time").expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("www-authenticate: basic realm=\"gateway\""), "{answer}");

    // The node keeps serving.
    let reply = c.get_with(&gw.url("/"), &[("authorization", good.as_str())]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(gw.status().await["config"]["errors"], json!([]));
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &TempDir, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("run openssl (Debian's openssl)");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A fresh key pair made by `openssl genpkey` (PKCS#8) in `dir`: the private key's PEM and
/// the public key's.
fn key_pair(dir: &TempDir, name: &str, genpkey: &[&str]) -> (String, String) {
    let (private, public) = (format!("{name}.key"), format!("{name}.pub"));
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend(["-out", &private]);
    openssl(dir, &args);
    openssl(dir, &["pkey", "-in", &private, "-pubout", "-out", &public]);
    let read = |file: &str| std::fs::read_to_string(dir.path().join(file)).expect("a PEM file");
    (read(&private), read(&public))
}

fn rsa(dir: &TempDir, name: &str) -> (String, String) {
    key_pair(dir, name, &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
}

fn ec(dir: &TempDir, name: &str) -> (String, String) {
    key_pair(dir, name, &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
}

fn token(algorithm: Algorithm, key: &EncodingKey, iss: &str, exp: u64) -> String {
    encode(&Header::new(algorithm), &json!({"iss": iss, "exp": exp, "sub": "someone"}), key).expect("sign a token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_rs256_and_es256_with_keys_made_by_openssl() {
    let dir = TempDir::new();
    let (rsa_private, rsa_public) = rsa(&dir, "rsa");
    let (rsa_other, _) = rsa(&dir, "rsa-other");
    let (ec_private, ec_public) = ec(&dir, "ec");
    let (ec_other, _) = ec(&dir, "ec-other");
    let echo = Upstream::start("a").await;
    // JSON is YAML: the PEM texts go in as JSON strings.
    let config = json!({
        "services": [{"name": "s", "url": format!("http://{}", echo.addr),
                      "routes": [{"name": "r", "paths": ["/"], "plugins": {"jwt": {}}}]}],
        "consumers": [
            {"username": "rs-user", "jwt_secrets": [
                {"id": "rs", "key": "rs-issuer", "algorithm": "RS256", "public_key": rsa_public}]},
            {"username": "es-user", "jwt_secrets": [
                {"id": "es", "key": "es-issuer", "algorithm": "ES256", "public_key": ec_public}]},
        ],
    });
    let gw = Gateway::start(&config.to_string()).await;
    let c = HttpClient::new();
    let exp = now() + 3600;
    let rs_key = EncodingKey::from_rsa_pem(rsa_private.as_bytes()).expect("the RSA key");
    let es_key = EncodingKey::from_ec_pem(ec_private.as_bytes()).expect("the EC key");
    let send = |token: String| {
        let (c, url) = (&c, gw.url("/"));
        async move { c.get_with(&url, &[("authorization", &format!("Bearer {token}"))]).await }
    };

    for (algorithm, key, iss, user, id) in [
        (Algorithm::RS256, &rs_key, "rs-issuer", "rs-user", "rs"),
        (Algorithm::ES256, &es_key, "es-issuer", "es-user", "es"),
    ] {
        let reply = send(token(algorithm, key, iss, exp)).await;
        assert_eq!(reply.status, 200, "{algorithm:?}: {}", String::from_utf8_lossy(&reply.body));
        assert_eq!(upstream_header(&reply, "x-consumer-username"), user);
        assert_eq!(upstream_header(&reply, "x-credential-identifier"), id);
        // In the query string too.
        let reply = c.get(&gw.url(&format!("/?jwt={}", token(algorithm, key, iss, exp)))).await;
        assert_eq!(reply.status, 200, "{algorithm:?} in the query");
    }

    let refused = |reply: &Reply, expected: &str| {
        assert_eq!(
            (reply.status, message(reply)),
            (StatusCode::UNAUTHORIZED, expected.to_owned()),
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    };
    // Signed with another private key.
    let other_rs = EncodingKey::from_rsa_pem(rsa_other.as_bytes()).expect("the other RSA key");
    refused(&send(token(Algorithm::RS256, &other_rs, "rs-issuer", exp)).await, "Invalid signature");
    let other_es = EncodingKey::from_ec_pem(ec_other.as_bytes()).expect("the other EC key");
    refused(&send(token(Algorithm::ES256, &other_es, "es-issuer", exp)).await, "Invalid signature");
    // Algorithm confusion: HS256 with the RSA public key's PEM as the HMAC secret.
    let confused = EncodingKey::from_secret(rsa_public.as_bytes());
    refused(&send(token(Algorithm::HS256, &confused, "rs-issuer", exp)).await, "Invalid algorithm");
    let confused = EncodingKey::from_secret(ec_public.as_bytes());
    refused(&send(token(Algorithm::HS256, &confused, "es-issuer", exp)).await, "Invalid algorithm");
    // An RS key claiming to be the ES consumer's.
    refused(&send(token(Algorithm::RS256, &rs_key, "es-issuer", exp)).await, "Invalid algorithm");
    // Expired.
    refused(&send(token(Algorithm::RS256, &rs_key, "rs-issuer", now() - 120)).await, "token expired");
    refused(&send(token(Algorithm::ES256, &es_key, "es-issuer", now() - 120)).await, "token expired");
    // Unknown issuer, and garbage.
    refused(&send(token(Algorithm::RS256, &rs_key, "nobody", exp)).await, "No credentials found for given 'iss'");
    assert_eq!(send("not.a.token".into()).await.status, 401);
    assert_eq!(c.get(&gw.url("/")).await.status, 401);
    // The node still serves valid tokens.
    assert_eq!(send(token(Algorithm::ES256, &es_key, "es-issuer", exp)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_in_no_log_line() {
    const KEY: &str = "key-s3cret-Zq81Wd";
    const WRONG_KEY: &str = "wrong-key-s3cret-Lm55Tx";
    const PASSWORD: &str = "pass-s3cret-Hx42Vb";
    const WRONG_PASSWORD: &str = "wrong-pass-s3cret-Qe17Ny";
    const JWT_SECRET: &str = "jwt-hmac-s3cret-Pw93Kc";
    let echo = Upstream::start("a").await;
    let yaml = format!(
        r#"
services:
  - name: s
    url: "http://{}"
    routes:
      - {{ name: key, paths: [/key], plugins: {{ key-auth: {{}} }} }}
      - {{ name: basic, paths: [/basic], plugins: {{ basic-auth: {{}} }} }}
      - {{ name: jwt, paths: [/jwt], plugins: {{ jwt: {{}} }} }}
consumers:
  - username: dora
    keyauth_credentials: [{{ id: k, key: {KEY} }}]
    basicauth_credentials: [{{ id: b, username: dora, password: {PASSWORD} }}]
    jwt_secrets: [{{ id: j, key: dora-iss, algorithm: HS256, secret: {JWT_SECRET} }}]
"#,
        echo.addr
    );
    let gw = Gateway::start_with(&yaml, &["--log-level", "debug"]).await;
    let c = HttpClient::new();
    let good_token = token(Algorithm::HS256, &EncodingKey::from_secret(JWT_SECRET.as_bytes()), "dora-iss", now() + 600);
    let bad_token = token(Algorithm::HS256, &EncodingKey::from_secret(b"another-secret"), "dora-iss", now() + 600);
    let good_basic = basic("dora", PASSWORD);
    let wrong_basic = basic("dora", WRONG_PASSWORD);

    let (good_bearer, bad_bearer) = (format!("Bearer {good_token}"), format!("Bearer {bad_token}"));
    let checks = [
        ("/key", "apikey", KEY, 200),
        ("/key", "apikey", WRONG_KEY, 401),
        ("/basic", "authorization", good_basic.as_str(), 200),
        ("/basic", "authorization", wrong_basic.as_str(), 401),
        ("/jwt", "authorization", good_bearer.as_str(), 200),
        ("/jwt", "authorization", bad_bearer.as_str(), 401),
    ];
    for (path, header, value, expected) in checks {
        let reply = c.get_with(&gw.url(path), &[(header, value)]).await;
        assert_eq!(reply.status, expected, "{path} {header}: {value}");
    }
    // Keys and tokens in the query string, where Kong also looks for them.
    assert_eq!(c.get(&gw.url(&format!("/key/q?apikey={KEY}"))).await.status, 200);
    assert_eq!(c.get(&gw.url(&format!("/key/q?apikey={WRONG_KEY}"))).await.status, 401);
    assert_eq!(c.get(&gw.url(&format!("/jwt/q?jwt={good_token}"))).await.status, 200);

    // Log lines arrive through a pipe: a request that no route matches is logged ("request
    // refused", at debug) after every request above was answered; once its line is in, so is
    // everything logged before it.
    assert_eq!(c.get(&gw.url("/end-of-the-test")).await.status, 404);
    eventually(WAIT, "the last request's log line", || async { gw.logged("/end-of-the-test").then_some(()) }).await;
    let logs = gw.logs();
    assert!(logs.iter().any(|l| l.contains(r#""level":"DEBUG""#)), "debug logging is on: {logs:?}");
    let basic_encoded = |value: &str| value.trim_start_matches("Basic ").to_owned();
    let secrets = [
        KEY.to_owned(),
        WRONG_KEY.to_owned(),
        PASSWORD.to_owned(),
        WRONG_PASSWORD.to_owned(),
        JWT_SECRET.to_owned(),
        good_token.clone(),
        bad_token.clone(),
        basic_encoded(&good_basic),
        basic_encoded(&wrong_basic),
    ];
    for secret in &secrets {
        let leaks: Vec<&String> = logs.iter().filter(|l| l.contains(secret.as_str())).collect();
        assert!(
            leaks.is_empty(),
            "{secret} appears in the log:\n{}",
            leaks.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_plugin_config_in_etcd_is_listed_and_the_route_keeps_its_last_good_value() {
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let gw = Gateway::start_etcd("node-1", &etcd.url(), &[]).await;
    let c = HttpClient::new();
    put(&gw, "/services/s", json!({"url": format!("http://{}", echo.addr)})).await;
    put(&gw, "/consumers/eve", json!({})).await;
    put(&gw, "/consumers/eve/key-auth/k", json!({"key": "eve-key"})).await;
    let good = put(&gw, "/routes/r", json!({"service": "s", "paths": ["/"], "plugins": {"key-auth": {}}})).await;
    applied(std::slice::from_ref(&gw), good).await;
    assert_eq!(c.get_with(&gw.url("/"), &[("apikey", "eve-key")]).await.status, 200);

    // Through the admin API, both are refused with the field at fault.
    let bad_name = json!({"service": "s", "paths": ["/"], "plugins": {"key-auth": {"key_names": ["bad name"]}}});
    let unknown = json!({"service": "s", "paths": ["/"], "plugins": {"key-auth": {}, "no-such-plugin": {}}});
    for (body, field) in [(&bad_name, "key_names[0]"), (&unknown, "no-such-plugin")] {
        let reply = c.call(Method::PUT, &gw.admin_url("/routes/r"), body.to_string()).await;
        assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&reply.body));
        assert!(message(&reply).contains(field), "{} should name {field}", message(&reply));
    }

    // Written straight to etcd: listed under the key, and the last good value is served.
    for (body, expected) in [(&bad_name, "key_names[0]"), (&unknown, "unknown plugin `no-such-plugin`")] {
        let revision = etcd.put("/gateway/routes/r", &body.to_string()).await;
        let error = eventually(WAIT, &format!("the bad route listed ({expected})"), || async {
            let errors = gw.status().await["config"]["errors"].clone();
            errors.as_array()?.iter().find(|e| e["key"] == "/gateway/routes/r" && e["revision"] == revision).cloned()
        })
        .await;
        let text = error["message"].as_str().unwrap_or_default();
        assert!(text.contains(expected), "{text}");
        assert!(text.contains("plugins"), "the path names the plugins: {text}");
        assert!(text.ends_with("(serving its last good value)"), "{text}");
        let served = c.get_with(&gw.url("/"), &[("apikey", "eve-key")]).await;
        assert_eq!(served.status, 200, "the last good route is served");
        let refused = c.get(&gw.url("/")).await;
        assert_eq!((refused.status.as_u16(), message(&refused)), (401, "No API key found in request".into()));
        let listed = c.get(&gw.admin_url("/routes/r")).await;
        assert_eq!(listed.status, 200);
        let route = listed.json();
        let route = if route["data"].is_object() { route["data"].clone() } else { route };
        assert_eq!(route["plugins"]["key-auth"]["key_names"], json!(["apikey"]), "{route}");
    }

    // A good write fixes it.
    let fixed = etcd.put("/gateway/routes/r", r#"{"service": "s", "paths": ["/"]}"#).await;
    applied(std::slice::from_ref(&gw), fixed).await;
    assert_eq!(gw.status().await["config"]["errors"], json!([]));
    assert_eq!(c.get(&gw.url("/")).await.status, 200, "no auth any more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_in_no_trace() {
    const KEY: &str = "traced-key-s3cret-Rt62Ju";
    const JWT_SECRET: &str = "traced-hmac-s3cret-Yb08Gs";
    let echo = Upstream::start("a").await;
    let sink = tests::otlp::OtlpSink::start().await;
    let yaml = format!(
        r#"
services:
  - name: s
    url: "http://{}"
    routes:
      - {{ name: key, paths: [/key], plugins: {{ key-auth: {{}} }} }}
      - {{ name: jwt, paths: [/jwt], plugins: {{ jwt: {{}} }} }}
consumers:
  - username: tess
    keyauth_credentials: [{{ id: k, key: {KEY} }}]
    jwt_secrets: [{{ id: j, key: tess-iss, algorithm: HS256, secret: {JWT_SECRET} }}]
"#,
        echo.addr
    );
    let gw = Gateway::start_with_env(&yaml, &[], &sink.exporting_env()).await;
    let c = HttpClient::new();
    let jwt = token(Algorithm::HS256, &EncodingKey::from_secret(JWT_SECRET.as_bytes()), "tess-iss", now() + 600);
    // Kong looks for keys and tokens in the query string too: there they are part of the URL.
    let requests = [
        ("/key/h".to_owned(), Some(("apikey", KEY.to_owned())), 200),
        (format!("/key/q?apikey={KEY}"), None, 200),
        (format!("/key/q?apikey={KEY}-wrong"), None, 401),
        ("/jwt/h".to_owned(), Some(("authorization", format!("Bearer {jwt}"))), 200),
        (format!("/jwt/q?jwt={jwt}"), None, 200),
    ];
    for (path, header, expected) in &requests {
        let headers: Vec<(&str, &str)> = header.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = c.get_with(&gw.url(path), &headers).await;
        assert_eq!(reply.status, *expected, "{path}");
    }
    let servers = eventually(WAIT, "a server span per request", || async {
        let spans: Vec<_> = sink.spans().into_iter().filter(|s| s.kind == 2).collect();
        (spans.len() >= requests.len()).then_some(spans)
    })
    .await;
    assert!(servers.iter().any(|s| s.attributes.get("url.path").is_some_and(|p| p == "/key/q")), "{servers:?}");
    let mut leaks = Vec::new();
    for span in sink.spans() {
        for secret in [KEY, JWT_SECRET, jwt.as_str()] {
            if span.name.contains(secret) {
                leaks.push(format!("span {:?}: its name holds {secret}", span.name));
            }
            for (name, value) in span.attributes.iter().filter(|(_, v)| v.contains(secret)) {
                leaks.push(format!("span {:?}: {name} = {value:?} holds {secret}", span.name));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets in exported spans:\n{}", leaks.join("\n"));
}
