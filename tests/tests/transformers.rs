//! `request-transformer` and `response-transformer` end to end, through real gateway processes
//! and echo upstreams: headers, query parameters, the method and the path changed on their way
//! upstream, templates rendered from the request (a missing header as an empty value); JSON and
//! form bodies edited with their new `Content-Length`, also when sent chunked; bodies that are
//! not JSON objects, or are nested 10,000 deep, passed unchanged; a body over the limit refused
//! 413 before the upstream; a consumer's own transformer over the route's; response headers
//! and JSON fields changed for the client, other bodies untouched; and bad values refused with
//! their path while the last good config serves.

use http::{Method, Request};
use http_body_util::Full;
use serde_json::{json, Value};
use std::time::Duration;
use tests::http::{HttpClient, Reply};
use tests::{eventually, Gateway, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);

/// One service on `echo` with `routes` (YAML flow mappings), and `rest` after it.
fn config(echo: &Upstream, routes: &[&str], rest: &str) -> String {
    let routes = routes.iter().map(|r| format!("      - {r}\n")).collect::<String>();
    format!("services:\n  - name: s\n    url: http://{}\n    routes:\n{routes}{rest}", echo.addr)
}

/// `method` `url` with `headers` and `body`.
async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<bytes::Bytes>) -> Reply {
    let mut request = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    HttpClient::new().send(request.body(Full::new(body.into())).unwrap()).await
}

/// A header the echo upstream received, or "" when it did not.
fn upstream_header(echoed: &Value, name: &str) -> String {
    echoed["headers"][name].as_str().unwrap_or_default().to_owned()
}

