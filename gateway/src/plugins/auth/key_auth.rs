//! `key-auth`: a key in a header or the query string names a consumer.

use super::{already_identified, fall_back, identify, skipped_preflight, unauthorized, Consumers};
use crate::exchange::query::{values as query_values, without as without_query_param};
use crate::plugins::pipeline::{Access, Ctx, Flow, Plugin, Refusal};
use http::{HeaderName, HeaderValue};
use std::sync::Arc;

/// A compiled `key-auth` config.
pub(crate) struct KeyAuth {
    config: config_sync::model::KeyAuth,
    /// `key_names` as header names (validated to be tokens).
    headers: Vec<HeaderName>,
    consumers: Arc<Consumers>,
}

/// Where a key was found, to hide it.
enum Found {
    Header(HeaderName),
    Query(String),
}

impl KeyAuth {
    pub(crate) fn new(config: &config_sync::model::KeyAuth, consumers: Arc<Consumers>) -> KeyAuth {
        let headers = config.key_names.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect();
        KeyAuth { config: config.clone(), headers, consumers }
    }

    /// The key the request carries, or why there is none to use.
    fn find(&self, ctx: &Ctx<'_>) -> Result<(String, Found), Refusal> {
        for (name, header) in self.config.key_names.iter().zip(&self.headers) {
            if self.config.key_in_header {
                let mut values = ctx.request.headers.get_all(header).iter();
                if let Some(value) = values.next() {
                    if values.next().is_some() {
                        return Err(unauthorized("Duplicate API key found", challenge()));
                    }
                    let key = value.to_str().map_err(|_| invalid())?;
                    return Ok((key.to_owned(), Found::Header(header.clone())));
                }
            }
            if self.config.key_in_query {
                let mut found = query_values(&ctx.request.uri, name);
                if let Some(key) = found.next() {
                    if found.next().is_some() {
                        return Err(unauthorized("Duplicate API key found", challenge()));
                    }
                    return Ok((key.into_owned(), Found::Query(name.clone())));
                }
            }
        }
        Err(unauthorized("No API key found in request", challenge()))
    }
}

impl Plugin for KeyAuth {
    fn query_secrets(&self) -> &[String] {
        if self.config.key_in_query {
            &self.config.key_names
        } else {
            &[]
        }
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
        let anonymous = self.config.anonymous.as_deref();
        if skipped_preflight(ctx, self.config.run_on_preflight) || already_identified(ctx, anonymous) {
            return Access::Ready(Flow::Continue);
        }
        let found = self.find(ctx).and_then(|(key, at)| match self.consumers.by_key(&key) {
            Some((consumer, id)) => Ok((consumer.clone(), id.clone(), at)),
            None => Err(invalid()),
        });
        let flow = match found {
            Ok((consumer, id, at)) => {
                if self.config.hide_credentials {
                    match at {
                        Found::Header(name) => {
                            ctx.request.headers.remove(name);
                        }
                        Found::Query(name) => ctx.request.uri = without_query_param(&ctx.request.uri, &name),
                    }
                }
                identify(ctx, &consumer, Some(&id));
                Flow::Continue
            }
            Err(refusal) => fall_back(ctx, &self.consumers, anonymous, refusal),
        };
        Access::Ready(flow)
    }
}

fn challenge() -> HeaderValue {
    HeaderValue::from_static("Key realm=\"gateway\"")
}

fn invalid() -> Refusal {
    unauthorized("Invalid authentication credentials", challenge())
}
