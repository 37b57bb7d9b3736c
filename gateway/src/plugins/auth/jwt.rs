//! `jwt`: a signed token whose `iss` (or the configured claim) names a credential.
//!
//! Checked as Kong does, in order: one token found (query, cookie, or `Bearer` header); it
//! decodes; its key claim names a credential; its `alg` is the credential's (so `none`, or an
//! HS token signed with an RSA public key as its secret, never passes); the signature verifies;
//! `exp` and `nbf`, when listed in `claims_to_verify`, hold against this node's clock with no
//! leeway; and it lives no longer than `maximum_expiration`.

use super::consumers::JwtEntry;
use super::{already_identified, fall_back, identify, skipped_preflight, Consumers};
use crate::exchange::query::values as query_values;
use crate::plugins::pipeline::{Access, Ctx, Flow, Plugin, Refusal};
use base64::Engine as _;
use config_sync::model::Claim;
use http::{header, HeaderName, StatusCode};
use ring::hmac;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A compiled `jwt` config.
pub(crate) struct Jwt {
    config: config_sync::model::Jwt,
    headers: Vec<HeaderName>,
    consumers: Arc<Consumers>,
}

impl Jwt {
    pub(crate) fn new(config: &config_sync::model::Jwt, consumers: Arc<Consumers>) -> Jwt {
        let headers = config.header_names.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect();
        Jwt { config: config.clone(), headers, consumers }
    }

    /// The one token the request carries.
    fn token<'r>(&self, ctx: &'r Ctx<'_>) -> Result<Cow<'r, str>, Refusal> {
        let mut found: Vec<Cow<'r, str>> = Vec::new();
        for name in &self.config.uri_param_names {
            found.extend(query_values(&ctx.request.uri, name).map(|v| Cow::Owned(v.into_owned())));
        }
        for name in &self.config.cookie_names {
            let cookies = ctx.request.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
            for pair in cookies.flat_map(|v| v.split(';')) {
                if let Some((key, value)) = pair.trim().split_once('=') {
                    if key == name {
                        found.push(Cow::Borrowed(value));
                    }
                }
            }
        }
        for name in &self.headers {
            for value in ctx.request.headers.get_all(name) {
                let Ok(text) = value.to_str() else { return Err(unauthorized("Unauthorized")) };
                match text.trim().split_once(' ') {
                    Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                        found.push(Cow::Borrowed(token.trim()));
                    }
                    _ => return Err(unauthorized("Unauthorized")),
                }
            }
        }
        match found.len() {
            0 => Err(unauthorized("Unauthorized")),
            1 => Ok(found.pop().expect("one")),
            _ => Err(unauthorized("Multiple tokens provided")),
        }
    }

    fn verify(&self, token: &str) -> Result<Arc<JwtEntry>, Refusal> {
        let head = jsonwebtoken::decode_header(token).map_err(|e| unauthorized(format!("Bad token; {e}")))?;
        let claims = unverified_claims(token).ok_or_else(|| unauthorized("Bad token; invalid claims"))?;
        let claim = &self.config.key_claim_name;
        let key = match claims.get(claim) {
            None => return Err(unauthorized(format!("No mandatory '{claim}' in claims"))),
            Some(Value::String(key)) if !key.is_empty() => key,
            Some(_) => return Err(unauthorized(format!("Invalid '{claim}' in claims"))),
        };
        let entry = self
            .consumers
            .by_jwt_key(key)
            .ok_or_else(|| unauthorized(format!("No credentials found for given '{claim}'")))?;
        if head.alg != entry.algorithm {
            return Err(unauthorized("Invalid algorithm"));
        }
        self.check_signature(token, entry)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for claim in &self.config.claims_to_verify {
            let name = claim_name(*claim);
            let at = match claims.get(name) {
                None => return Err(unauthorized("a claim to verify is missing")),
                Some(value) => value.as_u64().ok_or_else(|| unauthorized(format!("'{name}' must be a number")))?,
            };
            match claim {
                // RFC 7519 4.1.4: valid only before `exp` (Kong alike).
                Claim::Exp if at <= now => return Err(unauthorized("token expired")),
                Claim::Nbf if at > now => return Err(unauthorized("token not valid yet")),
                _ => {}
            }
        }
        if !self.config.maximum_expiration.is_zero() {
            let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(u64::MAX);
            if exp.saturating_sub(now) > self.config.maximum_expiration.as_secs() {
                return Err(unauthorized("exp exceeds the maximum allowed expiration"));
            }
        }
        Ok(entry.clone())
    }

    /// Checks the token's signature with the credential's key: an HMAC key made once (ring
    /// compares in constant time), or the RS or ES public key (by jsonwebtoken).
    fn check_signature(&self, token: &str, entry: &JwtEntry) -> Result<(), Refusal> {
        let (message, signature) = token.rsplit_once('.').ok_or_else(|| unauthorized("Bad token"))?;
        let valid = match (&entry.hmac, &entry.public_key) {
            (Some(keys), _) => {
                let key = if self.config.secret_is_base64 { keys.base64.as_ref() } else { Some(&keys.plain) };
                let key = key.ok_or_else(|| unauthorized("Invalid key/secret"))?;
                let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(signature.trim_end_matches('='))
                    .map_err(|_| unauthorized("Bad token"))?;
                hmac::verify(key, message.as_bytes(), &signature).is_ok()
            }
            (None, Some(public)) => {
                jsonwebtoken::crypto::verify(signature, message.as_bytes(), public, entry.algorithm).unwrap_or(false)
            }
            (None, None) => return Err(unauthorized("Invalid key/secret")),
        };
        if valid {
            Ok(())
        } else {
            Err(unauthorized("Invalid signature"))
        }
    }
}

impl Plugin for Jwt {
    fn query_secrets(&self) -> &[String] {
        &self.config.uri_param_names
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
        let anonymous = self.config.anonymous.as_deref();
        if skipped_preflight(ctx, self.config.run_on_preflight) || already_identified(ctx, anonymous) {
            return Access::Ready(Flow::Continue);
        }
        let checked = self.token(ctx).and_then(|token| self.verify(&token));
        Access::Ready(match checked {
            Ok(entry) => {
                identify(ctx, &entry.consumer, Some(&entry.id));
                Flow::Continue
            }
            Err(refusal) => fall_back(ctx, &self.consumers, anonymous, refusal),
        })
    }
}

fn unauthorized(message: impl Into<Cow<'static, str>>) -> Refusal {
    Refusal::new(StatusCode::UNAUTHORIZED, message)
}

fn claim_name(claim: Claim) -> &'static str {
    match claim {
        Claim::Exp => "exp",
        Claim::Nbf => "nbf",
    }
}

/// The token's claims, read without checking anything, to find whose key signs it.
fn unverified_claims(token: &str) -> Option<serde_json::Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}
