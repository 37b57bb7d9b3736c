//! The spans of a proxied request, with the OpenTelemetry HTTP semantic-convention attributes:
//! a server span per request (named `METHOD route`), and a client span per upstream attempt
//! (with the target and the retry number). Made only while traces are exported.

use crate::exchange::ClientInfo;
use crate::telemetry::{traces, Name};
use http::{header, Method, Request, StatusCode};
use opentelemetry::trace::TraceContextExt as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The server span of `request`, continuing the trace the client sent.
pub fn server<B>(request: &Request<B>, client: &ClientInfo) -> tracing::Span {
    let span = tracing::info_span!(
        target: traces::TARGET,
        "request",
        otel.name = %request.method(),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %request.method(),
        http.route = Empty,
        http.response.status_code = Empty,
        url.path = request.uri().path(),
        url.query = Empty,
        url.scheme = "http",
        server.port = client.local_port,
        client.address = client.ip_text(),
        network.protocol.version = version(request.version()),
        user_agent.original = request.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()),
    );
    traces::continue_from(&span, request.headers());
    span
}

/// Records the request's query on the server span, without the values of `secrets`.
pub fn query(span: &tracing::Span, query: Option<&str>, secrets: &[String]) {
    if let Some(query) = query.filter(|_| !span.is_none()) {
        span.record("url.query", &*crate::exchange::query::scrubbed(query, secrets));
    }
}

/// Names the server span after its route and records the outcome (5xx is an error).
pub fn finish(span: &tracing::Span, method: &Method, route: Option<&Name>, status: StatusCode) {
    if span.is_none() {
        return;
    }
    if let Some(route) = route {
        // Injecting the context into the upstream request started the OpenTelemetry span, and a
        // started span takes a new name only through its context.
        span.context().span().update_name(format!("{method} {}", route.0));
        span.record("http.route", &*route.0);
    }
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// The client span of one upstream attempt; `retry` is 0 for the first attempt.
pub fn attempt(method: &Method, target: &str, retry: u32) -> tracing::Span {
    if !traces::enabled() {
        return tracing::Span::none();
    }
    let (address, port) = target.rsplit_once(':').unwrap_or((target, "80"));
    tracing::info_span!(
        target: traces::TARGET,
        "upstream",
        otel.name = %method,
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = %method,
        http.request.resend_count = retry,
        http.response.status_code = Empty,
        server.address = address,
        server.port = port,
        error.type = Empty,
    )
}

fn version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    }
}