/// POSTs `parts` to `path` as a chunked body (one chunk each) with `headers`, over a raw
/// connection; the answer's status line and body.
async fn post_chunked(gw: &Gateway, path: &str, headers: &[(&str, &str)], parts: &[&[u8]]) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    for part in parts {
        stream.write_all(format!("{:x}\r\n", part.len()).as_bytes()).await.unwrap();
        stream.write_all(part).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut body = answer[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (head.lines().next().unwrap_or_default().to_owned(), body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_query_method_and_path_reach_the_upstream_transformed() {
    let echo = Upstream::start("a").await;
    let transformed = r#"{ name: req, paths: [/req], plugins: { request-transformer: {
        http_method: PUT,
        remove: { headers: [x-secret], querystring: [debug] },
        rename: { headers: ["x-old:x-new"], querystring: ["q:search"] },
        replace: { headers: ["x-r:replaced", "host:internal.example"], querystring: ["page:1"] },
        add: { headers: ["x-user:$(headers.x-client-user)", "x-missing:[$(headers.x-none)]", "x-r:not-added"],
               querystring: ["v:2", "who:$(query_params.name)"] },
        append: { headers: ["x-tag:gateway"], querystring: ["tag:b c"] } } } }"#;
    let moved = r#"{ name: moved, paths: [/moved], plugins: { request-transformer: { replace: { uri: "/v2/$(query_params.id)/$(headers.x-none)" } } } }"#;
    let gw = Gateway::start(&config(&echo, &[transformed, moved], "")).await;

    let headers = [("x-secret", "s"), ("x-old", "o"), ("x-r", "0"), ("x-client-user", "bob"), ("x-tag", "client")];
    let reply = send(Method::GET, &gw.url("/req/items?debug=1&q=shoes&page=7&name=ann"), &headers, "").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let echoed = reply.json();
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["uri"], "/items?search=shoes&page=1&name=ann&v=2&who=ann&tag=b%20c");
    assert_eq!(upstream_header(&echoed, "x-secret"), "", "removed");
    assert_eq!(upstream_header(&echoed, "x-old"), "", "renamed away");
    assert_eq!(upstream_header(&echoed, "x-new"), "o");
    assert_eq!(upstream_header(&echoed, "x-r"), "replaced", "replaced, and not added over");
    assert_eq!(upstream_header(&echoed, "x-user"), "bob", "rendered from the request's header");
    assert_eq!(upstream_header(&echoed, "x-missing"), "[]", "a missing header renders empty");
    assert_eq!(upstream_header(&echoed, "x-tag"), "client, gateway", "appended as another line");
    assert_eq!(upstream_header(&echoed, "host"), "internal.example", "the upstream's Host replaced");
    assert!(echoed["headers"]["x-forwarded-for"].is_string(), "the proxy's own headers are still set");

    let reply = send(Method::GET, &gw.url("/moved/anything?id=4%202"), &[], "").await;
    assert_eq!(reply.json()["uri"], "/v2/4%202/?id=4%202", "the whole upstream path set, the query kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_form_bodies_reach_the_upstream_edited_with_their_length() {
    let echo = Upstream::start("a").await;
    let body_route = r#"{ name: body, paths: [/body], strip_path: false, plugins: { request-transformer: {
        remove: { body: [password] }, rename: { body: ["user:username"] },
        add: { body: ["source:$(headers.x-src)"] }, append: { body: ["tags:new"] } } } }"#;
    let gw = Gateway::start(&config(&echo, &[body_route], "")).await;
    let sent = r#"{"user":"ann","password":"p","tags":["a"],"n":12345678901234567890123}"#;
    let expected = r#"{"username":"ann","tags":["a","new"],"n":12345678901234567890123,"source":"web"}"#;

    let json_headers = [("content-type", "application/json"), ("x-src", "web")];
    let reply = send(Method::POST, &gw.url("/body"), &json_headers, sent).await;
    let echoed = reply.json();
    assert_eq!(echoed["body"], expected, "edited; the number's digits untouched");
    assert_eq!(echoed["body_bytes"], expected.len());
    assert_eq!(upstream_header(&echoed, "content-length"), expected.len().to_string());

    // Sent chunked, in two pieces: read whole, sent on with a length.
    let (status, answer) =
        post_chunked(&gw, "/body", &json_headers, &[&sent.as_bytes()[..10], &sent.as_bytes()[10..]]).await;
    assert!(status.contains(" 200 "), "{status}");
    let echoed: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(echoed["body"], expected);
    assert_eq!(upstream_header(&echoed, "content-length"), expected.len().to_string());
    assert_eq!(upstream_header(&echoed, "transfer-encoding"), "");

    // A form body, and a template naming a header the request lacks: an empty value.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let reply = send(Method::POST, &gw.url("/body"), &form, "user=ann&password=p%21&tags=a").await;
    let echoed = reply.json();
    assert_eq!(echoed["body"], "username=ann&tags=a&source=&tags=new");
    assert_eq!(upstream_header(&echoed, "content-length"), "36");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_json_objects_pass_unchanged() {
    let echo = Upstream::start("a").await;
    let body_route = r#"{ name: body, paths: [/body], strip_path: false, plugins: { request-transformer: { add: { body: ["added:1"] } } } }"#;
    let gw = Gateway::start(&config(&echo, &[body_route], "")).await;
    let deep_object = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_array = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    for (content_type, body) in [
        ("application/json", "not json".to_owned()),
        ("application/json", "[1,2]".to_owned()),
        ("application/json", deep_object.clone()),
        ("application/json", deep_array),
        ("text/plain", "{\"a\":1}".to_owned()),
    ] {
        let reply = send(Method::POST, &gw.url("/body"), &[("content-type", content_type)], body.clone()).await;
        assert_eq!(reply.status, 200, "{content_type} {:.40}", body);
        let echoed = reply.json();
        assert_eq!(echoed["body"], body, "{content_type} {:.40}", body);
        assert_eq!(upstream_header(&echoed, "content-length"), body.len().to_string());
    }
    // Chunked and deep: unchanged, and the node still serves.
    let (status, answer) =
        post_chunked(&gw, "/body", &[("content-type", "application/json")], &[deep_object.as_bytes()]).await;
    assert!(status.contains(" 200 "), "{status}");
    let echoed: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(echoed["body"], deep_object);

    // Over the limit (8 MiB): refused from its Content-Length, the upstream never contacted.
    // Only the head is sent: the answer comes without the body being read.
    let served = echo.requests();
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    let head = format!(
        "POST /body HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        (8 << 20) + 1
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""message":"Request size limit exceeded""#), "{answer}");
    assert_eq!(echo.requests(), served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumers_own_transformer_replaces_the_routes() {
    let echo = Upstream::start("a").await;
    let route = r#"{ name: r, paths: [/r], plugins: { key-auth: {}, request-transformer: { add: { headers: ["x-tier:route"] } } } }"#;
    let consumers = r#"consumers:
  - username: gold
    keyauth_credentials: [{ key: gold-key }]
    plugins: { request-transformer: { add: { headers: ["x-tier:gold", "x-who:$(headers.x-consumer-username)"] } } }
  - username: plain
    keyauth_credentials: [{ key: plain-key }]
"#;
    let gw = Gateway::start(&config(&echo, &[route], consumers)).await;
    let echoed = send(Method::GET, &gw.url("/r?apikey=gold-key"), &[], "").await.json();
    assert_eq!(upstream_header(&echoed, "x-tier"), "gold");
    assert_eq!(upstream_header(&echoed, "x-who"), "gold", "it runs after key-auth has named the consumer");
    let echoed = send(Method::GET, &gw.url("/r?apikey=plain-key"), &[], "").await.json();
    assert_eq!(upstream_header(&echoed, "x-tier"), "route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_reach_the_client_transformed() {
    let echo = Upstream::start("a").await;
    let route = r#"{ name: res, paths: [/res], plugins: { response-transformer: {
        remove: { headers: [x-echo-instance], json: [version] },
        rename: { json: ["method:verb"] },
        replace: { json: ["instance:hidden", "absent:x"] },
        add: { headers: ["x-added:1"], json: ["ok:true", "count:3", "note:hi"], json_types: [boolean, number] },
        append: { headers: ["x-added:2"], json: ["uri:extra"] } } } }"#;
    let gw = Gateway::start(&config(&echo, &[route], "")).await;

    let reply = send(Method::GET, &gw.url("/res/x"), &[], "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-echo-instance"), "");
    let added: Vec<_> = reply.headers.get_all("x-added").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(added, ["1", "2"]);
    assert_eq!(reply.header("content-length"), "", "the length changed: the body goes chunked");
    let body = reply.json();
    assert_eq!(body["verb"], "GET");
    assert!(body.get("method").is_none() && body.get("version").is_none() && body.get("absent").is_none());
    assert_eq!(body["instance"], "hidden");
    assert_eq!(body["uri"], json!(["/x", "extra"]));
    assert_eq!((body["ok"].clone(), body["count"].clone(), body["note"].clone()), (json!(true), json!(3), json!("hi")));

    // Not JSON: the body and its length untouched, the headers still transformed.
    let reply = send(Method::GET, &gw.url("/res/bytes/10"), &[], "").await;
    assert_eq!(reply.body, "x".repeat(10));
    assert_eq!(reply.header("content-length"), "10");
    assert_eq!(reply.header("x-added"), "1");
}

