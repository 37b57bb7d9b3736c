//! `proxy-cache` on the pipeline: a lookup in the access phase (a hit answers at once), and the
//! copy into the cache in the response phase.

use super::key::Request;
use super::step::{self, Asker, Before, Pass};
use super::Caches;
use crate::plugins::pipeline::{Access, BodyFilter, Ctx, Flow, Plugin};
use crate::plugins::rate_limit::Limiters;
use crate::telemetry::traces;
use config_sync::model::ProxyCache;
use http::response;
use std::sync::Arc;
use tracing::field::Empty;
use tracing::Instrument as _;

/// A compiled `proxy-cache` config.
pub(crate) struct CachePlugin {
    config: ProxyCache,
    caches: Arc<Caches>,
    /// Whether Redis answers.
    limiters: Arc<Limiters>,
}

impl CachePlugin {
    pub(crate) fn new(config: &ProxyCache, caches: Arc<Caches>, limiters: Arc<Limiters>) -> CachePlugin {
        CachePlugin { config: config.clone(), caches, limiters }
    }

    async fn lookup(&self, ctx: &mut Ctx<'_>) -> Flow {
        let redis_down = self.limiters.redis_state() == Some(false);
        let request = &*ctx.request;
        let looked_up = Request { method: &request.method, uri: &request.uri, headers: &request.headers };
        let span = if traces::enabled() {
            tracing::info_span!(target: traces::TARGET, "cache lookup", status = Empty)
        } else {
            tracing::Span::none()
        };
        let asker = Asker {
            route: ctx.route,
            host: ctx.host.unwrap_or(""),
            path: ctx.path,
            consumer: ctx.identity.as_ref().map(|i| &*i.consumer.username),
            redis_down,
        };
        let before = step::before(&self.caches, &self.config, looked_up, asker);
        match before.instrument(span.clone()).await {
            Before::Hit(response, status) => {
                span.record("status", status.as_str());
                ctx.metrics.cache(status.as_str());
                Flow::Respond(response)
            }
            Before::Forward(pass) => {
                // A revalidation: the upstream is asked whether the stored response still holds.
                for (name, value) in pass.validators() {
                    ctx.request.headers.insert(name.clone(), value.clone());
                }
                ctx.keep((pass, span));
                Flow::Continue
            }
        }
    }
}

impl Plugin for CachePlugin {
    fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
        Access::Later(Box::pin(self.lookup(ctx)))
    }

    fn response(&self, ctx: &mut Ctx<'_>, head: &mut response::Parts) -> Option<BodyFilter> {
        let (pass, span) = ctx.take::<(Box<Pass>, tracing::Span)>()?;
        // An answer made here (a 502, a refusal by a later plugin) is never stored; a stale
        // entry may stand in for it.
        if !ctx.upstream_answered && !pass.may_answer_errors() {
            return None;
        }
        let (filter, status) = step::after(*pass, &self.caches, head, ctx.upstream_answered);
        span.record("status", status.as_str());
        ctx.metrics.cache(status.as_str());
        filter
    }
}
