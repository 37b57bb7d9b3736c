//! What a node tells its operators: traces exported over OTLP (gRPC and HTTP) that join the
//! client's and the upstream's, no spans when the sampler is off, requests unaffected by a dead
//! collector; Prometheus metrics that parse and move with traffic; the node id on every log line.

use std::collections::BTreeMap;
use std::time::Duration;
use tests::http::HttpClient;
use tests::otlp::{OtlpSink, ReceivedSpan};
use tests::{closed_port, eventually, Gateway, Upstream};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn config(echo: &Upstream) -> String {
    format!("services: [{{ name: s, url: \"http://{}\", routes: [{{ name: orders, paths: [/orders] }}] }}]", echo.addr)
}

async fn traced(echo: &Upstream, sink: &str, protocol: &str, sampler: &str) -> Gateway {
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", sink),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_TRACES_SAMPLER", sampler),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    Gateway::start_with_env(&config(echo), &[], &env).await
}

/// The server span of the request that the upstream saw with `traceparent`, and its client span.
async fn request_spans(sink: &OtlpSink, trace_id: &str) -> (ReceivedSpan, ReceivedSpan) {
    eventually(Duration::from_secs(10), "the request's spans to arrive", || async {
        let spans: Vec<_> = sink.spans().into_iter().filter(|s| s.trace_id == trace_id).collect();
        let server = spans.iter().find(|s| s.kind == SERVER)?.clone();
        let client = spans.iter().find(|s| s.kind == CLIENT)?.clone();
        Some((server, client))
    })
    .await
}

/// `00-<trace>-<span>-<flags>` as parts.
fn traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    (parts[1].to_owned(), parts[2].to_owned(), parts[3].to_owned())
}

