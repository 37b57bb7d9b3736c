//! The client's address, end to end: behind a trusted proxy `X-Forwarded-For` names the client
//! (`X-Real-IP` upstream, rate limits by IP), from anyone else it is ignored; with
//! `proxy_protocol`, the PROXY header (v1 or v2) names it, and a connection without a good one
//! is closed unanswered while the node serves the next.

use ppp::v2;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tests::http::HttpClient;
use tests::{Gateway, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(echo: &Upstream, plugins: &str) -> String {
    format!(
        "services: [{{ name: s, url: \"http://{}\", routes: [{{ name: r, paths: [/], plugins: {{ {plugins} }} }}] }}]",
        echo.addr
    )
}

/// What the echo upstream received, as the gateway forwarded it.
async fn seen(gw: &Gateway, headers: &[(&str, &str)]) -> Value {
    let reply = HttpClient::new().get_with(&gw.url("/"), headers).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()["headers"].clone()
}

/// Writes `bytes` on a new connection to `addr` and reads until the gateway closes it (at most
/// 10 s): the whole answer, if any.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    // A reset (the gateway closed with bytes unread) reads as the end too.
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    out
}

/// The echo's JSON in an HTTP/1.1 answer read whole.
fn echo_body(answer: &[u8]) -> Value {
    let text = String::from_utf8_lossy(answer);
    assert!(text.starts_with("HTTP/1.1 200"), "got {text:?}");
    let (_, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    v2::Builder::with_addresses(0x21, v2::Protocol::Stream, (source, destination)).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_client() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start_with(&config(&echo, ""), &["--trusted-ips", "127.0.0.1/32"]).await;
    let h = seen(&gw, &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(h["x-real-ip"], "203.0.113.7");
    // As Kong: what came, and the address that connected.
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    // Trusted entries on the right are skipped; the first untrusted one is the client.
    let h = seen(&gw, &[("x-forwarded-for", "198.51.100.1, 203.0.113.7, 127.0.0.1")]).await;
    assert_eq!(h["x-real-ip"], "203.0.113.7");
    let h = seen(&gw, &[("x-forwarded-for", "[2001:db8::7]:443")]).await;
    assert_eq!(h["x-real-ip"], "2001:db8::7");
    // Garbage and oversized values leave the peer as the client, and are passed on as they came.
    for garbage in ["not-an-ip", "203.0.113.7, 10.0.0.1 10.0.0.2", "unknown", "203.0.113.7/24"] {
        let h = seen(&gw, &[("x-forwarded-for", garbage)]).await;
        assert_eq!(h["x-real-ip"], "127.0.0.1", "{garbage}");
        assert_eq!(h["x-forwarded-for"], format!("{garbage}, 127.0.0.1"));
    }
    let oversized = format!("{}203.0.113.7", "127.0.0.1, ".repeat(500));
    let h = seen(&gw, &[("x-forwarded-for", &oversized)]).await;
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    // Without the header: the peer.
    let h = seen(&gw, &[]).await;
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_recursive_and_other_headers() {
    let echo = Upstream::start("a").await;
    let flags = ["--trusted-ips", "127.0.0.1,10.0.0.0/8", "--real-ip-recursive", "false"];
    let gw = Gateway::start_with(&config(&echo, ""), &flags).await;
    let h = seen(&gw, &[("x-forwarded-for", "203.0.113.7, 10.0.0.1")]).await;
    assert_eq!(h["x-real-ip"], "10.0.0.1");
    drop(gw);
    let env = [("GATEWAY_REAL_IP_HEADER", "CF-Connecting-IP"), ("GATEWAY_TRUSTED_IPS", "::1, 127.0.0.0/8")];
    let gw = Gateway::start_with_env(&config(&echo, ""), &[], &env).await;
    let h = seen(&gw, &[("x-forwarded-for", "198.51.100.1"), ("cf-connecting-ip", "203.0.113.7")]).await;
    assert_eq!(h["x-real-ip"], "203.0.113.7");
    assert_eq!(h["x-forwarded-for"], "198.51.100.1, 127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_from_an_untrusted_peer_is_ignored() {
    let echo = Upstream::start("a").await;
    for flags in [&[][..], &["--trusted-ips", "10.0.0.0/8, 2001:db8::/32"][..]] {
        let gw = Gateway::start_with(&config(&echo, ""), flags).await;
        let h = seen(&gw, &[("x-forwarded-for", "203.0.113.7")]).await;
        assert_eq!(h["x-real-ip"], "127.0.0.1", "{flags:?}");
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1", "{flags:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_by_ip_count_the_real_clients() {
    let echo = Upstream::start("a").await;
    let plugin = "rate-limiting: { hour: 2, policy: local, limit_by: ip }";
    let status = |gw: &Gateway, ip: &'static str| {
        let url = gw.url("/");
        async move { HttpClient::new().get_with(&url, &[("x-forwarded-for", ip)]).await.status.as_u16() }
    };
    let gw = Gateway::start_with(&config(&echo, plugin), &["--trusted-ips", "127.0.0.1/32"]).await;
    for _ in 0..2 {
        assert_eq!(status(&gw, "203.0.113.7").await, 200);
    }
    assert_eq!(status(&gw, "203.0.113.7").await, 429);
    assert_eq!(status(&gw, "198.51.100.1").await, 200);
    assert_eq!(status(&gw, "198.51.100.1").await, 200);
    assert_eq!(status(&gw, "198.51.100.1").await, 429);
    drop(gw);
    // Untrusted: one client, whatever it claims.
    let gw = Gateway::start(&config(&echo, plugin)).await;
    assert_eq!(status(&gw, "203.0.113.7").await, 200);
    assert_eq!(status(&gw, "198.51.100.1").await, 200);
    assert_eq!(status(&gw, "192.0.2.1").await, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_protocol_header_names_the_client() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start_with(&config(&echo, ""), &["--proxy-protocol"]).await;
    let v1 = [&b"PROXY TCP4 203.0.113.7 127.0.0.1 4660 8000\r\n"[..], GET].concat();
    let h = &echo_body(&raw(gw.proxy, &v1).await)["headers"];
    assert_eq!(h["x-real-ip"], "203.0.113.7");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7");
    let v2 = v2_header("[2001:db8::7]:4660".parse().unwrap(), "[2001:db8::1]:443".parse().unwrap());
    let h = &echo_body(&raw(gw.proxy, &[&v2[..], GET].concat()).await)["headers"];
    assert_eq!(h["x-real-ip"], "2001:db8::7");
    // Sent a byte at a time, and several requests on the connection.
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let v2 = v2_header("198.51.100.1:1".parse().unwrap(), "127.0.0.1:8000".parse().unwrap());
    for byte in &v2 {
        stream.write_all(&[*byte]).await.unwrap();
        stream.flush().await.unwrap();
    }
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    stream.write_all(GET).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(text.matches("\"x-real-ip\":\"198.51.100.1\"").count(), 2, "{text}");
    // LOCAL (the balancer's own health check) and UNKNOWN: the TCP peer.
    let local = v2::Builder::new(0x20, 0x00).build().unwrap();
    let h = &echo_body(&raw(gw.proxy, &[&local[..], GET].concat()).await)["headers"];
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    let h = &echo_body(&raw(gw.proxy, &[&b"PROXY UNKNOWN\r\n"[..], GET].concat()).await)["headers"];
    assert_eq!(h["x-real-ip"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_protocol_source_is_trusted_or_not_like_a_peer() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start_with(&config(&echo, ""), &["--proxy-protocol", "--trusted-ips", "10.0.0.0/8"]).await;
    let xff = b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n";
    // From a trusted balancer (10.0.0.5), the header counts.
    let trusted = [&b"PROXY TCP4 10.0.0.5 127.0.0.1 4660 8000\r\n"[..], xff].concat();
    let h = &echo_body(&raw(gw.proxy, &trusted).await)["headers"];
    assert_eq!(h["x-real-ip"], "203.0.113.7");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.0.0.5");
    // From anyone else, it does not, though the TCP peer (127.0.0.1) is the same.
    let untrusted = [&b"PROXY TCP4 198.51.100.1 127.0.0.1 4660 8000\r\n"[..], xff].concat();
    let h = &echo_body(&raw(gw.proxy, &untrusted).await)["headers"];
    assert_eq!(h["x-real-ip"], "198.51.100.1");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 198.51.100.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_proxy_protocol_input_is_closed_unanswered_and_the_node_serves_on() {
    let echo = Upstream::start("a").await;
    let flags = ["--proxy-protocol", "--header-read-timeout-ms", "300"];
    let gw = Gateway::start_with(&config(&echo, ""), &flags).await;
    let good = v2_header("203.0.113.7:4660".parse().unwrap(), "127.0.0.1:8000".parse().unwrap());
    let mut bad_signature = good.clone();
    bad_signature[8] = b'X';
    let mut length_past_the_data = good.clone();
    length_past_the_data[14..16].copy_from_slice(&600u16.to_be_bytes());
    let mut unix = good[..12].to_vec();
    unix.extend([0x21, 0x31, 0, 216]);
    unix.extend([0u8; 216]);
    let no_crlf = format!("PROXY TCP4 203.0.113.7 127.0.0.1 4660 8000{}", " ".repeat(80));
    let cases: [(&str, Vec<u8>); 10] = [
        ("plain HTTP", GET.to_vec()),
        ("nothing", Vec::new()),
        ("a v1 line cut short", b"PROXY TCP4 203.0.113.7 127.0".to_vec()),
        ("a bad v1 address", [&b"PROXY TCP4 203.0.113.700 127.0.0.1 4660 8000\r\n"[..], GET].concat()),
        ("the wrong v1 family", [&b"PROXY TCP6 203.0.113.7 127.0.0.1 4660 8000\r\n"[..], GET].concat()),
        ("no CRLF within 107 bytes", [no_crlf.as_bytes(), GET].concat()),
        ("a bad v2 signature", [&bad_signature[..], GET].concat()),
        ("a v2 length past the data", length_past_the_data),
        ("a v2 header cut short", good[..10].to_vec()),
        ("a v2 UNIX socket", [&unix[..], GET].concat()),
    ];
    for (what, bytes) in cases {
        let started = Instant::now();
        let answer = raw(gw.proxy, &bytes).await;
        assert!(answer.is_empty(), "{what}: answered {:?}", String::from_utf8_lossy(&answer));
        assert!(started.elapsed() < Duration::from_secs(5), "{what}: held for {:?}", started.elapsed());
        // The next good connection is served.
        let h = &echo_body(&raw(gw.proxy, &[&good[..], GET].concat()).await)["headers"];
        assert_eq!(h["x-real-ip"], "203.0.113.7", "after {what}");
    }
    assert!(gw.logged("PROXY protocol"), "the refusals are logged at debug");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_trusted_ip_stops_the_node_naming_it() {
    for (flag, value, named) in [
        ("--trusted-ips", "10.0.0.0/8,10.0.0.300", "10.0.0.300"),
        ("--trusted-ips", "::1/200", "::1/200"),
        ("--real-ip-header", "not a header", "real_ip_header"),
    ] {
        let out = std::process::Command::new(tests::gateway_binary())
            .args(["run", "--proxy-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--cluster-bind", "127.0.0.1:0", flag, value])
            .output()
            .expect("run gateway");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(named) && stderr.contains(&flag[2..].replace('-', "_")), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_ip_hashes_the_real_client() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let yaml = format!(
        r#"
services:
  - {{ name: s, url: "http://up", routes: [{{ name: r, paths: [/] }}] }}
upstreams:
  - {{ name: up, algorithm: consistent-hashing, hash_on: ip, targets: [{{ target: "{}" }}, {{ target: "{}" }}] }}
"#,
        a.addr, b.addr
    );
    let served_by = |gw: &Gateway, ip: String| {
        let url = gw.url("/");
        async move { HttpClient::new().get_with(&url, &[("x-forwarded-for", &ip)]).await.instance() }
    };
    let clients: Vec<String> = (1..=20).map(|i| format!("203.0.113.{i}")).collect();
    // Untrusted: one client, one instance.
    let gw = Gateway::start(&yaml).await;
    let mut seen = std::collections::BTreeSet::new();
    for ip in &clients {
        seen.insert(served_by(&gw, ip.clone()).await);
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    drop(gw);
    // Trusted: twenty clients spread over both, each sticking to its own.
    let gw = Gateway::start_with(&yaml, &["--trusted-ips", "127.0.0.1"]).await;
    let mut seen = std::collections::BTreeSet::new();
    for ip in &clients {
        let first = served_by(&gw, ip.clone()).await;
        assert_eq!(served_by(&gw, ip.clone()).await, first, "{ip} moved");
        seen.insert(first);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_carry_the_real_client() {
    let echo = Upstream::start("a").await;
    let sink = tests::otlp::OtlpSink::start().await;
    let gw = Gateway::start_with_env(&config(&echo, ""), &["--trusted-ips", "127.0.0.1"], &sink.exporting_env()).await;
    let h = seen(&gw, &[("x-forwarded-for", "203.0.113.7")]).await;
    let traceparent = h["traceparent"].as_str().expect("the upstream got a traceparent");
    let trace_id = traceparent.split('-').nth(1).expect("a trace id").to_owned();
    let server = tests::eventually(Duration::from_secs(10), "the request's server span", || async {
        sink.spans().into_iter().find(|s| s.trace_id == trace_id && s.kind == 2)
    })
    .await;
    assert_eq!(server.attributes["client.address"], "203.0.113.7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_name_the_real_client() {
    let echo = Upstream::start("a").await;
    let yaml =
        format!("services: [{{ name: s, url: \"http://{}\", routes: [{{ name: r, paths: [/known] }}] }}]", echo.addr);
    let gw = Gateway::start_with(&yaml, &["--trusted-ips", "127.0.0.1"]).await;
    let reply = HttpClient::new().get_with(&gw.url("/unknown"), &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(reply.status, 404);
    tests::eventually(Duration::from_secs(10), "the refusal's log line", || async {
        gw.logs()
            .iter()
            .any(|l| l.contains("request refused") && l.contains("\"client\":\"203.0.113.7\""))
            .then_some(())
    })
    .await;
}
