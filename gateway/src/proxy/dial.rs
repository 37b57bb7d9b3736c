//! Opening a connection to an upstream target: TCP, then TLS when the service speaks it, then
//! the HTTP handshake of the pool that asked (HTTP/1.1 or HTTP/2), within the connect timeout.

use crate::tls::UpstreamTls;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// What pooled connections are kept by: the target's `host:port`, and 0 for plain text or the
/// id of the TLS settings the connection was made with.
pub type PoolKey = (Arc<str>, u64);

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connection did not open within the connect timeout.
    #[error("connecting to {0} timed out")]
    Timeout(Arc<str>),
    /// The TCP connection failed (refused, unreachable, name not resolved).
    #[error("connecting to {target}: {source}")]
    Io {
        /// The target.
        target: Arc<str>,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS handshake failed (the certificate did not verify, the upstream does not speak
    /// TLS, the service's TLS settings did not load).
    #[error("TLS handshake with {target}: {source}")]
    Tls {
        /// The target.
        target: Arc<str>,
        /// The error.
        source: std::io::Error,
    },
    /// The HTTP handshake failed.
    #[error("HTTP handshake with {target}: {source}")]
    Handshake {
        /// The target.
        target: Arc<str>,
        /// The error.
        source: hyper::Error,
    },
}

/// Opens a TCP connection to `target`, over TLS with `tls`, and makes `protocol`'s handshake on
/// it, all within `connect_timeout`.
pub(super) async fn dial<P: Handshake>(
    target: &Arc<str>,
    tls: Option<&UpstreamTls>,
    connect_timeout: Duration,
    protocol: P,
) -> Result<P::Sender, ConnectError> {
    let connecting = async {
        let stream = TcpStream::connect(&**target)
            .await
            .map_err(|source| ConnectError::Io { target: target.clone(), source })?;
        let _ = stream.set_nodelay(true);
        let handshake = match tls {
            None => protocol.handshake(stream).await,
            Some(tls) => {
                let stream = tls
                    .connect(target, stream)
                    .await
                    .map_err(|source| ConnectError::Tls { target: target.clone(), source })?;
                protocol.handshake(stream).await
            }
        };
        handshake.map_err(|source| ConnectError::Handshake { target: target.clone(), source })
    };
    tokio::time::timeout(connect_timeout, connecting).await.map_err(|_| ConnectError::Timeout(target.clone()))?
}

/// An HTTP handshake on an open stream (plain or TLS), its connection then run by a task of its
/// own until it closes.
pub(super) trait Handshake {
    /// The sending half.
    type Sender;
    /// The handshake.
    fn handshake<S>(self, stream: S) -> impl Future<Output = Result<Self::Sender, hyper::Error>> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static;
}
