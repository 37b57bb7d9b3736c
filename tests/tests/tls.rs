//! TLS on the proxy listener, end to end, with certificates made by the test's own CA: HTTP/1.1
//! and h2 by ALPN from a Rust client and from curl; the certificate picked by SNI (exact, then
//! wildcard, then the default); `X-Forwarded-Proto` and `-Port` true to the listener; routes that
//! serve only HTTPS answering plain HTTP with 426 or a redirect; a certificate rotated through
//! etcd while a client keeps its connection open; bad certificates kept out and listed while the
//! good one serves on; and bad input on both ports (plain HTTP on TLS, TLS on plain, a stalled
//! handshake, an unknown name) closing only that connection.

use http::StatusCode;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tests::http::HttpClient;
use tests::tls::{connect, served, Ca, Leaf, Sender};
use tests::{eventually, Etcd, Gateway, TempDir, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);
const TLS: [&str; 2] = ["--proxy-listen-tls", "127.0.0.1:0"];

/// A YAML flow mapping for a certificate entity.
fn certificate(name: &str, leaf: &Leaf, snis: &[&str], default: bool) -> String {
    let snis: Vec<String> = snis.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "{{ name: {name}, cert: {}, key: {}, snis: [{}], default: {default} }}",
        json!(leaf.chain),
        json!(leaf.key),
        snis.join(", ")
    )
}

