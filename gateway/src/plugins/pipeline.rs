//! The plugin pipeline: the one trait every plugin implements, the request context they share,
//! and the chain of plugins a route runs.
//!
//! A request goes through the phases in order: `access` before the upstream is contacted (a
//! plugin may answer the request itself: a 401, a 429, a cache hit), then `response` on the way
//! back (the head, and the body wrapped if a plugin asks), then `log` once the response has been
//! sent (a record of the request, made only when a plugin of the chain logs: `crate::request_log`).
//! The response and log phases run for every plugin of the chain, also when an earlier one
//! answered, so that a 429 still carries its rate-limit headers and a cache hit its
//! `X-RateLimit-*`, and both are logged.
//!
//! Plugins run by priority, highest first ([`super::registry`]). For each plugin name the most
//! specific config wins: consumer, then route, then service, then global. The route, service and
//! global configs are resolved once per snapshot into a [`Chain`]; a consumer's own configs are
//! known only once an auth plugin has identified the consumer, and replace the route's for the
//! plugins that run after it.

use super::identity::Identity;
use crate::exchange::{BoxBody, ClientBody, ClientInfo};
use crate::request_log::Record;
use crate::telemetry::RouteMetrics;
use bytes::Bytes;
use http::{request, response, HeaderMap, Response, StatusCode};
use smallvec::SmallVec;
use std::any::Any;
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A plugin, compiled from its config once per snapshot and shared by every request.
pub(crate) trait Plugin: Send + Sync + 'static {
    /// Query parameters that carry secrets (an API key): their values never go into a trace.
    fn query_secrets(&self) -> &[String] {
        &[]
    }

    /// Before the upstream is contacted. Per-request state for the later phases goes in
    /// [`Ctx::keep`].
    fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
        let _ = ctx;
        Access::Ready(Flow::Continue)
    }

    /// On the response head, before it goes to the client (an upstream's, or an answer made by
    /// a plugin or the proxy). May ask for the body to be wrapped.
    fn response(&self, ctx: &mut Ctx<'_>, head: &mut response::Parts) -> Option<BodyFilter> {
        let _ = (ctx, head);
        None
    }

    /// Whether the plugin has a log phase: only then is a record made for its requests.
    fn logs(&self) -> bool {
        false
    }

    /// Once the response has been sent (or the client went away): the request's record. Runs
    /// on the request's task: it must not wait (a push into a queue).
    fn log(&self, record: &Arc<Record>) {
        let _ = record;
    }
}

/// The plugins with a log phase that one request runs.
pub(crate) type Loggers = SmallVec<[Arc<dyn Plugin>; 1]>;

/// What the access phase decided, now or later.
pub(crate) enum Access<'a> {
    /// Decided without waiting.
    Ready(Flow),
    /// Decided once this completes (a call to Redis).
    Later(Pin<Box<dyn Future<Output = Flow> + Send + 'a>>),
}

/// Whether the request goes on.
pub(crate) enum Flow {
    /// On to the next plugin, then the upstream.
    Continue,
    /// Refused: `{"message": ...}` with this status and these headers.
    Refuse(Refusal),
    /// Answered whole (a cache hit).
    Respond(Response<Bytes>),
}

/// A refusal, rendered by the proxy in one place (JSON today).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) message: Cow<'static, str>,
    /// Boxed: a refusal travels in `Result`s, which it would make large.
    pub(crate) headers: Box<HeaderMap>,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal { status, message: message.into(), headers: Box::default() }
    }
}

impl From<Refusal> for Flow {
    fn from(refusal: Refusal) -> Flow {
        Flow::Refuse(refusal)
    }
}

/// Wraps a response body (the cache copies it as it streams).
pub(crate) type BodyFilter = Box<dyn FnOnce(BoxBody) -> BoxBody + Send>;

