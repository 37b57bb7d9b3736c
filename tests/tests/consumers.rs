//! Consumers and their credentials against a real etcd and real gateway processes: `gateway
//! apply` stores basic-auth passwords only as argon2 hashes and applies the same file twice
//! without a change, `dump` hides secrets unless asked, the admin API writes consumers and
//! credentials (hashing passwords, refusing orphans and shared keys) and never shows a secret,
//! and a bad credential written straight to etcd is listed in `/status`.

use http::Method;
use serde_json::Value;
use std::time::Duration;
use tests::http::HttpClient;
use tests::{eventually, run_gateway as gateway, Etcd, Gateway};

const WAIT: Duration = Duration::from_secs(15);

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn stored(etcd: &Etcd, key: &str) -> Option<Value> {
    let reply = etcd.client().await.get(key, None).await.expect("etcd get");
    reply.kvs().first().map(|kv| serde_json::from_slice(kv.value()).expect("JSON in etcd"))
}

async fn keys_under(etcd: &Etcd, prefix: &str) -> Vec<String> {
    let options = etcd_client::GetOptions::new().with_prefix().with_keys_only();
    let reply = etcd.client().await.get(prefix, Some(options)).await.expect("etcd get");
    reply.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect()
}

const FILE: &str = r#"
consumers:
  - username: alice
    groups: [admins]
    keyauth_credentials:
      - { id: k1, key: alice-api-key }
    basicauth_credentials:
      - { username: alice, password: plain-s3cret }
    jwt_secrets:
      - { key: alice-iss, secret: hmac-s3cret }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_stores_only_password_hashes_and_dump_hides_secrets_unless_asked() {
    let etcd = Etcd::start().await;
    let url = etcd.url();
    let dir = tests::TempDir::new();
    let file = dir.path().join("consumers.yaml");
    std::fs::write(&file, FILE).unwrap();
    let file_arg = file.to_str().unwrap();

    let applied = gateway(&["apply", file_arg, "--etcd", &url]);
    let out = stdout(&applied);
    assert!(applied.status.success(), "{out}{}", String::from_utf8_lossy(&applied.stderr));
    assert!(out.contains("4 created"), "{out}");
    assert!(out.contains("create /gateway/consumers/alice/basic-auth/alice"), "{out}");
    let basic = stored(&etcd, "/gateway/consumers/alice/basic-auth/alice").await.expect("the credential");
    let hash = basic["password"].as_str().unwrap().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{basic}");
    assert_eq!(basic["username"], "alice");
    assert!(!basic.to_string().contains("plain-s3cret"));
    assert_eq!(stored(&etcd, "/gateway/consumers/alice/key-auth/k1").await.unwrap()["key"], "alice-api-key");

    let again = gateway(&["apply", file_arg, "--etcd", &url]);
    assert!(stdout(&again).contains("no changes"), "the same plain password is not a change: {}", stdout(&again));
    let kept = stored(&etcd, "/gateway/consumers/alice/basic-auth/alice").await.unwrap();
    assert_eq!(kept["password"], hash.as_str(), "the stored hash is kept");

    let dump = gateway(&["dump", "--etcd", &url]);
    let dumped = stdout(&dump);
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    for secret in ["alice-api-key", "hmac-s3cret", "plain-s3cret", "$argon2"] {
        assert!(!dumped.contains(secret), "{secret} in the dump:\n{dumped}");
    }
    assert!(dumped.contains("<redacted>") && dumped.contains("username: alice"), "{dumped}");
    let redacted = dir.path().join("redacted.yaml");
    std::fs::write(&redacted, &dumped).unwrap();
    let refused = gateway(&["apply", redacted.to_str().unwrap(), "--etcd", &url]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("a redacted secret: dump with --with-secrets"));

    let full = gateway(&["dump", "--etcd", &url, "--with-secrets"]);
    let dumped = stdout(&full);
    for secret in ["alice-api-key", "hmac-s3cret", hash.as_str()] {
        assert!(dumped.contains(secret), "{secret} missing from the dump:\n{dumped}");
    }
    let with_secrets = dir.path().join("full.yaml");
    std::fs::write(&with_secrets, &dumped).unwrap();
    let reapplied = gateway(&["apply", with_secrets.to_str().unwrap(), "--etcd", &url]);
    assert!(stdout(&reapplied).contains("no changes"), "dump --with-secrets then apply: {}", stdout(&reapplied));

    // A new password is a change, and is stored hashed again.
    std::fs::write(&file, FILE.replace("plain-s3cret", "other-s3cret")).unwrap();
    let changed = gateway(&["apply", file_arg, "--etcd", &url]);
    assert!(stdout(&changed).contains("change /gateway/consumers/alice/basic-auth/alice"), "{}", stdout(&changed));
    let rehashed = stored(&etcd, "/gateway/consumers/alice/basic-auth/alice").await.unwrap();
    assert_ne!(rehashed["password"], hash.as_str());
    assert!(rehashed["password"].as_str().unwrap().starts_with("$argon2id$"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_writes_consumers_and_credentials_and_never_shows_secrets() {
    let etcd = Etcd::start().await;
    let node = Gateway::start_etcd("node-0", &etcd.url(), &[]).await;
    let c = HttpClient::new();
    let admin = |path: &str| node.admin_url(path);

    // A credential needs its consumer.
    let orphan = c.call(Method::PUT, &admin("/consumers/alice/key-auth/k1"), r#"{"key": "alice-api-key"}"#).await;
    assert_eq!(orphan.status, 400, "{:?}", orphan.body);
    let message = orphan.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("consumer \"alice\" does not exist"), "{message}");
    assert!(keys_under(&etcd, "/gateway/").await.is_empty(), "nothing written");

    let reply = c.call(Method::PUT, &admin("/consumers/alice"), r#"{"custom_id": "A-1", "groups": ["admins"]}"#).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(reply.json()["revision"].as_i64().unwrap() > 0);
    for (path, body) in [
        ("/consumers/alice/key-auth/k1", r#"{"key": "alice-api-key"}"#),
        ("/consumers/alice/basic-auth/b1", r#"{"username": "alice", "password": "plain-s3cret"}"#),
        ("/consumers/alice/jwt/j1", r#"{"key": "alice-iss", "secret": "hmac-s3cret"}"#),
    ] {
        let reply = c.call(Method::PUT, &admin(&format!("{path}?wait=1")), body).await;
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        assert!(!text.contains("s3cret") && !text.contains("alice-api-key") && !text.contains("$argon2"), "{text}");
        assert!(reply.json()["revision"].as_i64().is_some(), "{text}");
    }
    let basic = stored(&etcd, "/gateway/consumers/alice/basic-auth/b1").await.unwrap();
    assert!(basic["password"].as_str().unwrap().starts_with("$argon2id$"), "hashed before etcd: {basic}");

    // Bad bodies and shared keys: 400 naming the field.
    c.call(Method::PUT, &admin("/consumers/bob"), "{}").await;
    for (path, body, field) in [
        ("/consumers/alice/key-auth/sp", r#"{"key": "a b"}"#, "consumers/alice/key-auth/sp.key"),
        ("/consumers/alice/basic-auth/c", r#"{"username": "a:b", "password": "x"}"#, "basic-auth/c.username"),
        ("/consumers/alice/jwt/r", r#"{"key": "i", "algorithm": "RS256"}"#, "jwt/r.public_key"),
        ("/consumers/alice/key-auth/x", r#"{"id": "y", "key": "k"}"#, "key-auth/x.id"),
        ("/consumers/x%20y", "{}", "consumers/x%20y.username"),
        ("/consumers/bob/key-auth/k2", r#"{"key": "alice-api-key"}"#, "already used by consumers/alice/key-auth/k1"),
        ("/consumers/bob/basic-auth/b", r#"{"username": "alice", "password": "x"}"#, "consumers/alice/basic-auth/b1"),
    ] {
        let reply = c.call(Method::PUT, &admin(path), body).await;
        assert_eq!(reply.status, 400, "{path} {body}: {:?}", reply.body);
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(field), "{message} should name {field}");
    }
    // Rewriting a credential with its own key is not a clash.
    let reply = c.call(Method::PUT, &admin("/consumers/alice/key-auth/k1"), r#"{"key": "alice-api-key"}"#).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    // Reads: consumers whole, credentials without their secrets.
    let consumers = c.get(&admin("/consumers")).await.json();
    let names: Vec<&str> =
        consumers["data"].as_array().unwrap().iter().map(|c| c["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(c.get(&admin("/consumers/alice")).await.json()["custom_id"], "A-1");
    let keys = c.get(&admin("/consumers/alice/key-auth")).await.json();
    assert_eq!(keys["data"][0]["id"], "k1");
    assert_eq!(keys["data"][0]["key"], "<redacted>");
    assert_eq!(keys["data"][0]["consumer"], "alice");
    let basic = c.get(&admin("/consumers/alice/basic-auth/b1")).await.json();
    assert_eq!((basic["username"].as_str(), basic["password"].as_str()), (Some("alice"), Some("<redacted>")));
    let jwt = c.get(&admin("/consumers/alice/jwt/j1")).await.json();
    assert_eq!((jwt["key"].as_str(), jwt["secret"].as_str()), (Some("alice-iss"), Some("<redacted>")));
    for path in ["/consumers/alice/key-auth", "/consumers/alice/basic-auth", "/consumers/alice/jwt", "/consumers"] {
        let text = String::from_utf8_lossy(&c.get(&admin(path)).await.body).into_owned();
        assert!(!text.contains("s3cret") && !text.contains("alice-api-key") && !text.contains("$argon2"), "{text}");
    }
    assert_eq!(c.get(&admin("/consumers/nobody/key-auth")).await.status, 404);
    assert_eq!(c.get(&admin("/consumers/alice/key-auth/nope")).await.status, 404);

    // A plain password written straight to etcd is a bad value, listed without the password.
    etcd.put("/gateway/consumers/alice/basic-auth/raw", r#"{"username": "raw", "password": "raw-s3cret"}"#).await;
    let error = eventually(WAIT, "the bad credential in /status", || async {
        let status = c.get(&admin("/status")).await.json();
        status["config"]["errors"]
            .as_array()?
            .iter()
            .find(|e| e["key"] == "/gateway/consumers/alice/basic-auth/raw")
            .cloned()
    })
    .await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("password: must be stored as a salted hash"), "{message}");
    assert!(!message.contains("raw-s3cret"), "{message}");
    assert_eq!(c.get(&admin("/consumers/alice/basic-auth/raw")).await.status, 404, "not served");

    // A consumer goes with its credentials, the bad one too.
    let reply = c.call(Method::DELETE, &admin("/consumers/alice?wait=1"), "").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(keys_under(&etcd, "/gateway/consumers/alice").await.is_empty());
    assert_eq!(keys_under(&etcd, "/gateway/consumers/").await, ["/gateway/consumers/bob"]);
    assert_eq!(c.get(&admin("/consumers/alice")).await.status, 404);
    let status = c.get(&admin("/status")).await.json();
    assert_eq!(status["config"]["errors"], serde_json::json!([]), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_a_file_serves_consumers_read_only() {
    let node = Gateway::start(FILE).await;
    let c = HttpClient::new();
    let keys = c.get(&node.admin_url("/consumers/alice/basic-auth")).await.json();
    assert_eq!(keys["data"][0]["password"], "<redacted>", "{keys}");
    let reply = c.call(Method::PUT, &node.admin_url("/consumers/bob"), "{}").await;
    assert_eq!(reply.status, 405);
    let reply = c.call(Method::DELETE, &node.admin_url("/consumers/alice/key-auth/k1"), "").await;
    assert_eq!(reply.status, 405);
}
