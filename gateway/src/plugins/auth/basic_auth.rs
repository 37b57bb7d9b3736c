//! `basic-auth`: `Authorization: Basic base64(user:password)` checked against a credential.
//!
//! Passwords are stored as argon2id hashes, which take milliseconds of CPU to check by design.
//! So checks run on the blocking pool, at most [`CHECKS_AT_ONCE`] at a time (a flood of guesses
//! cannot starve the proxy), and their results are remembered per credential and password
//! digest for the life of the snapshot: a client sending the same credentials again costs a
//! hash lookup.

use super::consumers::BasicEntry;
use super::{already_identified, fall_back, identify, unauthorized, Consumers};
use crate::plugins::pipeline::{Access, Ctx, Flow, Plugin, Refusal};
use base64::Engine as _;
use http::{header, HeaderValue};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use tokio::sync::Semaphore;

/// Hash checks running at once, node-wide.
const CHECKS_AT_ONCE: usize = 2;
static CHECKS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(CHECKS_AT_ONCE));

/// Results remembered, at most; the memory is cleared when full.
const REMEMBERED: usize = 10_000;

/// A compiled `basic-auth` config.
pub(crate) struct BasicAuth {
    config: config_sync::model::BasicAuth,
    challenge: HeaderValue,
    consumers: Arc<Consumers>,
    /// Check results by digest of credential id and password.
    checked: Arc<Mutex<HashMap<[u8; 32], bool>>>,
}

impl BasicAuth {
    pub(crate) fn new(config: &config_sync::model::BasicAuth, consumers: Arc<Consumers>) -> BasicAuth {
        // The realm is validated to hold no quotes or controls.
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{}\"", config.realm))
            .unwrap_or(HeaderValue::from_static("Basic realm=\"gateway\""));
        BasicAuth { config: config.clone(), challenge, consumers, checked: Arc::default() }
    }

    async fn authenticate(&self, ctx: &mut Ctx<'_>) -> Flow {
        let anonymous = self.config.anonymous.as_deref();
        let outcome = match credentials(ctx) {
            None if ctx.request.headers.contains_key(header::AUTHORIZATION) => Err(self.invalid()),
            None => Err(unauthorized("Unauthorized", self.challenge.clone())),
            Some((username, password)) => match self.consumers.by_basic_username(&username) {
                Some(entry) if self.check(entry, password).await => Ok(entry.clone()),
                _ => Err(self.invalid()),
            },
        };
        match outcome {
            Ok(entry) => {
                if self.config.hide_credentials {
                    ctx.request.headers.remove(header::AUTHORIZATION);
                }
                identify(ctx, &entry.consumer, Some(&entry.id));
                Flow::Continue
            }
            Err(refusal) => fall_back(ctx, &self.consumers, anonymous, refusal),
        }
    }

    fn invalid(&self) -> Refusal {
        unauthorized("Invalid authentication credentials", self.challenge.clone())
    }

    /// Whether `password` is the credential's, from memory when it was checked before.
    async fn check(&self, entry: &Arc<BasicEntry>, password: Vec<u8>) -> bool {
        if !entry.password.is_hashed() {
            // A plain password of the declarative file: a constant-time comparison.
            return entry.password.verify(&password);
        }
        let mut digest = Sha256::new();
        digest.update(entry.id.id.as_bytes());
        digest.update([0]);
        digest.update(&password);
        let digest: [u8; 32] = digest.finalize().into();
        let remembered = |checked: &Mutex<HashMap<[u8; 32], bool>>| {
            checked.lock().unwrap_or_else(PoisonError::into_inner).get(&digest).copied()
        };
        if let Some(known) = remembered(&self.checked) {
            return known;
        }
        let Ok(_permit) = CHECKS.acquire().await else { return false };
        // Another request may have checked the same while this one waited.
        if let Some(known) = remembered(&self.checked) {
            return known;
        }
        let stored = entry.password.clone();
        let matches = tokio::task::spawn_blocking(move || stored.verify(&password)).await.unwrap_or(false);
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        if checked.len() >= REMEMBERED {
            checked.clear();
        }
        checked.insert(digest, matches);
        matches
    }
}

impl Plugin for BasicAuth {
    fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
        if already_identified(ctx, self.config.anonymous.as_deref()) {
            return Access::Ready(Flow::Continue);
        }
        Access::Later(Box::pin(self.authenticate(ctx)))
    }
}

/// The user name and password of `Authorization: Basic ...`; None when there is no such
/// header or it does not decode to `user:password`.
fn credentials(ctx: &Ctx<'_>) -> Option<(String, Vec<u8>)> {
    let value = ctx.request.headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let username = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((username, decoded[colon + 1..].to_vec()))
}
