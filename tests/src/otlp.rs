//! An OTLP trace receiver for tests: OTLP/gRPC and OTLP/HTTP (protobuf) on one port, on the
//! `opentelemetry-proto` types. It keeps every span it receives, flattened for assertions.
//!
//! gRPC is served without a gRPC framework: an `Export` call is an HTTP/2 POST whose body is a
//! 5-byte prefix (compression flag, length) and the protobuf message, answered with the same
//! framing and `grpc-status: 0` in the trailers.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The span's name.
    pub name: String,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id; empty for a root.
    pub parent_span_id: String,
    /// 2 server, 3 client, 1 internal (the OTLP enum).
    pub kind: i32,
    /// Attributes as text.
    pub attributes: BTreeMap<String, String>,
    /// Resource attributes as text.
    pub resource: BTreeMap<String, String>,
    /// Names of the span's events.
    pub events: Vec<String>,
    /// `grpc` or `http`.
    pub protocol: &'static str,
}

/// A running receiver; stops when dropped.
pub struct OtlpSink {
    /// Where it listens.
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpSink {
    /// Starts a receiver on a free loopback port.
    pub async fn start() -> OtlpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the OTLP sink");
        OtlpSink::serve(listener).await
    }

    /// Serves on `listener` (the `otlp-sink` binary binds its own).
    pub async fn serve(listener: TcpListener) -> OtlpSink {
        let addr = listener.local_addr().expect("an address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let sink = sink.clone();
                        async move { Ok::<_, Infallible>(receive(req, &sink).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        OtlpSink { addr, spans, task }
    }

    /// `http://<addr>`: the endpoint for either protocol.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment that has a gateway send every trace here over gRPC, each batch 50 ms
    /// after its first span.
    pub fn exporting_env(&self) -> [(&'static str, String); 4] {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
            ("OTEL_TRACES_SAMPLER", "always_on".into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
        ]
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("sink lock").clone()
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(request: Request<Incoming>, sink: &Mutex<Vec<ReceivedSpan>>) -> Response<Body> {
    let grpc =
        request.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let path = request.uri().path().to_owned();
    let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
        return plain(StatusCode::BAD_REQUEST);
    };
    if grpc && path.ends_with("TraceService/Export") {
        let mut framed = body;
        if framed.len() < 5 || framed[0] != 0 {
            return plain(StatusCode::BAD_REQUEST);
        }
        framed.advance(1);
        let len = framed.get_u32() as usize;
        match ExportTraceServiceRequest::decode(framed.slice(..len.min(framed.len()))) {
            Ok(export) => keep(export, "grpc", sink),
            Err(_) => return plain(StatusCode::BAD_REQUEST),
        }
        let reply = ExportTraceServiceResponse::default().encode_to_vec();
        let mut data = BytesMut::with_capacity(5 + reply.len());
        data.put_u8(0);
        data.put_u32(reply.len() as u32);
        data.put_slice(&reply);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames = futures_util::stream::iter([Ok(Frame::data(data.freeze())), Ok(Frame::trailers(trailers))]);
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .expect("a valid response");
    }
    if path == "/v1/traces" {
        return match ExportTraceServiceRequest::decode(body) {
            Ok(export) => {
                keep(export, "http", sink);
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/x-protobuf")
                    .body(Full::new(Bytes::from(ExportTraceServiceResponse::default().encode_to_vec())).boxed())
                    .expect("a valid response")
            }
            Err(_) => plain(StatusCode::BAD_REQUEST),
        };
    }
    plain(StatusCode::NOT_FOUND)
}

fn plain(status: StatusCode) -> Response<Body> {
    Response::builder().status(status).body(Full::new(Bytes::new()).boxed()).expect("a valid response")
}

fn keep(export: ExportTraceServiceRequest, protocol: &'static str, sink: &Mutex<Vec<ReceivedSpan>>) {
    let mut kept = sink.lock().expect("sink lock");
    for resource_spans in export.resource_spans {
        let resource = resource_spans.resource.map(|r| flatten(&r.attributes)).unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                kept.push(ReceivedSpan {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    attributes: flatten(&span.attributes),
                    resource: resource.clone(),
                    events: span.events.into_iter().map(|e| e.name).collect(),
                    protocol,
                });
            }
        }
    }
}

fn flatten(attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
