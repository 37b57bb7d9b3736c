//! `request-transformer`: changes the request on its way upstream, as Kong's plugin does.
//!
//! In the access phase, after the auth plugins: templates are rendered from the request as it
//! came; then the method is set, the headers and the query string transformed, the upstream
//! path set (`replace.uri`), and, only when body operations are configured and the body is
//! JSON or a form, the body read whole (at most [`BODY_LIMIT`]) and transformed. A changed body
//! goes up with its new `Content-Length` (and no `Transfer-Encoding`); one that is not what its
//! content type says, or no operation changed, goes up as it came.

use super::headers::HeaderOps;
use super::json::JsonOps;
use super::pairs::PairOps;
use super::template::{Escape, Template};
use super::Lists;
use super::Value;
use crate::exchange::{number_header, ReadError};
use crate::plugins::pipeline::{Access, Ctx, Flow, Plugin, Refusal};
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use std::time::Duration;

/// The largest request body read to transform: a larger one is refused 413 (from its
/// `Content-Length` before it is read, or once it has carried more).
pub(crate) const BODY_LIMIT: usize = 8 << 20;

/// How long the whole body may take to arrive (nginx waits 60 s between two reads): longer is
/// refused 408.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// A compiled `request-transformer` config.
pub(crate) struct RequestTransformer {
    method: Option<Method>,
    headers: HeaderOps<Value<HeaderValue>>,
    /// `replace.headers` `host:<value>`: the upstream's `Host`.
    host: Option<Value<HeaderValue>>,
    query: PairOps,
    /// `replace.uri`: the whole upstream path (literal paths are checked by config_sync).
    uri: Option<Value<String>>,
    /// The body operations, when any are configured.
    body: Option<Box<BodyOps>>,
    /// The templates the values above refer to, rendered once per request when there are any.
    templates: Vec<Template>,
}

/// The body operations, compiled for each kind of body they apply to.
struct BodyOps {
    json: JsonOps,
    form: PairOps,
}

/// The kinds of body transformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
}

impl RequestTransformer {
    pub(crate) fn new(config: &config_sync::model::RequestTransformer) -> RequestTransformer {
        let mut templates = Vec::new();
        let header_value = |text: &str| HeaderValue::from_str(text).ok();
        let mut header = |text: &str| Value::compile(text, &mut templates, Escape::None, header_value);
        let headers = HeaderOps::headers(
            &Lists {
                remove: &config.remove.headers,
                rename: &config.rename.headers,
                valued: [&config.replace.headers, &config.add.headers, &config.append.headers],
            },
            Some(&header::HOST),
            &mut header,
        );
        let host = super::entries(&config.replace.headers)
            .filter(|(name, _)| name.eq_ignore_ascii_case("host"))
            .last()
            .and_then(|(_, value)| header(value));
        let query = Lists {
            remove: &config.remove.querystring,
            rename: &config.rename.querystring,
            valued: [&config.replace.querystring, &config.add.querystring, &config.append.querystring],
        };
        let query = PairOps::pairs(&query, &mut templates);
        let body = config.has_body_ops().then(|| {
            let lists = Lists {
                remove: &config.remove.body,
                rename: &config.rename.body,
                valued: [&config.replace.body, &config.add.body, &config.append.body],
            };
            Box::new(BodyOps {
                json: JsonOps::json_strings(&lists, &mut templates),
                form: PairOps::pairs(&lists, &mut templates),
            })
        });
        let uri = config
            .replace
            .uri
            .as_deref()
            .and_then(|uri| Value::compile(uri, &mut templates, Escape::Path, |path| Some(path.to_owned())));
        RequestTransformer {
            // Validated: upper-case letters.
            method: config.http_method.as_deref().and_then(|m| Method::from_bytes(m.as_bytes()).ok()),
            headers,
            host,
            query,
            uri,
            body,
            templates,
        }
    }