/// Waits for a log line that has every one of `needles`.
async fn logged(gw: &Gateway, needles: &[&str]) {
    eventually(WAIT, &format!("a log line with {needles:?}"), || async {
        gw.logs().iter().any(|line| needles.iter().all(|n| line.contains(n))).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_value_is_refused_with_its_path_and_the_last_config_serves() {
    let echo = Upstream::start("a").await;
    let good = r#"{ name: r, paths: [/r], plugins: { request-transformer: { add: { headers: ["x-from:good"] } } } }"#;
    let gw = Gateway::start(&config(&echo, &[good], "")).await;
    let c = HttpClient::new();
    assert_eq!(upstream_header(&c.get(&gw.url("/r")).await.json(), "x-from"), "good");

    let no_colon = r#"{ name: r, paths: [/r], plugins: { request-transformer: { add: { headers: ["x-from"] } } } }"#;
    let captures = r#"{ name: r, paths: [/r], plugins: { request-transformer: { add: { querystring: ["id:$(uri_captures[1])"] } } } }"#;
    let not_a_number = r#"{ name: r, paths: [/r], plugins: { response-transformer: { add: { json: ["n:many"], json_types: [number] } } } }"#;
    let dir = tests::TempDir::new();
    let checked = dir.path().join("bad.yaml");
    for (route, said) in [
        (no_colon, "routes/r.plugins.request-transformer.add.headers[0]: \"x-from\" has no value"),
        (captures, "routes/r.plugins.request-transformer.add.querystring[0]: template `$(uri_captures[1])`"),
        (not_a_number, "routes/r.plugins.response-transformer.add.json[0]: \"many\" is not a number"),
    ] {
        let file = config(&echo, &[route], "");
        std::fs::write(&checked, &file).unwrap();
        let check = tests::run_gateway(&["validate", &checked.to_string_lossy()]);
        let out = String::from_utf8_lossy(&check.stdout).into_owned() + &String::from_utf8_lossy(&check.stderr);
        assert!(!check.status.success() && out.contains(said), "validate should say {said}: {out}");
        gw.write_config(&file);
        gw.signal("HUP");
        logged(&gw, &["reload refused", said.split(": ").next().unwrap()]).await;
        let reply = c.get(&gw.url("/r")).await;
        assert_eq!(upstream_header(&reply.json(), "x-from"), "good", "the last good config serves");
    }
    assert_eq!(gw.status().await["config"]["version"], 1);
}
