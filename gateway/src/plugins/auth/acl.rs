//! `acl`: which groups of consumers may use a route. It runs after the auth plugins and needs
//! one of them to have identified the consumer (an anonymous one included, with its groups).

use super::CONSUMER_GROUPS;
use crate::plugins::pipeline::{Access, Ctx, Flow, Plugin, Refusal};
use http::StatusCode;

/// A compiled `acl` config.
pub(crate) struct Acl {
    config: config_sync::model::Acl,
}

impl Acl {
    pub(crate) fn new(config: &config_sync::model::Acl) -> Acl {
        Acl { config: config.clone() }
    }

    fn decide(&self, ctx: &mut Ctx<'_>) -> Flow {
        let Some(identity) = &ctx.identity else {
            tracing::warn!(route = ctx.route, "acl without an auth plugin before it: no consumer to check");
            return Refusal::new(StatusCode::UNAUTHORIZED, "Unauthorized").into();
        };
        let consumer = identity.consumer.clone();
        let member = |groups: &[String]| consumer.groups.iter().any(|g| groups.contains(g));
        let allowed =
            if self.config.allow.is_empty() { !member(&self.config.deny) } else { member(&self.config.allow) };
        if !allowed {
            return Refusal::new(StatusCode::FORBIDDEN, "You cannot consume this service").into();
        }
        let headers = &mut ctx.request.headers;
        match (&consumer.groups_value, self.config.hide_groups_header) {
            (Some(groups), false) => headers.insert(CONSUMER_GROUPS.clone(), groups.clone()),
            _ => headers.remove(&CONSUMER_GROUPS),
        };
        Flow::Continue
    }
}

impl Plugin for Acl {
    fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
        Access::Ready(self.decide(ctx))
    }
}