    /// Everything but the body: the method, headers, query string and upstream path.
    fn transform_head(&self, ctx: &mut Ctx<'_>, rendered: &[String]) {
        let request = &mut *ctx.request;
        if let Some(method) = &self.method {
            request.method = method.clone();
        }
        let header_value = |v: &Value<HeaderValue>| match v {
            Value::Literal(value) => Some(value.clone()),
            // A rendered value may hold what a header may not (a decoded `%0A`): skipped.
            Value::Template(i) => HeaderValue::from_str(rendered.get(*i)?).ok(),
        };
        if !self.headers.is_empty() {
            self.headers.apply(&mut request.headers, header_value);
        }
        if let Some(host) = self.host.as_ref().and_then(header_value) {
            request.headers.insert(header::HOST, host);
            ctx.host_set = true;
        }
        if !self.query.is_empty() {
            if let Some(query) = self.query.apply(request.uri.query().unwrap_or(""), rendered) {
                if let Some(uri) = with_query(&request.uri, &query) {
                    request.uri = uri;
                }
            }
        }
        if let Some(uri) = &self.uri {
            let path = uri.text(rendered, str::to_owned);
            if PathAndQuery::try_from(path.as_ref()).is_ok_and(|p| p.query().is_none()) {
                ctx.upstream_path = Some(path.into());
            }
        }
    }

    /// Reads the body whole and transforms it.
    async fn transform_body(&self, ctx: &mut Ctx<'_>, rendered: Vec<String>, kind: BodyKind, ops: &BodyOps) -> Flow {
        let too_large = || Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "Request size limit exceeded").into();
        if content_length(&ctx.request.headers).is_some_and(|length| length > BODY_LIMIT as u64) {
            return too_large();
        }
        let body = match tokio::time::timeout(BODY_TIMEOUT, ctx.body.read_whole(BODY_LIMIT)).await {
            Ok(Ok(body)) => body,
            // Past this limit, or past a request-size-limiting's, which fails the body as well.
            Ok(Err(ReadError::TooLarge(_))) => return too_large(),
            Ok(Err(ReadError::Client(error))) => {
                tracing::debug!(error = %error, "request body not read");
                return Refusal::new(StatusCode::BAD_REQUEST, "The request body could not be read").into();
            }
            Err(_) => return Refusal::new(StatusCode::REQUEST_TIMEOUT, "The request body took too long").into(),
        };
        if let Some(changed) = transform(ops, kind, &body, &rendered) {
            let headers = &mut ctx.request.headers;
            headers.insert(header::CONTENT_LENGTH, number_header(changed.len() as u64));
            headers.remove(header::TRANSFER_ENCODING);
            ctx.body.set(changed);
        }
        Flow::Continue
    }
}

/// `body` transformed by `ops` as a body of `kind`; None when left alone.
fn transform(ops: &BodyOps, kind: BodyKind, body: &[u8], rendered: &[String]) -> Option<Bytes> {
    match kind {
        BodyKind::Json => ops.json.apply(body, rendered, true).map(Bytes::from),
        BodyKind::Form => {
            let text = std::str::from_utf8(body).ok()?;
            ops.form.apply(text, rendered).map(Bytes::from)
        }
    }
}

impl Plugin for RequestTransformer {
    fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
        // No templates: nothing rendered, nothing allocated.
        let rendered: Vec<String> =
            self.templates.iter().map(|t| t.render(&ctx.request.headers, &ctx.request.uri)).collect();
        self.transform_head(ctx, &rendered);
        let Some(ops) = &self.body else { return Access::Ready(Flow::Continue) };
        match body_kind(&ctx.request.headers) {
            Some(kind) => Access::Later(Box::pin(self.transform_body(ctx, rendered, kind, ops))),
            None => Access::Ready(Flow::Continue),
        }
    }
}

