//! Runs one plugin's phases on a request, for the plugins' unit tests.

use super::pipeline::{Access, Ctx, Flow, Plugin};
use crate::exchange::ClientInfo;
use crate::telemetry::{Metrics, Name};
use futures_util::FutureExt as _;
use http::{request, HeaderMap, Request, Response, StatusCode};
use std::net::IpAddr;
use std::sync::Arc;

/// What the access phase decided.
#[derive(Debug)]
pub(crate) enum Outcome {
    Continue,
    Refused(StatusCode, String),
    Answered(StatusCode),
}

/// One request through one plugin.
pub(crate) struct Run {
    pub(crate) outcome: Outcome,
    /// The request as it would go upstream.
    pub(crate) request: request::Parts,
    /// The response head after the response phase: the answer's, the refusal's, or a 200 from
    /// the upstream.
    pub(crate) response: HeaderMap,
    /// The upstream a plugin chose instead of the service's destination.
    pub(crate) upstream: Option<Arc<str>>,
}

/// Runs `plugin`'s access phase on `request` from `client`, then its response phase on the
/// answer, or on an empty 200 standing for the upstream's.
pub(crate) fn run(plugin: &dyn Plugin, request: Request<()>, client: IpAddr) -> Run {
    let (mut parts, ()) = request.into_parts();
    let client = ClientInfo::new((client, 40000).into(), 8000);
    let name = |n: &str| Name(Arc::from(n));
    let metrics = Metrics::new().route(&name("s"), &name("r"));
    let mut ctx = Ctx::new(&mut parts, &client, ("r", "s"), (None, "/"), &metrics);
    let flow = match plugin.access(&mut ctx) {
        Access::Ready(flow) => flow,
        Access::Later(later) => later.now_or_never().expect("decided without waiting"),
    };
    let (outcome, mut head) = match flow {
        Flow::Continue => (Outcome::Continue, Response::new(()).into_parts().0),
        Flow::Refuse(refusal) => {
            let mut head = Response::new(()).into_parts().0;
            head.status = refusal.status;
            head.headers = *refusal.headers;
            (Outcome::Refused(refusal.status, refusal.message.into_owned()), head)
        }
        Flow::Respond(answer) => {
            let (head, _) = answer.into_parts();
            (Outcome::Answered(head.status), head)
        }
    };
    plugin.response(&mut ctx, &mut head);
    let upstream = ctx.upstream.take();
    drop(ctx);
    Run { outcome, request: parts, response: head.headers, upstream }
}

/// A response head's header as text, "" when absent.
pub(crate) fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}
