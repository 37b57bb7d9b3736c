//! OpenTelemetry traces, configured by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (none: no export, and no span is made), `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or
//! `http/protobuf`, the default), `OTEL_SERVICE_NAME` (default `gateway`),
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`. The resource carries
//! `service.instance.id` = the node id.
//!
//! Spans are `tracing` spans of the [`TARGET`] target, turned into OpenTelemetry spans by
//! `tracing-opentelemetry`. Export is batched on the runtime and never blocks a request: when
//! the queue is full or the collector is gone, spans are dropped and counted.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{SpanExporter as OtlpExporter, WithExportConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tracing::{Level, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The `tracing` target of the spans that are exported.
pub const TARGET: &str = "gateway_trace";

static ENABLED: AtomicBool = AtomicBool::new(false);
static EXPORTED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// A layer for a subscriber `S`, boxed.
pub type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// Whether spans are exported; when not, the request path makes none.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Spans exported so far, and dropped (the collector failed or the queue was full).
pub fn counts() -> (u64, u64) {
    (EXPORTED.load(Ordering::Relaxed), DROPPED.load(Ordering::Relaxed))
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` names something else.
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf, not {0:?}")]
    Protocol(String),
    /// The exporter could not be built (a bad endpoint, for example).
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The running export; shut it down to flush what is queued.
pub struct Tracing {
    provider: SdkTracerProvider,
    endpoint: String,
    protocol: String,
}

impl Tracing {
    /// Logs where spans go (once logging is up).
    pub fn log_start(&self) {
        tracing::info!(endpoint = %self.endpoint, protocol = %self.protocol, "exporting traces");
    }

    /// Flushes and stops the export, waiting at most a few seconds.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(3)) {
            tracing::warn!(error = %e, "trace export did not shut down cleanly");
        }
    }
}

/// Starts the export when an endpoint is configured (call inside the Tokio runtime); the layer
/// to add to the subscriber. None when no endpoint is set.
pub fn init<S>(node_id: &str) -> Result<Option<(Tracing, BoxedLayer<S>)>, TraceError>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let endpoint = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()));
    let Some(endpoint) = endpoint else { return Ok(None) };
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|_| "http/protobuf".into());
    let exporter = match protocol.trim() {
        "grpc" => OtlpExporter::builder().with_tonic().with_timeout(Duration::from_secs(5)).build()?,
        "http/protobuf" => OtlpExporter::builder().with_http().with_timeout(Duration::from_secs(5)).build()?,
        other => return Err(TraceError::Protocol(other.to_owned())),
    };
    let processor = BatchSpanProcessor::builder(Counted(exporter), opentelemetry_sdk::runtime::Tokio).build();
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "gateway".into());
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.instance.id", node_id.to_owned()))
        .build();
    let provider = SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build();
    let tracer = provider.tracer("gateway");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Spans of our target only; events (log lines) inside them become span events.
    let only_ours =
        filter_fn(|meta| if meta.is_span() { meta.target() == TARGET } else { *meta.level() <= Level::INFO });
    let layer = tracing_opentelemetry::layer().with_tracer(tracer).with_filter(only_ours).boxed();
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((Tracing { provider, endpoint, protocol }, layer)))
}

/// Continues the trace the client sent (`traceparent`, `tracestate`) in `span`.
pub fn continue_from(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
}

/// Writes `span`'s context into `headers`, so the upstream's spans join the trace.
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeadersMut(headers));
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// An exporter that counts what it exports and what it fails to.
#[derive(Debug)]
struct Counted<E>(E);

impl<E: SpanExporter> SpanExporter for Counted<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let n = batch.len() as u64;
        let export = self.0.export(batch);
        async move {
            let result = export.await;
            match &result {
                Ok(()) => EXPORTED.fetch_add(n, Ordering::Relaxed),
                Err(_) => DROPPED.fetch_add(n, Ordering::Relaxed),
            };
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}
