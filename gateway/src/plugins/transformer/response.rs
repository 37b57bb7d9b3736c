//! `response-transformer`: changes the response on its way to the client, as Kong's plugin
//! does: its headers in the response phase, and the top-level fields of a JSON body through a
//! body filter ([`JsonBody`]).
//!
//! The body is transformed only when JSON operations are configured and the response says it
//! is JSON (`application/json` in its `Content-Type`, as Kong looks for it), has a body (not
//! an answer to HEAD, nor 1xx, 204 or 304) and is not compressed (`Content-Encoding`). Its
//! `Content-Length` is then removed from the head, which goes before the body is read (the
//! body goes chunked on HTTP/1.1). The body is buffered up to [`BODY_LIMIT`]: past it,
//! everything passes unchanged, what was buffered then the rest as it streams; so does a body
//! that is not a JSON object. Answers made by other plugins (a 401, a cache hit) are
//! transformed too, as in Kong.

use super::headers::HeaderOps;
use super::json::JsonOps;
use super::Lists;
use crate::exchange::{BoxBody, BoxError};
use crate::plugins::pipeline::{BodyFilter, Ctx, Plugin};
use bytes::{Bytes, BytesMut};
use http::{header, response, HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// The largest response body buffered to transform; a larger one passes unchanged.
pub(crate) const BODY_LIMIT: usize = 8 << 20;

/// A compiled `response-transformer` config.
pub(crate) struct ResponseTransformer {
    headers: HeaderOps<HeaderValue>,
    /// The JSON operations, when any are configured; shared with the bodies being transformed.
    json: Option<Arc<JsonOps>>,
}

impl ResponseTransformer {
    pub(crate) fn new(config: &config_sync::model::ResponseTransformer) -> ResponseTransformer {
        let lists = Lists {
            remove: &config.remove.headers,
            rename: &config.rename.headers,
            valued: [&config.replace.headers, &config.add.headers, &config.append.headers],
        };
        // Validated: header values.
        let headers = HeaderOps::headers(&lists, None, |v| HeaderValue::from_str(v).ok());
        let json = JsonOps::json_typed(
            &config.remove.json,
            &config.rename.json,
            [
                config.replace.json_values().collect(),
                config.add.json_values().collect(),
                config.append.json_values().collect(),
            ],
        );
        ResponseTransformer { headers, json: (!json.is_empty()).then(|| Arc::new(json)) }
    }
}

impl Plugin for ResponseTransformer {
    fn response(&self, ctx: &mut Ctx<'_>, head: &mut response::Parts) -> Option<BodyFilter> {
        if !self.headers.is_empty() {
            self.headers.apply(&mut head.headers, |v| Some(v.clone()));
        }
        let json = self.json.as_ref()?;
        if !transformable(&ctx.request.method, head) {
            return None;
        }
        head.headers.remove(header::CONTENT_LENGTH);
        let json = json.clone();
        Some(Box::new(move |body| BoxBody::new(JsonBody::new(body, json))))
    }
}

/// Whether the response has a JSON body that can be read as it is.
fn transformable(method: &Method, head: &response::Parts) -> bool {
    let json = head
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().windows(16).any(|w| w.eq_ignore_ascii_case(b"application/json")));
    let bodiless = *method == Method::HEAD
        || head.status.is_informational()
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED;
    let encoded =
        head.headers.get(header::CONTENT_ENCODING).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    json && !bodiless && !encoded
}

/// A response body, buffered and transformed once whole.
pub(super) struct JsonBody {
    inner: BoxBody,
    ops: Arc<JsonOps>,
    state: State,
}

enum State {
    /// Reading the body whole.
    Buffering(BytesMut),
    /// Past the limit, or trailers came: what was buffered, then the frame that stopped it,
    /// then the rest as it streams.
    Passing { buffered: Option<Bytes>, stopped: Option<Frame<Bytes>> },
    /// The transformed body, until sent.
    Done(Option<Bytes>),
}

impl JsonBody {
    pub(super) fn new(inner: BoxBody, ops: Arc<JsonOps>) -> JsonBody {
        JsonBody { inner, ops, state: State::Buffering(BytesMut::new()) }
    }
}