/// What the plugins of one request share.
pub(crate) struct Ctx<'a> {
    /// The request head, as it will go upstream; plugins may change it.
    pub(crate) request: &'a mut request::Parts,
    /// The request body, as it will go upstream; plugins may wrap it or read it whole.
    pub(crate) body: ClientBody,
    pub(crate) client: &'a ClientInfo,
    /// The matched route and its service, by name.
    pub(crate) route: &'a str,
    pub(crate) service: &'a str,
    /// The host the client asked for, and the normalized request path.
    pub(crate) host: Option<&'a str>,
    pub(crate) path: &'a str,
    /// The route's metrics, which plugins count their outcomes in.
    pub(crate) metrics: &'a RouteMetrics,
    /// Who the client is, once an auth plugin has said.
    pub(crate) identity: Option<Identity>,
    /// The identified consumer's own plugin configs, when it has any.
    pub(crate) consumer_plugins: Option<Arc<Chain>>,
    /// Whether the response came from the upstream (not from a plugin or the proxy).
    pub(crate) upstream_answered: bool,
    /// The upstream, by name, a plugin chose for this request instead of the service's own
    /// destination (`traffic-split`); the proxy forwards there with the service's settings.
    pub(crate) upstream: Option<Arc<str>>,
    /// The whole upstream path, when a plugin set it (`request-transformer`'s `replace.uri`):
    /// sent as is, instead of the service's path joined with the route's rest.
    pub(crate) upstream_path: Option<Box<str>>,
    /// Whether a plugin set the request's `Host` for the upstream: it is then sent as set,
    /// as with the route's `preserve_host`.
    pub(crate) host_set: bool,
    /// The position in the chain of the plugin running now.
    current: u8,
    /// Plugins from this position on use the consumer's own config where it has one.
    consumer_from: u8,
    /// Each plugin's state between its phases, by position.
    kept: SmallVec<[(u8, Box<dyn Any + Send>); 2]>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        request: &'a mut request::Parts,
        client: &'a ClientInfo,
        (route, service): (&'a str, &'a str),
        (host, path): (Option<&'a str>, &'a str),
        metrics: &'a RouteMetrics,
    ) -> Ctx<'a> {
        Ctx {
            request,
            body: ClientBody::Empty,
            client,
            route,
            service,
            host,
            path,
            metrics,
            identity: None,
            consumer_plugins: None,
            upstream_answered: false,
            upstream: None,
            upstream_path: None,
            host_set: false,
            current: 0,
            consumer_from: u8::MAX,
            kept: SmallVec::new(),
        }
    }

    /// Keeps `state` for the running plugin's later phases.
    pub(crate) fn keep<T: Any + Send>(&mut self, state: T) {
        let current = self.current;
        self.kept.retain(|(at, _)| *at != current);
        self.kept.push((current, Box::new(state)));
    }

    /// Takes what the running plugin kept, if it kept a `T`.
    pub(crate) fn take<T: Any + Send>(&mut self) -> Option<T> {
        let index = self.kept.iter().position(|(at, _)| *at == self.current)?;
        let (_, state) = self.kept.swap_remove(index);
        state.downcast().ok().map(|b| *b)
    }

    /// The consumer's chain, when one is identified and has plugins of its own.
    fn consumer_chain(&self) -> Option<Arc<Chain>> {
        self.consumer_plugins.clone()
    }
}

/// A plugin in a chain: its position in the registry's order (also the order plugins run in)
/// and its name.
pub(crate) struct Link {
    pub(crate) position: u8,
    pub(crate) name: &'static str,
    pub(crate) plugin: Arc<dyn Plugin>,
}

/// The plugins a route runs, in the order they run.
#[derive(Default)]
pub(crate) struct Chain {
    links: Vec<Link>,
    /// Every plugin's [`Plugin::query_secrets`].
    query_secrets: Vec<String>,
    /// Whether a plugin of the chain has a log phase ([`Plugin::logs`]).
    logs: bool,
}

impl Chain {
    /// A chain of `links`, given in any order.
    pub(crate) fn new(mut links: Vec<Link>) -> Chain {
        links.sort_by_key(|link| link.position);
        let query_secrets = links.iter().flat_map(|link| link.plugin.query_secrets()).cloned().collect();
        let logs = links.iter().any(|link| link.plugin.logs());
        Chain { links, query_secrets, logs }
    }

    /// Whether a plugin this request runs may log it: one of this chain's, or of the identified
    /// consumer's own. Two flag checks: what a request nobody logs pays.
    #[inline]
    pub(crate) fn may_log(&self, ctx: &Ctx<'_>) -> bool {
        self.logs || ctx.consumer_plugins.as_ref().is_some_and(|c| c.logs)
    }

    /// The plugins with a log phase this request runs, the consumer's config over the route's
    /// from the plugin after the one that identified it, as in the other phases.
    pub(crate) fn loggers(&self, ctx: &Ctx<'_>) -> Loggers {
        let mut loggers = Loggers::new();
        if !self.may_log(ctx) {
            return loggers;
        }
        let consumer = ctx.consumer_chain();
        let mut from = 0u8;
        loop {
            let own = consumer.as_deref().filter(|_| from >= ctx.consumer_from);
            let Some(link) = self.next(from, own) else { return loggers };
            if link.plugin.logs() {
                loggers.push(link.plugin.clone());
            }
            from = link.position + 1;
        }
    }