async fn one_trace(protocol: &str) {
    let echo = Upstream::start("a").await;
    let sink = OtlpSink::start().await;
    let gw = traced(&echo, &sink.endpoint(), protocol, "always_on").await;
    let reply = HttpClient::new().get(&gw.url("/orders/1?x=2")).await;
    assert_eq!(reply.status, 200);
    let seen = reply.json()["headers"]["traceparent"].as_str().expect("the upstream got a traceparent").to_owned();
    let (trace_id, parent, flags) = traceparent(&seen);
    assert_eq!(flags, "01", "sampled");
    let (server, client) = request_spans(&sink, &trace_id).await;
    assert_eq!(server.name, "GET orders");
    assert_eq!(client.parent_span_id, server.span_id, "the upstream attempt is a child of the request");
    assert_eq!(parent, client.span_id, "the upstream's spans would be children of the attempt");
    assert_eq!(server.attributes["http.request.method"], "GET");
    assert_eq!(server.attributes["http.route"], "orders");
    assert_eq!(server.attributes["http.response.status_code"], "200");
    assert_eq!(server.attributes["url.path"], "/orders/1");
    assert_eq!(client.attributes["server.address"], "127.0.0.1");
    assert_eq!(client.attributes["server.port"], echo.addr.port().to_string());
    assert_eq!(client.attributes["http.request.resend_count"], "0");
    assert_eq!(server.resource["service.name"], "gateway");
    assert_eq!(server.resource["service.instance.id"], "test-node");
    assert_eq!(server.protocol, if protocol == "grpc" { "grpc" } else { "http" });
    // A config apply is a span too.
    assert!(sink.spans().iter().any(|s| s.name == "config apply"), "{:?}", sink.spans());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_traces_through_to_the_upstream_over_grpc() {
    one_trace("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_traces_through_to_the_upstream_over_http() {
    one_trace("http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_traceparent_is_continued() {
    let echo = Upstream::start("a").await;
    let sink = OtlpSink::start().await;
    let gw = traced(&echo, &sink.endpoint(), "grpc", "parentbased_always_on").await;
    let (trace, span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let header = format!("00-{trace}-{span}-01");
    let reply = HttpClient::new().get_with(&gw.url("/orders"), &[("traceparent", &header)]).await;
    let (seen_trace, _, _) = traceparent(reply.json()["headers"]["traceparent"].as_str().unwrap());
    assert_eq!(seen_trace, trace, "the upstream continues the client's trace");
    let (server, _) = request_spans(&sink, trace).await;
    assert_eq!(server.parent_span_id, span, "the request's span is a child of the client's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampler_off_exports_nothing() {
    let echo = Upstream::start("a").await;
    let sink = OtlpSink::start().await;
    let gw = traced(&echo, &sink.endpoint(), "grpc", "always_off").await;
    for _ in 0..5 {
        let reply = HttpClient::new().get(&gw.url("/orders")).await;
        assert_eq!(reply.status, 200);
        let (_, _, flags) = traceparent(reply.json()["headers"]["traceparent"].as_str().unwrap());
        assert_eq!(flags, "00", "the trace is propagated, not sampled");
    }
    // Nothing can be shown to never arrive; ten export intervals is long enough to tell.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.spans().is_empty(), "{:?}", sink.spans());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_leaves_requests_unaffected_and_counts_what_it_drops() {
    let echo = Upstream::start("a").await;
    let closed = closed_port();
    let dead = format!("http://{closed}");
    let gw = traced(&echo, &dead, "grpc", "always_on").await;
    let c = HttpClient::new();
    let started = std::time::Instant::now();
    for _ in 0..50 {
        assert_eq!(c.get(&gw.url("/orders")).await.status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "requests waited on the collector: {:?}", started.elapsed());
    eventually(Duration::from_secs(15), "dropped spans to be counted", || async {
        let metrics = parse(&c.get(&gw.admin_url("/metrics")).await.body);
        (metrics.get("gateway_trace_spans_dropped_total").copied().unwrap_or(0.0) > 0.0).then_some(())
    })
    .await;
}

/// Parses Prometheus/OpenMetrics text into `name{labels}` → value, checking every line's shape.
fn parse(body: &[u8]) -> BTreeMap<String, f64> {
    let text = std::str::from_utf8(body).expect("UTF-8");
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty()
                    || line == "# EOF"
                    || line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("# UNIT "),
                "bad comment line {line:?}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "bad labels in {line:?}");
        }
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(&echo)).await;
    let c = HttpClient::new();
    let scrape = |c: HttpClient| {
        let url = gw.admin_url("/metrics");
        async move {
            let reply = c.get(&url).await;
            assert_eq!(reply.status, 200);
            assert!(reply.header("content-type").starts_with("application/openmetrics-text"));
            parse(&reply.body)
        }
    };
    let before = scrape(c.clone()).await;
    for _ in 0..7 {
        c.get(&gw.url("/orders")).await;
    }
    c.get(&gw.url("/nowhere")).await;
    let after = scrape(c.clone()).await;
    let ok = r#"gateway_http_requests_total{service="s",route="orders",code="200"}"#;
    assert_eq!(after[ok] - before.get(ok).copied().unwrap_or(0.0), 7.0);
    assert_eq!(after[r#"gateway_http_requests_total{service="",route="",code="404"}"#], 1.0);
    assert_eq!(after[r#"gateway_request_latency_ms_count{service="s",route="orders"}"#], 7.0);
    // The service's url names an address, not an upstream: the upstream label is empty.
    assert_eq!(after[r#"gateway_upstream_latency_ms_count{service="s",route="orders",upstream=""}"#], 7.0);
    assert_eq!(after[r#"gateway_request_latency_ms_bucket{le="+Inf",service="s",route="orders"}"#], 7.0);
    let sub_ms = r#"gateway_request_latency_ms_bucket{le="0.1",service="s",route="orders"}"#;
    assert!(after.contains_key(sub_ms), "sub-ms buckets");
    assert_eq!(after["gateway_config_version"], 1.0);
    let info = after.keys().find(|k| k.starts_with("gateway_config_info{")).expect("gateway_config_info");
    assert!(info.contains(r#"version="1""#) && info.contains("hash=\""), "{info}");
    assert_eq!(after[info.as_str()], 1.0);
    let bytes = |samples: &BTreeMap<String, f64>, direction: &str| {
        samples.get(&format!(r#"gateway_client_bytes_total{{direction="{direction}"}}"#)).copied().unwrap_or(0.0)
    };
    assert!(bytes(&after, "received") - bytes(&before, "received") >= 8.0 * 20.0, "request bytes counted");
    assert!(bytes(&after, "sent") - bytes(&before, "sent") >= 8.0 * 50.0, "response bytes counted");
    // The client's keep-alive connection to the proxy is open; the scrape's is not counted.
    assert!(after["gateway_client_connections"] >= 1.0);
    assert_eq!(after["gateway_ratelimit_fallback_active"], 0.0);
    assert!(!after.contains_key("gateway_redis_connected"), "no Redis, no Redis gauge");
    assert_eq!(after["gateway_config_errors"], 0.0);
    assert_eq!(after[r#"gateway_cluster_members{state="alive"}"#], 1.0);
    assert!(after["process_resident_memory_bytes"] > 0.0);
    assert!(after["process_open_fds"] > 0.0);
    assert!(after.contains_key("process_cpu_seconds_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_health_shows_in_metrics() {
    let echo = Upstream::start("a").await;
    let yaml = format!(
        "services: [{{ name: s, url: \"http://up\", routes: [{{ name: r, paths: [/] }}] }}]\n\
         upstreams: [{{ name: up, targets: [{{ target: \"{}\" }}] }}]",
        echo.addr
    );
    let gw = Gateway::start(&yaml).await;
    let c = HttpClient::new();
    let series = |state: &str| {
        format!(r#"gateway_upstream_target_health{{upstream="up",target="{}",state="{state}"}}"#, echo.addr)
    };
    let metrics = parse(&c.get(&gw.admin_url("/metrics")).await.body);
    assert_eq!(metrics[&series("healthchecks_off")], 1.0);
    c.call(http::Method::PUT, &gw.admin_url(&format!("/upstreams/up/targets/{}/unhealthy", echo.addr)), "").await;
    let metrics = parse(&c.get(&gw.admin_url("/metrics")).await.body);
    assert_eq!(metrics[&series("unhealthy")], 1.0);
    assert_eq!(metrics[&series("healthchecks_off")], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_carries_the_node_id() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(&echo)).await;
    HttpClient::new().get(&gw.url("/nowhere")).await;
    let logs = gw.logs();
    assert!(logs.len() >= 2);
    for line in logs {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["node_id"], "test-node", "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_try_is_a_child_span_with_its_target_and_outcome() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    a.force_status(503);
    let sink = OtlpSink::start().await;
    let yaml = format!(
        r#"
services:
  - {{ name: s, url: "http://up", retry_on_statuses: [503], retry_backoff: {{ base: 0, max: 0 }},
       routes: [{{ name: orders, paths: [/orders] }}] }}
upstreams:
  - {{ name: up, targets: [{{ target: "{}" }}, {{ target: "{}" }}] }}
"#,
        a.addr, b.addr
    );
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_TRACES_SAMPLER", "always_on".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
    ];
    let gw = Gateway::start_with_env(&yaml, &[], &env).await;
    // Round-robin: one of two requests tries a first, and is retried on b.
    let c = HttpClient::new();
    let mut traces = Vec::new();
    for _ in 0..2 {
        let reply = c.get(&gw.url("/orders")).await;
        assert_eq!(reply.instance(), "b");
        let seen = reply.json()["headers"]["traceparent"].as_str().expect("a traceparent").to_owned();
        traces.push(traceparent(&seen).0);
    }
    let (server, mut tries) = eventually(Duration::from_secs(10), "a trace of two tries", || async {
        let spans = sink.spans();
        traces.iter().find_map(|trace| {
            let server = spans.iter().find(|s| &s.trace_id == trace && s.kind == SERVER)?.clone();
            let tries: Vec<_> = spans.iter().filter(|s| &s.trace_id == trace && s.kind == CLIENT).cloned().collect();
            (tries.len() == 2).then_some((server, tries))
        })
    })
    .await;
    tries.sort_by(|x, y| x.attributes["http.request.resend_count"].cmp(&y.attributes["http.request.resend_count"]));
    for t in &tries {
        assert_eq!(t.parent_span_id, server.span_id, "each try is a child of the request");
    }
    let (first, second) = (&tries[0].attributes, &tries[1].attributes);
    assert_eq!(first["server.port"], a.addr.port().to_string());
    assert_eq!(first["http.request.resend_count"], "0");
    assert_eq!(first["http.response.status_code"], "503");
    assert_eq!(first["error.type"], "retried_status");
    assert_eq!(second["server.port"], b.addr.port().to_string());
    assert_eq!(second["http.request.resend_count"], "1");
    assert_eq!(second["http.response.status_code"], "200");
    assert!(!second.contains_key("error.type"), "{second:?}");
}
