//! Bodies stream: 256 MiB up and 256 MiB down through a node whose resident memory stays far
//! below the body's size.

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tests::{Gateway, Upstream};

const SIZE: u64 = 256 * 1024 * 1024;
const RSS_LIMIT_KIB: u64 = 64 * 1024;

fn config(echo: &Upstream) -> String {
    format!("services: [{{ name: a, url: \"http://{}\", routes: [{{ name: a, paths: [/] }}] }}]", echo.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_body_streams_both_ways_in_bounded_memory() {
    let echo = Upstream::start("a").await;
    let gw = Gateway::start(&config(&echo)).await;

    // Upload: the echo counts what arrives.
    let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
    let frames = futures_util::stream::iter(
        (0..SIZE / chunk.len() as u64).map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))),
    );
    let client = Client::builder(TokioExecutor::new()).build_http();
    let request =
        http::Request::post(gw.url("/upload")).header("content-length", SIZE).body(StreamBody::new(frames)).unwrap();
    let response = client.request(request).await.expect("upload");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echoed["body_bytes"], SIZE);

    // Download: count what arrives without keeping it.
    let client = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Empty<Bytes>>();
    let response = client.get(gw.url(&format!("/bytes/{SIZE}")).parse().unwrap()).await.expect("download");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.expect("a frame").data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, SIZE);

    let peak = gw.peak_rss_kib();
    eprintln!("gateway peak RSS after 256 MiB each way: {peak} KiB");
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB for {SIZE} bytes each way");
}
