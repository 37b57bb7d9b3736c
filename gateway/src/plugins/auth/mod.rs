//! Who a caller is: consumers, their credentials, and the plugins that check them.
//!
//! - [`Consumers`]: every consumer and credential of a snapshot, indexed for the lookups the
//!   plugins make (a key, a basic-auth user name, a JWT issuer).
//! - [`identify`]: sets who an auth plugin found the caller to be (an
//!   [`Identity`](super::identity::Identity)); rate limiting counts by it and the consumer's own
//!   plugin configs apply from then on.
//! - `key_auth`, `basic_auth`, `jwt`: the plugins that identify; `acl`: the one that checks
//!   groups.
//!
//! An auth plugin that finds no valid credential answers 401, unless it names an `anonymous`
//! consumer: the request then goes on as that consumer, and a later auth plugin of the same
//! route may still identify the caller (Kong's "logical OR"); one that has already been
//! identified by a credential is left as it is.

mod acl;
mod basic_auth;
mod consumers;
mod jwt;
mod key_auth;

pub(crate) use acl::Acl;
pub(crate) use basic_auth::BasicAuth;
pub(crate) use consumers::Consumers;
pub(crate) use jwt::Jwt;
pub(crate) use key_auth::KeyAuth;

use super::identity::Identity;
use super::pipeline::{Ctx, Flow, Refusal};
use consumers::{CredentialId, KnownConsumer};
use http::{HeaderName, HeaderValue, StatusCode};

static CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
static CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
static CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
static CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");
static ANONYMOUS_CONSUMER: HeaderName = HeaderName::from_static("x-anonymous-consumer");
pub(super) static CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");

/// Sets who the caller is (`credential`: none for an anonymous consumer), and tells the
/// upstream with the `X-Consumer-*` headers, replacing whatever the client sent under those
/// names.
fn identify(ctx: &mut Ctx<'_>, consumer: &KnownConsumer, credential: Option<&CredentialId>) {
    let headers = &mut ctx.request.headers;
    let entry = &consumer.entry;
    headers.insert(CONSUMER_ID.clone(), entry.username_value.clone());
    headers.insert(CONSUMER_USERNAME.clone(), entry.username_value.clone());
    match &entry.custom_id_value {
        Some(custom_id) => headers.insert(CONSUMER_CUSTOM_ID.clone(), custom_id.clone()),
        None => headers.remove(&CONSUMER_CUSTOM_ID),
    };
    match credential.and_then(|c| c.value.clone()) {
        Some(id) => {
            headers.insert(CREDENTIAL_IDENTIFIER.clone(), id);
            headers.remove(&ANONYMOUS_CONSUMER);
        }
        None => {
            headers.remove(&CREDENTIAL_IDENTIFIER);
            headers.insert(ANONYMOUS_CONSUMER.clone(), HeaderValue::from_static("true"));
        }
    }
    ctx.identity = Some(Identity { consumer: entry.clone(), credential: credential.map(|c| c.id.clone()) });
    ctx.consumer_plugins.clone_from(&consumer.plugins);
}

/// What an auth plugin does with a caller it could not identify: go on as the `anonymous`
/// consumer if one is set, else refuse.
fn fall_back(ctx: &mut Ctx<'_>, consumers: &Consumers, anonymous: Option<&str>, refusal: Refusal) -> Flow {
    let Some(name) = anonymous else { return refusal.into() };
    match consumers.by_name(name) {
        Some(consumer) => {
            identify(ctx, consumer, None);
            Flow::Continue
        }
        None => {
            tracing::error!(
                consumer = name,
                route = ctx.route,
                "the anonymous consumer of an auth plugin does not exist"
            );
            let message = format!("anonymous consumer {name:?} is configured but doesn't exist");
            Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, message).into()
        }
    }
}

/// Whether an auth plugin with `anonymous` set should leave the caller as a previous plugin
/// identified them (by a credential).
fn already_identified(ctx: &Ctx<'_>, anonymous: Option<&str>) -> bool {
    anonymous.is_some() && ctx.identity.as_ref().is_some_and(Identity::by_credential)
}

/// Whether the request is a CORS preflight that the plugin is told not to authenticate.
fn skipped_preflight(ctx: &Ctx<'_>, run_on_preflight: bool) -> bool {
    !run_on_preflight && ctx.request.method == http::Method::OPTIONS
}

/// A 401 with `message` and a `WWW-Authenticate` challenge.
fn unauthorized(message: &'static str, challenge: HeaderValue) -> Refusal {
    let mut refusal = Refusal::new(StatusCode::UNAUTHORIZED, message);
    refusal.headers.insert(http::header::WWW_AUTHENTICATE, challenge);
    refusal
}

#[cfg(test)]
mod tests;