impl Body for JsonBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Buffering(buffer) => match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if buffer.len() + data.len() <= BODY_LIMIT => buffer.extend_from_slice(&data),
                        Ok(data) => {
                            let buffered = Some(std::mem::take(buffer).freeze());
                            this.state = State::Passing { buffered, stopped: Some(Frame::data(data)) };
                        }
                        Err(trailers) => {
                            let buffered = Some(std::mem::take(buffer).freeze());
                            this.state = State::Passing { buffered, stopped: Some(trailers) };
                        }
                    },
                    Some(Err(error)) => {
                        this.state = State::Done(None);
                        return Poll::Ready(Some(Err(error)));
                    }
                    None => {
                        let body = std::mem::take(buffer).freeze();
                        let out = this.ops.apply(&body, &[], false).map_or(body, Bytes::from);
                        this.state = State::Done(Some(out));
                    }
                },
                State::Passing { buffered, stopped } => {
                    if let Some(data) = buffered.take().filter(|b| !b.is_empty()) {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if let Some(frame) = stopped.take() {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    return Pin::new(&mut this.inner).poll_frame(cx);
                }
                State::Done(out) => {
                    return Poll::Ready(out.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b))))
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Buffering(_) => false,
            State::Passing { buffered, stopped } => {
                buffered.is_none() && stopped.is_none() && self.inner.is_end_stream()
            }
            State::Done(out) => out.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Done(out) => SizeHint::with_exact(out.as_ref().map_or(0, |b| b.len() as u64)),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{header, run};
    use http_body_util::{BodyExt as _, StreamBody};

    fn plugin(json: serde_json::Value) -> ResponseTransformer {
        let config: config_sync::model::ResponseTransformer = serde_json::from_value(json).unwrap();
        let mut errors = config_sync::validate::Errors::default();
        config.validate("p", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        ResponseTransformer::new(&config)
    }

    fn body(chunks: Vec<Bytes>) -> BoxBody {
        let frames = chunks.into_iter().map(|c| Ok::<_, BoxError>(Frame::data(c)));
        BoxBody::new(StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>())))
    }

    async fn through(ops: &Arc<JsonOps>, chunks: Vec<Bytes>) -> Bytes {
        JsonBody::new(body(chunks), ops.clone()).collect().await.unwrap().to_bytes()
    }

    fn ops() -> Arc<JsonOps> {
        let p = plugin(serde_json::json!({
            "remove": {"json": ["secret"]},
            "rename": {"json": ["n:count"]},
            "add": {"json": ["ok:true", "version:2"], "json_types": ["boolean", "number"]},
            "append": {"json": ["tags:z"]},
        }));
        p.json.clone().unwrap()
    }

    #[test]
    fn headers_are_transformed_and_a_json_body_loses_its_length() {
        let p = plugin(serde_json::json!({
            "remove": {"headers": ["server"]},
            "rename": {"headers": ["x-old:x-new"]},
            "add": {"headers": ["x-added:1"], "json": ["a:b"]},
            "append": {"headers": ["x-added:2"]},
        }));
        let r = run(&p, http::Request::get("/").body(()).unwrap(), [127, 0, 0, 1].into());
        // The empty 200 `run` stands for has no content type: headers only.
        let added: Vec<_> = r.response.get_all("x-added").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(added, ["1", "2"]);

        let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let client = crate::exchange::ClientInfo::new(([127, 0, 0, 1], 1).into(), 80);
        let name = |n: &str| crate::telemetry::Name(Arc::from(n));
        let metrics = crate::telemetry::Metrics::new().route(&name("s"), &name("r"));
        let mut ctx = Ctx::new(&mut parts, &client, ("r", "s"), (None, "/"), &metrics);
        let head = |content_type: &str, status: u16| {
            let response = http::Response::builder()
                .status(status)
                .header("content-type", content_type)
                .header("content-length", "2")
                .header("server", "up")
                .header("x-old", "o")
                .body(())
                .unwrap();
            response.into_parts().0
        };
        let mut json = head("application/json; charset=utf-8", 200);
        assert!(p.response(&mut ctx, &mut json).is_some());
        assert!(json.headers.get("content-length").is_none());
        assert!(json.headers.get("server").is_none());
        assert_eq!(header(&json.headers, "x-new"), "o");
        for (content_type, status) in [("text/plain", 200), ("application/json", 204), ("application/json", 304)] {
            let mut other = head(content_type, status);
            assert!(p.response(&mut ctx, &mut other).is_none(), "{content_type} {status}");
            assert_eq!(header(&other.headers, "content-length"), "2");
        }
        let mut gzipped = head("application/json", 200);
        gzipped.headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(p.response(&mut ctx, &mut gzipped).is_none());
        ctx.request.method = Method::HEAD;
        assert!(p.response(&mut ctx, &mut head("application/json", 200)).is_none());
    }

    #[tokio::test]
    async fn a_json_body_is_transformed_whole_across_chunks() {
        let chunks = vec![Bytes::from_static(b"{\"secret\":1,\"n\":"), Bytes::from_static(b"5,\"tags\":[\"a\"]}")];
        assert_eq!(through(&ops(), chunks).await, r#"{"count":5,"tags":["a","z"],"ok":true,"version":2}"#);
    }

    #[tokio::test]
    async fn what_is_not_a_json_object_passes_unchanged() {
        for text in ["not json", "[1]", "", "{\"a\":1"] {
            let chunks = vec![Bytes::from(text.as_bytes().to_vec())];
            assert_eq!(through(&ops(), chunks).await, text);
        }
    }

    #[tokio::test]
    async fn past_the_limit_everything_passes_unchanged() {
        let first = Bytes::from(format!("{{\"secret\":\"{}", "x".repeat(BODY_LIMIT - 20)));
        let second = Bytes::from(vec![b'y'; 100]);
        let third = Bytes::from_static(b"\"}");
        let mut body = JsonBody::new(body(vec![first.clone(), second.clone(), third.clone()]), ops());
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(frames, [first, second, third], "what was buffered, then the rest as it came");
    }

    #[tokio::test]
    async fn trailers_stop_the_transform_and_pass_through() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames =
            vec![Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"{\"secret\":1}"))), Ok(Frame::trailers(trailers))];
        let inner = BoxBody::new(StreamBody::new(futures_util::stream::iter(frames)));
        let collected = JsonBody::new(inner, ops()).collect().await.unwrap();
        assert_eq!(collected.trailers().map(|t| header(t, "grpc-status").to_owned()).as_deref(), Some("0"));
        assert_eq!(collected.to_bytes(), "{\"secret\":1}");
    }
}
