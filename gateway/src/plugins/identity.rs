//! Who the caller is, once an auth plugin has said: what the pipeline, rate limiting and the
//! upstream headers need of it.

use http::HeaderValue;
use std::sync::Arc;

/// A consumer as the request path uses it, its header values made once per snapshot.
pub(crate) struct ConsumerEntry {
    pub(crate) username: Arc<str>,
    pub(crate) username_value: HeaderValue,
    pub(crate) custom_id_value: Option<HeaderValue>,
    pub(crate) groups: Vec<String>,
    /// `X-Consumer-Groups`: the groups joined by `, `; none without groups.
    pub(crate) groups_value: Option<HeaderValue>,
}

/// Who the caller is.
#[derive(Clone)]
pub(crate) struct Identity {
    pub(crate) consumer: Arc<ConsumerEntry>,
    /// The credential's id; none for an anonymous consumer.
    pub(crate) credential: Option<Arc<str>>,
}

impl Identity {
    /// Whether a credential identified the caller (not an anonymous fallback).
    pub(crate) fn by_credential(&self) -> bool {
        self.credential.is_some()
    }
}
