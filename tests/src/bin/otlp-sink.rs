//! `otlp-sink [--listen ADDR]`: an OTLP trace receiver (gRPC and HTTP on one port) that prints
//! one line per span received: its protocol, service instance, trace id and name. A stand-in for
//! Jaeger where no Jaeger image can be had.

use std::time::Duration;
use tests::otlp::OtlpSink;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen = "0.0.0.0:4317".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--listen", Some(value)) => listen = value,
            (other, _) => anyhow::bail!("unknown flag {other}; use --listen ADDR"),
        }
    }
    let sink = OtlpSink::serve(tokio::net::TcpListener::bind(&listen).await?).await;
    println!("listening on {}", sink.addr);
    let mut printed = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let spans = sink.spans();
        for span in &spans[printed..] {
            let instance = span.resource.get("service.instance.id").map_or("", String::as_str);
            println!("{} {} trace={} span={:?}", span.protocol, instance, span.trace_id, span.name);
        }
        printed = spans.len();
    }
}