fn config(echo: &Upstream, routes: &str, certificates: &[String]) -> String {
    format!(
        "services: [{{ name: s, url: \"http://{}\", routes: [{routes}] }}]\ncertificates: [{}]\n",
        echo.addr,
        certificates.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_over_http1_and_h2_picks_the_certificate_by_name() {
    let echo = Upstream::start("a").await;
    let ca = Ca::new("test CA");
    // The default certificate covers a name no certificate's `snis` holds, so that the client
    // accepts it there.
    let fallback = ca.leaf(&["fallback.test", "a.b.example.com"]);
    let (exact, wild) = (ca.leaf(&["api.example.com"]), ca.leaf(&["*.example.com"]));
    let certificates = [
        certificate("exact", &exact, &["api.example.com"], false),
        certificate("wild", &wild, &["*.example.com"], false),
        certificate("fallback", &fallback, &[], true),
    ];
    let gw = Gateway::start_with(&config(&echo, "{ name: r, paths: [/] }", &certificates), &TLS).await;
    let tls_addr = gw.proxy_tls.expect("a TLS listener");

    for alpn in [&["h2", "http/1.1"][..], &["http/1.1"]] {
        let client = ca.client_config(alpn);
        for (sni, expected) in [("api.example.com", &exact), ("web.example.com", &wild), ("a.b.example.com", &fallback)]
        {
            let stream = connect(tls_addr, client.clone(), sni).await.unwrap_or_else(|e| panic!("{sni}: {e}"));
            assert!(served(&stream) == expected.der, "{sni} over {alpn:?} got another certificate");
            let protocol = tests::tls::alpn(&stream);
            assert_eq!(protocol, alpn[0]);
            let mut sender = Sender::over(stream).await;
            let reply = sender.get(sni, "/hello").await;
            assert_eq!(reply.status, 200, "{reply:?}");
            let seen = reply.json();
            assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{seen}");
            assert_eq!(seen["headers"]["x-forwarded-port"], tls_addr.port().to_string());
            assert_eq!(seen["headers"]["x-forwarded-host"], sni);
            // The same connection serves on.
            assert_eq!(sender.get(sni, "/again").await.status, 200);
        }
    }
    // The plain listener still says http.
    let seen = HttpClient::new().get(&gw.url("/")).await.json();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");

    // curl, trusting the CA, over HTTP/1.1 and h2.
    let dir = TempDir::new();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let port = tls_addr.port();
        let output = tokio::process::Command::new("curl")
            .args(["-sS", flag, "--cacert", ca_file.to_str().unwrap()])
            .args(["--resolve", &format!("api.example.com:{port}:127.0.0.1")])
            .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
            .arg(format!("https://api.example.com:{port}/curl"))
            .stdout(Stdio::piped())
            .output()
            .await
            .expect("curl runs");
        let out = String::from_utf8_lossy(&output.stdout);
        assert_eq!(out, format!("200 {version}"), "curl {flag}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_only_routes_answer_plain_http_with_426_or_a_redirect() {
    let echo = Upstream::start("a").await;
    let ca = Ca::new("test CA");
    let leaf = ca.leaf(&["api.example.com"]);
    let routes = "{ name: upgrade, paths: [/upgrade], protocols: [https] }, \
                  { name: moved, paths: [/moved], protocols: [https], https_redirect_status_code: 308 }, \
                  { name: plain, paths: [/plain], protocols: [http] }, \
                  { name: split-https, paths: [/split], protocols: [https], strip_path: false, \
                    https_redirect_status_code: 301 }, \
                  { name: split-http, paths: [/split], protocols: [http], strip_path: true }";
    let certificates = [certificate("c", &leaf, &["api.example.com"], false)];
    let gw = Gateway::start_with(&config(&echo, routes, &certificates), &TLS).await;
    let c = HttpClient::new();

    let reply = c.get_with(&gw.url("/upgrade/x"), &[("host", "api.example.com")]).await;
    assert_eq!(reply.status, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(reply.header("upgrade"), "TLS/1.2, HTTP/1.1");
    assert_eq!(reply.json()["message"], "Please use HTTPS protocol");
    let reply = c.get_with(&gw.url("/moved/x?q=1"), &[("host", "api.example.com:8000")]).await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(reply.header("location"), "https://api.example.com/moved/x?q=1");
    assert_eq!(c.get(&gw.url("/plain")).await.status, 200);
    // Two routes that differ only by scheme each serve their own (the plain one strips its path).
    let reply = c.get(&gw.url("/split/x")).await;
    assert_eq!((reply.status, reply.json()["uri"].as_str()), (StatusCode::OK, Some("/x")), "{reply:?}");

    let stream = connect(gw.proxy_tls.unwrap(), ca.client_config(&["http/1.1"]), "api.example.com").await.unwrap();
    let mut sender = Sender::over(stream).await;
    assert_eq!(sender.get("api.example.com", "/upgrade/x").await.status, 200);
    assert_eq!(sender.get("api.example.com", "/moved/x").await.status, 200);
    // Kong's router does not match an http-only route over HTTPS.
    assert_eq!(sender.get("api.example.com", "/plain").await.status, 404);
    let reply = sender.get("api.example.com", "/split/x").await;
    assert_eq!((reply.status, reply.json()["uri"].as_str()), (StatusCode::OK, Some("/split/x")), "{reply:?}");
}

fn entity(leaf: &Leaf, snis: &[&str]) -> Value {
    json!({ "cert": leaf.chain, "key": leaf.key, "snis": snis })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_through_etcd_keeps_open_connections_and_bad_ones_are_kept_out() {
    let etcd = Etcd::start().await;
    let echo = Upstream::start("a").await;
    let ca = Ca::new("test CA");
    let url = etcd.url();
    let flags = ["--config-source", "etcd", "--etcd-endpoints", &url, TLS[0], TLS[1]];
    let gw = Gateway::start_node("n1", "", &flags, &[]).await;
    let tls_addr = gw.proxy_tls.unwrap();
    let service = json!({ "url": format!("http://{}", echo.addr) });
    assert_eq!(gw.admin_put("/services/s", &service).await.status, 200);
    assert_eq!(gw.admin_put("/routes/r", &json!({ "service": "s", "paths": ["/"] })).await.status, 200);

    let first = ca.leaf(&["api.example.com"]);
    let reply = gw.admin_put("/certificates/api", &entity(&first, &["api.example.com"])).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(!String::from_utf8_lossy(&reply.body).contains("PRIVATE KEY"), "the answer shows the key");
    let listed = HttpClient::new().get(&gw.admin_url("/certificates/api")).await.json();
    assert_eq!(listed["snis"], json!(["api.example.com"]));
    assert!(listed.get("key").is_none() && listed["expires_at"].is_string(), "{listed}");

    let client = ca.client_config(&["h2"]);
    let open = connect(tls_addr, client.clone(), "api.example.com").await.unwrap();
    assert!(served(&open) == first.der);
    let mut open = Sender::over(open).await;
    assert_eq!(open.get("api.example.com", "/").await.status, 200);
    // A second connection of the same client resumes the session (by the ticket that came
    // with the first answer): a short handshake.
    let resumed = connect(tls_addr, client.clone(), "api.example.com").await.unwrap();
    assert_eq!(resumed.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    drop(resumed);

    // Rotated: the open connection serves on; a new one gets the new certificate.
    let second = ca.leaf(&["api.example.com"]);
    assert_eq!(gw.admin_put("/certificates/api", &entity(&second, &["api.example.com"])).await.status, 200);
    // A new client (a resumed session would keep the certificate it began with).
    let fresh = connect(tls_addr, ca.client_config(&["h2"]), "api.example.com").await.unwrap();
    assert!(served(&fresh) == second.der, "a new connection still gets the old certificate");
    assert_eq!(open.get("api.example.com", "/after").await.status, 200);

    // Through the admin API a bad certificate is a 400 and nothing is written.
    for (bad, why) in [
        (entity(&ca.expired_leaf(&["api.example.com"]), &["api.example.com"]), "expired at"),
        (json!({ "cert": second.chain, "key": first.key, "snis": ["api.example.com"] }), "does not match"),
        (json!({ "cert": "junk", "key": second.key }), "holds no PEM certificate"),
    ] {
        let reply = gw.admin_put("/certificates/api", &bad).await;
        assert_eq!(reply.status, 400, "{reply:?}");
        let message = reply.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(why), "{message}");
    }
    // Written to etcd directly, it is listed, and the last good one serves on.
    let expired = ca.expired_leaf(&["api.example.com"]);
    etcd.put("/gateway/certificates/api", &entity(&expired, &["api.example.com"]).to_string()).await;
    eventually(WAIT, "the bad certificate listed in /status", || async {
        let status = gw.status().await;
        let errors = status["config"]["errors"].as_array().cloned().unwrap_or_default();
        errors.iter().any(|e| e["key"] == "/gateway/certificates/api").then_some(())
    })
    .await;
    let still = connect(tls_addr, ca.client_config(&["h2"]), "api.example.com").await.unwrap();
    assert!(served(&still) == second.der, "a bad certificate replaced the good one");

    // Each certificate's expiry is a metric.
    let metrics = String::from_utf8(HttpClient::new().get(&gw.admin_url("/metrics")).await.body.to_vec()).unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("gateway_certificate_expiry_timestamp_seconds{certificate=\"api\"}")),
        "{metrics}"
    );
    // No private key in any log line.
    assert!(!gw.logs().iter().any(|l| l.contains("PRIVATE KEY")), "a key was logged");
}

/// Writes `bytes` on a new connection to `addr` and reads until it closes (at most 10 s).
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    out
}

/// An echo upstream, a CA, its leaf for api.example.com, and a gateway serving that leaf (and
/// `flags`) on its TLS listener, routing / to the echo.
async fn one_certificate(flags: &[&str]) -> (Upstream, Ca, Gateway) {
    let echo = Upstream::start("a").await;
    let ca = Ca::new("test CA");
    let leaf = ca.leaf(&["api.example.com"]);
    let certificates = [certificate("c", &leaf, &["api.example.com"], false)];
    let flags: Vec<&str> = TLS.iter().chain(flags).copied().collect();
    let gw = Gateway::start_with(&config(&echo, "{ name: r, paths: [/] }", &certificates), &flags).await;
    (echo, ca, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_either_port_closes_only_that_connection() {
    let (_echo, ca, gw) = one_certificate(&["--header-read-timeout-ms", "500"]).await;
    let tls_addr = gw.proxy_tls.unwrap();
    let client = ca.client_config(&["http/1.1"]);
    let works = || async {
        let stream = connect(tls_addr, client.clone(), "api.example.com").await.expect("a good handshake");
        assert_eq!(Sender::over(stream).await.get("api.example.com", "/").await.status, 200);
        assert_eq!(HttpClient::new().get(&gw.url("/")).await.status, 200);
    };

    // Plain HTTP on the TLS port: told so, as nginx does.
    let answer = raw(tls_addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.ends_with(r#"{"message":"The plain HTTP request was sent to HTTPS port"}"#), "{text}");
    works().await;

    // A TLS hello on the plain port: not HTTP, so 400 or a close, and nothing else.
    let hello = [0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00];
    let answer = raw(gw.proxy, &hello).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || text.starts_with("HTTP/1.1 400 "), "{text}");
    works().await;

    // An unknown name with no default certificate: the handshake fails.
    let Err(e) = connect(tls_addr, client.clone(), "other.example.com").await else {
        panic!("a handshake for a name no certificate serves")
    };
    assert!(e.to_string().to_ascii_lowercase().contains("alert"), "{e}");
    // A handshake cut short, and one that stalls: closed within the header read timeout.
    let answer = raw(tls_addr, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await;
    assert!(answer.is_empty() || answer[0] == 0x15, "{answer:?}");
    let mut stalled = TcpStream::connect(tls_addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a stalled handshake was not closed");
    works().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_made_at_start_serves_what_the_config_does_not() {
    let (_echo, ca, gw) = one_certificate(&["--proxy-tls-self-signed", "localhost"]).await;
    let port = gw.proxy_tls.unwrap().port();
    let dir = TempDir::new();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let curl = |args: Vec<String>| async move {
        let output = tokio::process::Command::new("curl").args(&args).output().await.expect("curl runs");
        (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let common = |host: &str| {
        let resolve = format!("{host}:{port}:127.0.0.1");
        vec![
            "-sS".into(),
            "--resolve".into(),
            resolve,
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
        ]
    };
    // The config's certificate for its name, verified against the test's CA.
    let mut args = common("api.example.com");
    args.extend(["--cacert".into(), ca_file.to_str().unwrap().into(), format!("https://api.example.com:{port}/")]);
    assert_eq!(curl(args).await.0, "200");
    // Any other name: the self-signed one (which only an insecure client takes), not a failed
    // handshake.
    let mut args = common("localhost");
    args.extend(["-k".into(), format!("https://localhost:{port}/")]);
    assert_eq!(curl(args).await.0, "200");
    let mut args = common("localhost");
    args.extend(["--cacert".into(), ca_file.to_str().unwrap().into(), format!("https://localhost:{port}/")]);
    let (out, err) = curl(args).await;
    assert_eq!(out, "000", "a self-signed certificate passed verification");
    assert!(err.contains("certificate"), "{err}");
}
