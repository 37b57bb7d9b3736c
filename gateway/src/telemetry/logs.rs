//! Log lines: JSON or pretty text, filtered with `RUST_LOG` syntax, each carrying the node id.

use crate::settings::{LogFormat, Settings};
use std::fmt;
use std::io::IsTerminal;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

/// The log layer for `settings`, with its filter: `RUST_LOG` when set, else `log_level`.
pub fn layer<S>(settings: &Settings) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.node.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let format = settings.node.log_format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Json => {
            let inner = format::format().json().flatten_event(true).with_current_span(false).with_span_list(false);
            base.event_format(WithNodeId::json(&settings.node.node_id, inner))
                .fmt_fields(format::JsonFields::new())
                .with_filter(filter)
                .boxed()
        }
        LogFormat::Pretty => {
            base.event_format(WithNodeId::text(&settings.node.node_id, format::format())).with_filter(filter).boxed()
        }
    }
}

/// Puts the node id on every line: a `node_id` field first in JSON, a prefix in text.
struct WithNodeId<F> {
    inner: F,
    /// `"node_id":"<id>",` for JSON, `<id> ` for text.
    prefix: String,
    json: bool,
}

impl<F> WithNodeId<F> {
    fn json(node_id: &str, inner: F) -> Self {
        let quoted = serde_json::to_string(node_id).unwrap_or_else(|_| "\"\"".into());
        WithNodeId { inner, prefix: format!("\"node_id\":{quoted},"), json: true }
    }

    fn text(node_id: &str, inner: F) -> Self {
        WithNodeId { inner, prefix: format!("{node_id} "), json: false }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithNodeId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if !self.json {
            writer.write_str(&self.prefix)?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => {
                writer.write_char('{')?;
                writer.write_str(&self.prefix)?;
                writer.write_str(rest)
            }
            None => writer.write_str(&line),
        }
    }
}
