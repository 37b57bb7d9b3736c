//! `echo-upstream [--listen ADDR] [--name NAME] [--delay-ms MS]`: the demo upstream. Prints
//! `listening on ADDR` once it accepts connections.

use std::time::Duration;
use tests::echo::{serve, EchoConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut name = std::env::var("ECHO_NAME").unwrap_or_else(|_| "echo".into());
    let mut delay = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--name" => name = value,
            "--delay-ms" => delay = Duration::from_millis(value.parse()?),
            other => anyhow::bail!("unknown flag {other}; use --listen, --name, --delay-ms"),
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    serve(listener, EchoConfig { name, delay }, Default::default()).await;
    Ok(())
}