/// The kind of body a request's content type says it has, when it is one transformed. As
/// Kong, the media type is looked for anywhere in the header (`application/json; charset=...`).
fn body_kind(headers: &HeaderMap) -> Option<BodyKind> {
    let content_type = headers.get(header::CONTENT_TYPE)?.as_bytes();
    let has = |media: &[u8]| content_type.windows(media.len()).any(|w| w.eq_ignore_ascii_case(media));
    if has(b"application/json") {
        Some(BodyKind::Json)
    } else if has(b"application/x-www-form-urlencoded") {
        Some(BodyKind::Form)
    } else {
        None
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// `uri` with its query replaced by `query` (none when empty).
fn with_query(uri: &Uri, query: &str) -> Option<Uri> {
    let path = uri.path();
    let path_and_query = if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{BoxBody, ClientBody, ClientInfo};
    use crate::plugins::testing::{header, run, Outcome};
    use crate::telemetry::{Metrics, Name};
    use http_body_util::{BodyExt as _, Full};
    use std::sync::Arc;

    fn plugin(json: serde_json::Value) -> RequestTransformer {
        let config: config_sync::model::RequestTransformer = serde_json::from_value(json).unwrap();
        let mut errors = config_sync::validate::Errors::default();
        config.validate("p", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        RequestTransformer::new(&config)
    }

    fn local() -> std::net::IpAddr {
        [127, 0, 0, 1].into()
    }

    #[test]
    fn headers_query_method_and_path_are_transformed_without_reading_the_body() {
        let p = plugin(serde_json::json!({
            "http_method": "PUT",
            "remove": {"headers": ["x-secret"], "querystring": ["debug"]},
            "rename": {"headers": ["x-old:x-new"], "querystring": ["q:search"]},
            "replace": {"headers": ["x-r:1"], "uri": "/v2/items"},
            "add": {"headers": ["x-from:gateway"], "querystring": ["v:2"]},
            "append": {"headers": ["x-from:again"], "querystring": ["tag:a b"]},
        }));
        let request = http::Request::post("/items?debug=1&q=shoes&tag=x")
            .header("x-secret", "s")
            .header("x-old", "o")
            .header("x-r", "0")
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let r = run(&p, request, local());
        assert!(matches!(r.outcome, Outcome::Continue), "decided at once: no body operations");
        assert_eq!(r.request.method, Method::PUT);
        let h = &r.request.headers;
        assert!(h.get("x-secret").is_none() && h.get("x-old").is_none());
        assert_eq!((header(h, "x-new"), header(h, "x-r")), ("o", "1"));
        let from: Vec<_> = h.get_all("x-from").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(from, ["gateway", "again"]);
        assert_eq!(r.request.uri, "/items?search=shoes&tag=x&v=2&tag=a%20b");
    }

    #[test]
    fn templates_read_the_request_as_it_came_and_missing_values_render_empty() {
        let p = plugin(serde_json::json!({
            "remove": {"headers": ["x-user"]},
            "replace": {"headers": ["host:$(headers.x-tenant).internal"], "uri": "/users/$(query_params.id)/$(headers.x-none)"},
            "add": {"headers": ["x-who:user $(headers[\"x-user\"])", "x-missing:[$(headers.x-none)]"], "querystring": ["u:$(headers.x-user)"]},
        }));
        let request =
            http::Request::get("/u?id=a%20b").header("x-user", "ann").header("x-tenant", "t1").body(()).unwrap();
        let (parts, ()) = request.into_parts();
        let mut parts = parts;
        let client = ClientInfo::new((local(), 1).into(), 80);
        let metrics = Metrics::new().route(&Name(Arc::from("s")), &Name(Arc::from("r")));
        let mut ctx = Ctx::new(&mut parts, &client, ("r", "s"), (None, "/"), &metrics);
        let rendered: Vec<String> =
            p.templates.iter().map(|t| t.render(&ctx.request.headers, &ctx.request.uri)).collect();
        p.transform_head(&mut ctx, &rendered);
        assert!(ctx.host_set);
        assert_eq!(ctx.upstream_path.as_deref(), Some("/users/a%20b/"));
        let h = &ctx.request.headers;
        assert_eq!(header(h, "x-who"), "user ann", "rendered from the header before it was removed");
        assert_eq!(header(h, "x-missing"), "[]");
        assert_eq!(header(h, "host"), "t1.internal");
        assert!(h.get("x-user").is_none());
        assert_eq!(ctx.request.uri, "/u?id=a%20b&u=ann");
    }

    #[test]
    fn a_rendered_value_that_cannot_be_a_header_skips_its_operation() {
        let p = plugin(serde_json::json!({"add": {"headers": ["x-q:$(query_params.q)", "x-ok:1"]}}));
        let r = run(&p, http::Request::get("/?q=a%0D%0Ab").body(()).unwrap(), local());
        assert!(r.request.headers.get("x-q").is_none());
        assert_eq!(header(&r.request.headers, "x-ok"), "1");
    }

    fn body_ops() -> RequestTransformer {
        plugin(serde_json::json!({
            "remove": {"body": ["password"]},
            "rename": {"body": ["user:username"]},
            "add": {"body": ["source:$(headers.x-src)"]},
            "append": {"body": ["tags:new"]},
        }))
    }

    /// Runs the access phase with `body` sent with `headers`; the outcome, the headers and the
    /// body as they would go upstream.
    async fn with_body(
        p: &RequestTransformer,
        headers: &[(&str, &str)],
        body: &'static str,
    ) -> (Option<u16>, HeaderMap, Bytes) {
        let mut builder = http::Request::post("/");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let (mut parts, ()) = builder.body(()).unwrap().into_parts();
        let client = ClientInfo::new((local(), 1).into(), 80);
        let metrics = Metrics::new().route(&Name(Arc::from("s")), &Name(Arc::from("r")));
        let mut ctx = Ctx::new(&mut parts, &client, ("r", "s"), (None, "/"), &metrics);
        ctx.body =
            ClientBody::Wrapped(BoxBody::new(Full::new(Bytes::from_static(body.as_bytes())).map_err(|e| match e {})));
        let flow = match p.access(&mut ctx) {
            Access::Ready(flow) => flow,
            Access::Later(later) => later.await,
        };
        let status = match flow {
            Flow::Continue => None,
            Flow::Refuse(refusal) => Some(refusal.status.as_u16()),
            Flow::Respond(_) => panic!("answered"),
        };
        let sent = std::mem::take(&mut ctx.body).collect().await.unwrap().to_bytes();
        drop(ctx);
        (status, parts.headers, sent)
    }

    #[tokio::test]
    async fn a_json_body_is_transformed_with_its_new_length() {
        let p = body_ops();
        let headers =
            [("content-type", "application/json; charset=utf-8"), ("transfer-encoding", "chunked"), ("x-src", "web")];
        let (status, h, body) = with_body(&p, &headers, r#"{"user":"ann","password":"p","tags":["a"]}"#).await;
        assert_eq!(status, None);
        assert_eq!(body, r#"{"username":"ann","tags":["a","new"],"source":"web"}"#);
        assert_eq!(header(&h, "content-length"), body.len().to_string());
        assert!(h.get("transfer-encoding").is_none());
    }

    #[tokio::test]
    async fn a_form_body_is_transformed_too() {
        let p = body_ops();
        let headers = [("content-type", "application/x-www-form-urlencoded"), ("content-length", "22")];
        let (_, h, body) = with_body(&p, &headers, "user=ann&password=p%21").await;
        assert_eq!(body, "username=ann&source=&tags=new", "the missing header rendered empty");
        assert_eq!(header(&h, "content-length"), "29");
    }

    #[tokio::test]
    async fn other_bodies_pass_unchanged() {
        let p = body_ops();
        let deep: &'static str =
            Box::leak(format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000)).into_boxed_str());
        for (content_type, body) in [
            ("application/json", "not json"),
            ("application/json", "[1,2]"),
            ("application/json", deep),
            ("text/plain", r#"{"password":"p"}"#),
            ("multipart/form-data; boundary=x", "--x--"),
        ] {
            let (status, h, sent) = with_body(&p, &[("content-type", content_type)], body).await;
            assert_eq!((status, sent.as_ref()), (None, body.as_bytes()), "{content_type}");
            assert!(h.get("content-length").is_none(), "{content_type}");
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_413() {
        let p = body_ops();
        let declared = (BODY_LIMIT + 1).to_string();
        let headers = [("content-type", "application/json"), ("content-length", declared.as_str())];
        let (status, _, _) = with_body(&p, &headers, "{}").await;
        assert_eq!(status, Some(413));
        let big: &'static str = Box::leak(format!("{{\"a\":\"{}\"}}", "x".repeat(BODY_LIMIT)).into_boxed_str());
        let (status, _, _) = with_body(&p, &[("content-type", "application/json")], big).await;
        assert_eq!(status, Some(413));
    }
}