    /// Query parameters whose values are secrets.
    pub(crate) fn query_secrets(&self) -> &[String] {
        &self.query_secrets
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// The first plugin at `from` or later: the consumer's, where it has one at that position,
    /// else the route's.
    fn next<'c>(&'c self, from: u8, consumer: Option<&'c Chain>) -> Option<&'c Link> {
        let first = |chain: &'c Chain| chain.links.iter().find(|link| link.position >= from);
        match (first(self), consumer.and_then(first)) {
            (Some(route), Some(own)) if own.position <= route.position => Some(own),
            (Some(route), _) => Some(route),
            (None, own) => own,
        }
    }

    /// Runs the access phase: each plugin in order until one answers. Once a plugin has
    /// identified the consumer, the consumer's own configs replace the route's for the rest.
    /// Refusals are counted by plugin.
    pub(crate) async fn access(&self, ctx: &mut Ctx<'_>) -> Flow {
        let mut from = 0u8;
        loop {
            let consumer = if from >= ctx.consumer_from { ctx.consumer_chain() } else { None };
            let Some(link) = self.next(from, consumer.as_deref()) else { return Flow::Continue };
            let at = link.position;
            ctx.current = at;
            let flow = match link.plugin.access(ctx) {
                Access::Ready(flow) => flow,
                Access::Later(decision) => decision.await,
            };
            if ctx.identity.is_some() && ctx.consumer_from == u8::MAX {
                ctx.consumer_from = at + 1;
            }
            match flow {
                Flow::Continue => from = at + 1,
                Flow::Refuse(refusal) => {
                    ctx.metrics.refusal(link.name, refusal.status.as_u16());
                    return Flow::Refuse(refusal);
                }
                answered => return answered,
            }
        }
    }

    /// Runs the response phase of every plugin, in order, on `head`; the body filters asked
    /// for, to apply in order.
    pub(crate) fn response(&self, ctx: &mut Ctx<'_>, head: &mut response::Parts) -> SmallVec<[BodyFilter; 1]> {
        let mut filters = SmallVec::new();
        let consumer = ctx.consumer_chain();
        let mut from = 0u8;
        loop {
            let own = consumer.as_deref().filter(|_| from >= ctx.consumer_from);
            let Some(link) = self.next(from, own) else { return filters };
            ctx.current = link.position;
            filters.extend(link.plugin.response(ctx, head));
            from = link.position + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records its phases into a shared log, and answers in access when told to.
    struct Probe {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        answer: bool,
    }

    impl Plugin for Probe {
        fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
            self.log.lock().unwrap().push(format!("access {}", self.name));
            ctx.keep(self.name);
            if self.answer {
                return Access::Ready(Refusal::new(StatusCode::FORBIDDEN, "no").into());
            }
            Access::Later(Box::pin(async { Flow::Continue }))
        }

        fn response(&self, ctx: &mut Ctx<'_>, _: &mut response::Parts) -> Option<BodyFilter> {
            let kept = ctx.take::<&str>().unwrap_or("-");
            self.log.lock().unwrap().push(format!("response {} kept {kept}", self.name));
            None
        }
    }

    fn probe(log: &Arc<Mutex<Vec<String>>>, position: u8, name: &'static str, answer: bool) -> Link {
        Link { position, name, plugin: Arc::new(Probe { name, log: log.clone(), answer }) }
    }

    /// Runs both phases; whether the access phase answered.
    fn run(chain: &Chain) -> bool {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        let client = ClientInfo::new(([127, 0, 0, 1], 1).into(), 80);
        let name = |n: &str| crate::telemetry::Name(Arc::from(n));
        let metrics = crate::telemetry::Metrics::new().route(&name("s"), &name("r"));
        let mut ctx = Ctx::new(&mut parts, &client, ("r", "s"), (None, "/"), &metrics);
        let answered = !matches!(futures_util::FutureExt::now_or_never(chain.access(&mut ctx)), Some(Flow::Continue));
        let (mut head, ()) = Response::new(()).into_parts();
        chain.response(&mut ctx, &mut head);
        answered
    }

    #[test]
    fn plugins_run_in_order_and_every_response_phase_runs_after_an_answer() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let chain = Chain::new(vec![probe(&log, 5, "late", false), probe(&log, 1, "early", false)]);
        assert!(!run(&chain));
        assert_eq!(
            *log.lock().unwrap(),
            ["access early", "access late", "response early kept early", "response late kept late"]
        );
        log.lock().unwrap().clear();
        let chain = Chain::new(vec![probe(&log, 1, "refuses", true), probe(&log, 5, "after", false)]);
        assert!(run(&chain));
        assert_eq!(
            *log.lock().unwrap(),
            ["access refuses", "response refuses kept refuses", "response after kept -"],
            "the plugin after the answer did not run its access, but runs its response phase"
        );
    }
}
