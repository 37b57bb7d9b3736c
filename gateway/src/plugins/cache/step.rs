//! The cache's two moments on the request path: before forwarding (a hit answers at once) and
//! after the upstream answered (a response that may be cached is copied into the cache as it
//! streams). `X-Cache-Status` says which: `Hit`, `Miss`, `Refresh` or `Bypass`; `X-Cache-Key`
//! names the entry.

use super::entry::{now_ms, Entry};
use super::key::{cache_key, Request};
use super::policy::{request_rule, response_ttl, vary_on, RequestRule};
use super::store::{Caches, FillGuard, Lookup};
use super::tee::{Pending, Tee};
use crate::exchange::BoxBody;
use crate::plugins::pipeline::BodyFilter;
use bytes::Bytes;
use config_sync::model::ProxyCache;
use http::{header, response, HeaderMap, HeaderValue, Response};
use std::sync::Arc;
use std::time::SystemTime;

/// `X-Cache-Status` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache.
    Hit,
    /// Not in the cache; the response may be stored.
    Miss,
    /// The client asked for a fresh answer (`no-cache`); the response may be stored.
    Refresh,
    /// The cache stayed out of it.
    Bypass,
}

impl CacheStatus {
    /// As written in `X-Cache-Status` and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "Hit",
            CacheStatus::Miss => "Miss",
            CacheStatus::Refresh => "Refresh",
            CacheStatus::Bypass => "Bypass",
        }
    }
}

/// What the cache decided before forwarding.
pub enum Before {
    /// A hit: the response to send.
    Hit(Response<Bytes>),
    /// Forward, then call [`after`].
    Forward(Pass),
}

/// A request on its way upstream, as the cache sees it.
pub struct Pass {
    status: CacheStatus,
    key: String,
    redis: bool,
    config: ProxyCache,
    /// The client's headers, for the values a response varies on.
    request_headers: HeaderMap,
    fill: Option<FillGuard>,
}

/// Looks the request up. `redis_down` makes a Redis-backed cache step aside at once.
pub async fn before(
    caches: &Arc<Caches>,
    route: &str,
    config: &ProxyCache,
    request: Request<'_>,
    host: &str,
    path: &str,
    redis_down: bool,
) -> Before {
    let key = cache_key(route, config, request, host, path);
    let redis = caches.uses_redis(config.strategy);
    let mut pass = Pass {
        status: CacheStatus::Bypass,
        key,
        redis,
        config: config.clone(),
        request_headers: request.headers.clone(),
        fill: None,
    };
    let rule = request_rule(config, request.method, request.headers);
    if rule == RequestRule::Bypass || (redis && redis_down) {
        return Before::Forward(pass);
    }
    if rule == RequestRule::Refresh {
        pass.status = CacheStatus::Refresh;
        return Before::Forward(pass);
    }
    // At most twice: once, and again after waiting for another request filling the same key.
    for _ in 0..2 {
        let now = SystemTime::now();
        match caches.lookup(&pass.key, redis, now).await {
            Ok(Lookup::Hit(entry)) if entry.matches(request.headers) => {
                return Before::Hit(hit(&entry, &pass.key, now))
            }
            Ok(Lookup::Hit(_)) => {
                // Another variant is cached: this one replaces it.
                pass.status = CacheStatus::Miss;
                return Before::Forward(pass);
            }
            Ok(Lookup::Fill(guard)) => {
                pass.status = CacheStatus::Miss;
                pass.fill = Some(guard);
                return Before::Forward(pass);
            }
            Ok(Lookup::Waited) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "cache unavailable; bypassing it");
                return Before::Forward(pass);
            }
        }
    }
    pass.status = CacheStatus::Miss;
    Before::Forward(pass)
}

fn hit(entry: &Entry, key: &str, now: SystemTime) -> Response<Bytes> {
    let mut response = Response::new(entry.body.clone());
    *response.status_mut() = entry.status;
    let headers = response.headers_mut();
    for (name, value) in &entry.headers {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(header::AGE, crate::exchange::number_header(entry.age(now)));
    mark(headers, CacheStatus::Hit, key);
    response
}

fn mark(headers: &mut HeaderMap, status: CacheStatus, key: &str) {
    headers.insert("x-cache-status", HeaderValue::from_static(status.as_str()));
    if let Ok(key) = HeaderValue::from_str(key) {
        headers.insert("x-cache-key", key);
    }
}

/// Marks the upstream's response head and, if the response may be stored, the filter that
/// copies its body into the cache as it streams. Call it on the upstream's end-to-end headers,
/// before this node adds its own.
pub fn after(pass: Pass, caches: &Arc<Caches>, head: &mut response::Parts) -> (Option<BodyFilter>, CacheStatus) {
    let Pass { mut status, key, redis, config, request_headers, fill } = pass;
    let ttl = match status {
        CacheStatus::Miss | CacheStatus::Refresh => response_ttl(&config, head.status, &head.headers),
        _ => None,
    };
    let too_big = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|len| len > config.max_body_bytes);
    let filter = match ttl {
        Some(ttl) if !too_big => {
            let vary = vary_on(&config, &head.headers)
                .into_iter()
                .map(|name| {
                    let value = request_headers.get(name.as_str()).cloned();
                    (name, value)
                })
                .collect();
            let entry = Entry {
                status: head.status,
                headers: head.headers.iter().map(|(n, v)| (n.clone(), v.clone())).collect(),
                body: bytes::Bytes::new(),
                stored_at_ms: now_ms(SystemTime::now()),
                ttl_ms: ttl.as_millis() as u64,
                vary,
            };
            let limit = usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX);
            let pending = Pending { caches: caches.clone(), key: key.clone(), entry, redis, fill };
            let filter: BodyFilter = Box::new(move |body| BoxBody::new(Tee::new(body, limit, pending)));
            Some(filter)
        }
        _ => {
            status = CacheStatus::Bypass;
            None
        }
    };
    mark(&mut head.headers, status, &key);
    (filter, status)
}
