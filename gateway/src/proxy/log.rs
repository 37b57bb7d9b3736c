//! The proxy's side of the log phase: a request's record, made only when someone wants it.
//!
//! The proxy asks [`Logs::matched`] (or [`Logs::unmatched`] for a request no route took) once per
//! request; when neither the route's chain nor the consumer's has a log plugin and the access log
//! is off, that is two flag checks and nothing else. Otherwise a [`Draft`] is made from the
//! request head (copied, secrets redacted), told what the upstream exchange found
//! ([`Draft::forwarded`]) and the response head ([`Draft::respond`]), then carried by the body
//! (`ProxyBody::logged`), which counts the bytes it sends and finishes the record when it ends
//! or is dropped.
//! Finishing pushes the record, without waiting, into each sink's bounded queue
//! ([`crate::request_log`]); serializing and sending happen on the sinks' tasks.

use crate::exchange::ClientInfo;
use crate::plugins::pipeline::{Ctx, Loggers};
use crate::request_log::record::{self, Record};
use crate::request_log::AccessLog;
use crate::runtime::RouteEntry;
use http::{request, Uri};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What the proxy logs with: this node's id, and the access log when it is on.
pub struct Logs {
    node: Arc<str>,
    access: Option<AccessLog>,
}

impl Logs {
    /// Logs of node `node_id`, with `access` when the access log is on.
    pub fn new(node_id: &str, access: Option<AccessLog>) -> Logs {
        Logs { node: Arc::from(node_id), access }
    }

    /// The draft of a request no route took: only the access log wants it.
    pub(crate) fn unmatched(
        &self,
        head: &request::Parts,
        uri: &Uri,
        host: Option<&str>,
        client: &ClientInfo,
        received: Instant,
    ) -> Option<Box<Draft>> {
        let access = self.access.clone()?;
        let record = self.record(head, uri, host, client, received, &[]);
        Some(Box::new(Draft { record, loggers: Loggers::new(), access: Some(access), received, secrets: Vec::new() }))
    }

    /// The draft of a request to `entry`, once its plugins' access phase has run (the consumer
    /// is known, and the request head is as they left it); none when nobody wants it.
    #[inline]
    pub(crate) fn matched(
        &self,
        entry: &RouteEntry,
        ctx: &Ctx<'_>,
        uri: &Uri,
        received: Instant,
    ) -> Option<Box<Draft>> {
        if self.access.is_none() && !entry.plugins.may_log(ctx) {
            return None;
        }
        self.draft(entry, ctx, uri, received)
    }

    fn draft(&self, entry: &RouteEntry, ctx: &Ctx<'_>, uri: &Uri, received: Instant) -> Option<Box<Draft>> {
        let loggers = entry.plugins.loggers(ctx);
        if loggers.is_empty() && self.access.is_none() {
            return None;
        }
        let secrets = entry.plugins.query_secrets();
        let mut record = self.record(ctx.request, uri, ctx.host, ctx.client, received, secrets);
        record.service = Some(entry.service_name.0.clone());
        record.route = Some(entry.name.0.clone());
        record.consumer =
            ctx.identity.as_ref().map(|i| (i.consumer.username.clone(), i.consumer.custom_id_value.clone()));
        let secrets = secrets.to_vec();
        Some(Box::new(Draft { record, loggers, access: self.access.clone(), received, secrets }))
    }

    fn record(
        &self,
        head: &request::Parts,
        uri: &Uri,
        host: Option<&str>,
        client: &ClientInfo,
        received: Instant,
        secrets: &[String],
    ) -> Record {
        let started_at = SystemTime::now() - received.elapsed();
        let path = record::scrubbed_uri(uri, secrets);
        Record::new(started_at, self.node.clone(), head, path, client.https, host, client.ip_value().clone(), secrets)
    }
}

/// A request's record while the request goes on, and where it will go.
pub(crate) struct Draft {
    record: Record,
    loggers: Loggers,
    access: Option<AccessLog>,
    received: Instant,
    /// The route's secret query parameters, for the upstream URI.
    secrets: Vec<String>,
}

impl Draft {
    /// The path and query the request goes upstream with.
    pub(crate) fn upstream_uri(&mut self, upstream_uri: &Uri) {
        self.record.upstream_uri = Some(record::scrubbed_uri(upstream_uri, &self.secrets));
    }

    /// What the upstream exchange found: the gateway's own time (receipt to sending), the
    /// upstream's time to its head, and the target that answered.
    pub(crate) fn forwarded(&mut self, proxy: Duration, upstream: Duration, target: Option<&Arc<str>>) {
        self.record.proxy_latency = proxy;
        self.record.upstream_latency = Some(upstream);
        self.record.target = target.cloned();
    }

    /// Takes the response head as it goes to the client; the body then carries the draft
    /// along (`ProxyBody::logged`) until it has been sent.
    pub(crate) fn respond(&mut self, head: &http::response::Parts) {
        self.record.status = head.status.as_u16();
        self.record.response_headers = record::redact_headers(&head.headers, &[]);
        if self.record.upstream_latency.is_none() {
            self.record.proxy_latency = self.received.elapsed();
        }
    }

    /// The body is done: `sent` bytes went to the client. Hands the record to every sink.
    pub(crate) fn finish(self: Box<Self>, sent: u64) {
        let Draft { mut record, loggers, access, received, .. } = *self;
        record.request_latency = received.elapsed();
        record.response_size = sent;
        let record = Arc::new(record);
        for logger in &loggers {
            logger.log(&record);
        }
        if let Some(access) = access {
            access.push(record);
        }
    }
}
