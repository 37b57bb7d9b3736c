//! The upstream every contender fronts: HTTP/1.1 with keep-alive, a fixed body per path (and a
//! `304` to a revalidation of `…/revalidate`), no work beyond that. It runs on a single-threaded runtime of its own thread, so it costs the load
//! generator's core one thread, whatever it stands behind.

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;

/// The small body: what most API answers weigh.
pub const SMALL: &[u8] = b"{\"message\":\"hello, world\"}\n";
/// The validator of `…/revalidate`, answered `Cache-Control: no-cache` (a cache revalidates it on
/// every use) and `304` to an `If-None-Match` naming it.
const ETAG: &str = "\"bench\"";
/// The large body's size.
pub const LARGE_LEN: usize = 64 * 1024;

/// Starts the upstream on a free loopback port, for the rest of the process's life.
pub fn start() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    listener.set_nonblocking(true).expect("a non-blocking listener");
    let addr = listener.local_addr().expect("a bound address");
    std::thread::Builder::new()
        .name("upstream".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(serve(listener));
        })
        .expect("start the upstream thread");
    addr
}

async fn serve(listener: std::net::TcpListener) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    let small = Bytes::from_static(SMALL);
    let large = Bytes::from(vec![b'x'; LARGE_LEN]);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (small, large) = (small.clone(), large.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let path = req.uri().path();
                let body = if path.ends_with("/64k") { large.clone() } else { small.clone() };
                let mut response = Response::builder().header(header::CONTENT_TYPE, "application/json");
                if path.ends_with("/revalidate") {
                    response = response.header(header::CACHE_CONTROL, "no-cache").header(header::ETAG, ETAG);
                    if req.headers().get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == ETAG.as_bytes()) {
                        let not_modified = response.status(304).body(Full::new(Bytes::new()));
                        return std::future::ready(Ok::<_, Infallible>(not_modified.expect("a valid response")));
                    }
                }
                std::future::ready(Ok(response.body(Full::new(body)).expect("a valid response")))
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
