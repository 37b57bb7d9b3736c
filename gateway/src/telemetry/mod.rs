//! What a node tells its operators: log lines ([`logs`]), OpenTelemetry traces ([`traces`]) and
//! Prometheus metrics ([`metrics`], with [`process`] metrics).

pub mod logs;
pub mod metrics;
pub mod process;
pub mod traces;

pub use metrics::{Metrics, Name, RouteMetrics};
pub use traces::Tracing;

use crate::settings::Settings;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Installs logging, and trace export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (call inside the
/// Tokio runtime). The export handle, to flush at shutdown.
pub fn init(settings: &Settings) -> Result<Option<Tracing>, traces::TraceError> {
    let exporting = traces::init(&settings.node.node_id)?;
    let (tracing, otel) = match exporting {
        Some((tracing, layer)) => (Some(tracing), Some(layer)),
        None => (None, None),
    };
    let _ = tracing_subscriber::registry().with(logs::layer(settings)).with(otel).try_init();
    if let Some(tracing) = &tracing {
        tracing.log_start();
    }
    Ok(tracing)
}
