//! `https://` services end to end, against TLS upstreams with certificates from the test's own
//! CA: verified against a named CA certificate, refused (502, the reason logged, nothing sent in
//! plain text) when the chain or the name does not verify, accepted with `tls_verify: false`;
//! `tls_server_name`; a client certificate for an upstream that demands one (mTLS); connections
//! pooled; active `https` probes.

use serde_json::json;
use std::time::Duration;
use tests::http::HttpClient;
use tests::tls::Ca;
use tests::{eventually, Gateway, Upstream};

const WAIT: Duration = Duration::from_secs(20);

/// A declarative file with one service (its YAML fields after `url`) on `/`, and `extra`
/// top-level sections.
fn config(url: &str, service_fields: &str, extra: &str) -> String {
    format!("services: [{{ name: s, url: \"{url}\", {service_fields} routes: [{{ name: r, paths: [/] }}] }}]\n{extra}")
}

fn ca_section(ca: &Ca) -> String {
    format!("ca_certificates: [{{ name: test-ca, cert: {} }}]\n", json!(ca.pem))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_service_is_verified_against_its_ca_and_pooled() {
    let ca = Ca::new("upstream CA");
    let leaf = ca.leaf(&["upstream.test"]);
    let upstream = Upstream::start_tls("secure", Ca::server_config(&leaf, None)).await;
    let url = format!("https://{}", upstream.addr);
    let fields = "ca_certificates: [test-ca], tls_server_name: upstream.test,";
    let gw = Gateway::start(&config(&url, fields, &ca_section(&ca))).await;
    let c = HttpClient::new();
    for _ in 0..5 {
        let reply = c.get(&gw.url("/hello")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.instance(), "secure");
    }
    // One TLS connection served them all.
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_does_not_verify_is_a_502_with_the_reason_and_no_plain_text() {
    let ca = Ca::new("upstream CA");
    let leaf = ca.leaf(&["upstream.test"]);
    let upstream = Upstream::start_tls("secure", Ca::server_config(&leaf, None)).await;
    let url = format!("https://{}", upstream.addr);
    let c = HttpClient::new();

    // The system's roots do not know the test's CA.
    let gw = Gateway::start(&config(&url, "retries: 0, tls_server_name: upstream.test,", "")).await;
    let reply = c.get(&gw.url("/")).await;
    assert_eq!(reply.status, 502, "{reply:?}");
    eventually(WAIT, "a log line naming the reason", || async {
        gw.logs().iter().any(|l| l.contains("TLS handshake with") && l.contains("UnknownIssuer")).then_some(())
    })
    .await;
    assert_eq!(upstream.requests(), 0, "a request reached the upstream");
    drop(gw);

    // The right CA but another name: the certificate is for upstream.test, not 127.0.0.1.
    let fields = "retries: 0, ca_certificates: [test-ca],";
    let gw = Gateway::start(&config(&url, fields, &ca_section(&ca))).await;
    assert_eq!(c.get(&gw.url("/")).await.status, 502);
    eventually(WAIT, "a log line naming the reason", || async {
        gw.logs()
            .iter()
            .any(|l| l.contains("TLS handshake with") && l.contains("certificate not valid for name"))
            .then_some(())
    })
    .await;
    drop(gw);

    // A plain HTTP upstream behind an https:// service: a failed handshake, never plain text.
    let plain = Upstream::start("plain").await;
    let gw = Gateway::start(&config(&format!("https://{}", plain.addr), "retries: 0, tls_verify: false,", "")).await;
    assert_eq!(c.get(&gw.url("/")).await.status, 502);
    assert_eq!(plain.requests(), 0, "the request went out in plain text");
    drop(gw);

    // tls_verify: false takes any certificate.
    let gw = Gateway::start(&config(&url, "tls_verify: false,", "")).await;
    assert_eq!(c.get(&gw.url("/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_opens_an_upstream_that_demands_one() {
    let ca = Ca::new("upstream CA");
    let clients = Ca::new("client CA");
    let leaf = ca.leaf(&["upstream.test"]);
    let upstream = Upstream::start_tls("mtls", Ca::server_config(&leaf, Some(&clients))).await;
    let url = format!("https://{}", upstream.addr);
    let client = clients.leaf(&["gateway.test"]);
    let certificate =
        format!("certificates: [{{ name: gw-client, cert: {}, key: {} }}]\n", json!(client.chain), json!(client.key));
    let c = HttpClient::new();
    let fields = "retries: 0, ca_certificates: [test-ca], tls_server_name: upstream.test,";
    let without = Gateway::start(&config(&url, fields, &ca_section(&ca))).await;
    assert_eq!(c.get(&without.url("/")).await.status, 502);
    drop(without);
    let fields = format!("{fields} client_certificate: gw-client,");
    let with = Gateway::start(&config(&url, &fields, &(ca_section(&ca) + &certificate))).await;
    let reply = c.get(&with.url("/")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.instance(), "mtls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_probes_find_a_tls_target_healthy_or_not() {
    let ca = Ca::new("upstream CA");
    let leaf = ca.leaf(&["upstream.test"]);
    let upstream = Upstream::start_tls("secure", Ca::server_config(&leaf, None)).await;
    let yaml = |verify: bool| {
        format!(
            "services: [{{ name: s, url: \"https://up\", tls_verify: false, routes: [{{ name: r, paths: [/] }}] }}]
upstreams:
  - name: up
    healthchecks:
      active:
        type: https
        https_verify_certificate: {verify}
        healthy: {{ interval: 0.1, successes: 1 }}
        unhealthy: {{ interval: 0.1, tcp_failures: 1 }}
    targets: [{{ target: \"{}\" }}]
",
            upstream.addr
        )
    };
    let health = |gw: &Gateway| {
        let url = gw.admin_url("/upstreams/up/health");
        async move {
            let v = HttpClient::new().get(&url).await.json();
            v["data"][0]["health"].as_str().unwrap_or_default().to_owned()
        }
    };
    // Unverified: the probe's GET succeeds over TLS.
    let gw = Gateway::start(&yaml(false)).await;
    assert_eq!(HttpClient::new().get(&gw.url("/")).await.status, 200);
    let probed = upstream.requests();
    eventually(WAIT, "probes over TLS", || async { (upstream.requests() > probed + 2).then_some(()) }).await;
    assert_eq!(health(&gw).await, "HEALTHY");
    drop(gw);
    // Verified against the system's roots, which do not know the test's CA: unhealthy.
    let gw = Gateway::start(&yaml(true)).await;
    eventually(WAIT, "the target found unhealthy", || async { (health(&gw).await == "UNHEALTHY").then_some(()) }).await;
    assert_eq!(HttpClient::new().get(&gw.url("/")).await.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_keeps_a_service_and_its_certificates_together() {
    let etcd = tests::Etcd::start().await;
    let url = etcd.url();
    let gw = Gateway::start_node("n1", "", &["--config-source", "etcd", "--etcd-endpoints", &url], &[]).await;
    let c = HttpClient::new();
    let put = |path: &str, body: serde_json::Value| {
        let url = gw.admin_url(path);
        let c = c.clone();
        async move { c.call(http::Method::PUT, &url, body.to_string()).await }
    };
    let service = json!({ "url": "https://upstream.test", "ca_certificates": ["internal"] });
    let reply = put("/services/s", service.clone()).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["message"], "services/s: ca_certificates/internal does not exist");
    let reply = put("/services/plain", json!({ "url": "http://a", "tls_verify": false })).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["message"], "services/plain.tls_verify: is for https:// and grpcs:// services only");

    let ca = Ca::new("internal CA");
    assert_eq!(put("/ca_certificates/internal", json!({ "cert": ca.pem })).await.status, 200);
    assert_eq!(put("/services/s", service).await.status, 200);
    let reply = c.call(http::Method::DELETE, &gw.admin_url("/ca_certificates/internal"), "").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["message"], "ca_certificates/internal is used by services/s; change or delete those first");
}
