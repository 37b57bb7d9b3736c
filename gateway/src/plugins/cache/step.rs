//! The cache's two moments on the request path: before forwarding (a hit answers at once) and
//! after the upstream answered (a response that may be cached is copied into the cache as it
//! streams; a 304 to a revalidation refreshes the stored one; an upstream error may be answered
//! by a stale one; a successful unsafe method invalidates). `X-Cache-Status` says which:
//! `Hit`, `Stale`, `Revalidated`, `Miss`, `Refresh` or `Bypass`; `X-Cache-Key` names the entry.

use super::entry::{now_ms, vary_value, Entry};
use super::freshness::{judge, Directives, Exchange, Serve, Stored, Timing};
use super::invalidate::Target;
use super::key::{cache_key, resource_key, Request};
use super::policy::{request_rule, storage, vary_on, RequestRule};
use super::range::{self, Part};
use super::revalidate::{self, not_modified};
use super::store::{Caches, FillGuard, Lookup};
use super::tee::{Pending, Tee};
use crate::exchange::BoxBody;
use crate::plugins::pipeline::BodyFilter;
use bytes::Bytes;
use config_sync::model::ProxyCache;
use http::{header, response, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `X-Cache-Status` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache, fresh.
    Hit,
    /// Served from the cache, stale, as the request's `max-stale` or the response's
    /// `stale-while-revalidate` or `stale-if-error` allow.
    Stale,
    /// Served from the cache after the upstream confirmed it with a 304.
    Revalidated,
    /// Not in the cache (or not usable); the response may be stored.
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
            CacheStatus::Stale => "Stale",
            CacheStatus::Revalidated => "Revalidated",
            CacheStatus::Miss => "Miss",
            CacheStatus::Refresh => "Refresh",
            CacheStatus::Bypass => "Bypass",
        }
    }
}

/// What the cache decided before forwarding.
pub enum Before {
    /// Answered from the cache (or a 504 to `only-if-cached`): the response to send.
    Hit(Response<Bytes>, CacheStatus),
    /// Forward, then call [`after`].
    Forward(Box<Pass>),
}

/// A request on its way upstream, as the cache sees it.
pub struct Pass {
    status: CacheStatus,
    key: String,
    /// With `cache_control`: the resource the entry is stored under, for invalidation.
    resource: Option<String>,
    redis: bool,
    config: ProxyCache,
    /// The client's headers, for the values a response varies on.
    request_headers: HeaderMap,
    fill: Option<FillGuard>,
    /// When the request went upstream (RFC 9111 §4.2.3 `request_time`).
    request_time: SystemTime,
    /// The stored response this request revalidates, or that may answer an upstream error.
    stored: Option<Entry>,
    /// The conditional headers to add to the upstream request: a 304 then refreshes `stored`.
    validators: Vec<(HeaderName, HeaderValue)>,
    /// `stored` may answer an upstream error (RFC 5861 `stale-if-error`).
    if_error: bool,
    /// An unsafe method: what a success invalidates.
    target: Option<Target>,
}

impl Pass {
    /// The conditional headers the upstream request needs (a revalidation), if any.
    pub fn validators(&self) -> &[(HeaderName, HeaderValue)] {
        &self.validators
    }

    /// Whether a stored response waits to stand in for an upstream error.
    pub fn may_answer_errors(&self) -> bool {
        self.if_error
    }
}

/// Who asks, besides the request: the route, the host and path, the consumer an auth plugin
/// identified, and whether Redis is known to be down (a Redis-backed cache then answers from its
/// memory level, or steps aside).
pub(crate) struct Asker<'a> {
    pub(crate) route: &'a str,
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) consumer: Option<&'a str>,
    pub(crate) redis_down: bool,
}

/// Looks the request up.
pub(crate) async fn before(
    caches: &Arc<Caches>,
    config: &ProxyCache,
    request: Request<'_>,
    asker: Asker<'_>,
) -> Before {
    let (route, host, path) = (asker.route, asker.host, asker.path);
    match look_up(caches, config, request, asker).await {
        // Only a request that goes upstream may store an entry: a hit makes no resource key.
        Before::Forward(mut pass) if config.cache_control => {
            pass.resource = Some(resource_key(route, config, request.uri, (host, path)));
            Before::Forward(pass)
        }
        decided => decided,
    }
}

async fn look_up(caches: &Arc<Caches>, config: &ProxyCache, request: Request<'_>, asker: Asker<'_>) -> Before {
    let key = cache_key(asker.route, config, request, (asker.host, asker.path), asker.consumer);
    let redis = caches.uses_redis(config.strategy);
    let mut pass = Pass {
        status: CacheStatus::Bypass,
        key,
        resource: None,
        redis,
        config: config.clone(),
        request_headers: request.headers.clone(),
        fill: None,
        request_time: SystemTime::now(),
        stored: None,
        validators: Vec::new(),
        if_error: false,
        target: None,
    };
    if config.cache_control && !request.method.is_safe() {
        pass.target = Some(Target::new(asker.route, request.uri, asker.host, asker.path));
    }
    let rule = request_rule(config, request.method, request.headers);
    if rule == RequestRule::Bypass {
        return Before::Forward(Box::new(pass));
    }
    if rule == RequestRule::Refresh && !config.cache_control {
        pass.status = CacheStatus::Refresh;
        return Before::Forward(Box::new(pass));
    }
    let directives = Directives::of(request.headers, &header::CACHE_CONTROL);
    let missed = if rule == RequestRule::Refresh { CacheStatus::Refresh } else { CacheStatus::Miss };
    // At most twice: once, and again after waiting for another request filling the same key.
    for _ in 0..2 {
        let now = SystemTime::now();
        match caches.lookup(&pass.key, redis, asker.redis_down, now).await {
            Ok(Lookup::Hit(entry)) if entry.matches(request.headers) => {
                if !config.cache_control {
                    return hit(&entry, request, &pass.key, now, CacheStatus::Hit);
                }
                let headers = entry.header_map();
                let verdict = judge(&stored(&entry, &headers, config.cdn_cache_control), &directives, now);
                match verdict.serve {
                    Serve::Fresh => return hit(&entry, request, &pass.key, now, CacheStatus::Hit),
                    Serve::Stale => return hit(&entry, request, &pass.key, now, CacheStatus::Stale),
                    // One request of this node revalidates; the others are served stale meanwhile.
                    Serve::WhileRevalidating => match caches.try_fill(&pass.key) {
                        Some(guard) => pass.fill = Some(guard),
                        None => return hit(&entry, request, &pass.key, now, CacheStatus::Stale),
                    },
                    Serve::No => {}
                }
                if directives.only_if_cached {
                    return not_cached(&pass.key);
                }
                pass.status = missed;
                pass.if_error = verdict.if_error;
                pass.validators = revalidate::validators(&headers, request.headers);
                pass.stored = Some(entry);
                return Before::Forward(Box::new(pass));
            }
            Ok(Lookup::Hit(_)) => {
                // Another variant is cached: this one replaces it.
                if config.cache_control && directives.only_if_cached {
                    return not_cached(&pass.key);
                }
                pass.status = missed;
                return Before::Forward(Box::new(pass));
            }
            Ok(Lookup::Fill(guard)) => {
                if config.cache_control && directives.only_if_cached {
                    return not_cached(&pass.key);
                }
                pass.status = missed;
                pass.fill = Some(guard);
                return Before::Forward(Box::new(pass));
            }
            Ok(Lookup::Waited) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "cache unavailable; bypassing it");
                return Before::Forward(Box::new(pass));
            }
        }
    }
    pass.status = missed;
    Before::Forward(Box::new(pass))
}

fn stored<'a>(entry: &Entry, headers: &'a HeaderMap, cdn: bool) -> Stored<'a> {
    Stored {
        headers,
        cdn,
        response_time: UNIX_EPOCH + Duration::from_millis(entry.stored_at_ms),
        timing: Timing {
            lifetime: Duration::from_millis(entry.ttl_ms),
            initial_age: Duration::from_millis(entry.initial_age_ms),
            keep: Duration::from_millis(entry.keep_ms),
        },
    }
}

/// A 504 for `only-if-cached` with nothing usable stored (RFC 9111 §5.2.1.7).
fn not_cached(key: &str) -> Before {
    let mut response = crate::exchange::json_error(StatusCode::GATEWAY_TIMEOUT, "not in the cache (only-if-cached)");
    mark(response.headers_mut(), CacheStatus::Miss, key);
    Before::Hit(response, CacheStatus::Miss)
}

/// The stored response as the answer: a 304 when the client's own conditional matches it
/// (RFC 9110 §13.2.2), the part a `Range` asks for (§14), else the whole of it.
fn hit(entry: &Entry, request: Request<'_>, key: &str, now: SystemTime, status: CacheStatus) -> Before {
    let stored = entry.header_map();
    let mut response = if entry.status == StatusCode::OK && not_modified(request.headers, &stored) {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        for (name, value) in entry.headers.iter().filter(|(n, _)| revalidate::sent_with_304(n)) {
            response.headers_mut().append(name.clone(), value.clone());
        }
        response
    } else {
        let mut response = Response::new(entry.body.clone());
        *response.status_mut() = entry.status;
        *response.headers_mut() = stored;
        if entry.status == StatusCode::OK {
            partial(&mut response, request);
        }
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::AGE, crate::exchange::number_header(entry.age(now)));
    mark(headers, status, key);
    Before::Hit(response, status)
}

/// Narrows a stored 200 to the part the request's `Range` asks for.
fn partial(response: &mut Response<Bytes>, request: Request<'_>) {
    let len = response.body().len() as u64;
    match range::part(request.method, request.headers, response.headers(), len) {
        Part::Whole => {}
        Part::Range(range) => {
            let (start, end) = (*range.start(), *range.end());
            let body = response.body().slice(start as usize..=end as usize);
            let content_range = format!("bytes {start}-{end}/{len}");
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_RANGE, HeaderValue::try_from(content_range).expect("digits"));
            headers.insert(header::CONTENT_LENGTH, crate::exchange::number_header(body.len() as u64));
            *response.body_mut() = body;
        }
        Part::Unsatisfiable => {
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let headers = response.headers_mut();
            let content_range = HeaderValue::try_from(format!("bytes */{len}")).expect("digits");
            headers.insert(header::CONTENT_RANGE, content_range);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            *response.body_mut() = Bytes::new();
        }
    }
}

fn mark(headers: &mut HeaderMap, status: CacheStatus, key: &str) {
    headers.insert("x-cache-status", HeaderValue::from_static(status.as_str()));
    if let Ok(key) = HeaderValue::from_str(key) {
        headers.insert("x-cache-key", key);
    }
}

/// Marks the response head and returns the filter for its body: a copy into the cache as it
/// streams (a response that may be stored), or the stored body in place of the upstream's
/// (a 304 to a revalidation, an upstream error a stale entry answers). Call it on the
/// upstream's end-to-end headers, before this node adds its own; `from_upstream` is false for
/// an answer the gateway made (a 502 when the upstream is unreachable).
pub fn after(
    pass: Pass,
    caches: &Arc<Caches>,
    head: &mut response::Parts,
    from_upstream: bool,
) -> (Option<BodyFilter>, CacheStatus) {
    let response_time = SystemTime::now();
    let Pass {
        mut status,
        key,
        resource,
        redis,
        config,
        request_headers,
        fill,
        request_time,
        stored,
        validators,
        if_error,
        target,
    } = pass;
    if let Some(target) = target {
        if from_upstream && (head.status.is_success() || head.status.is_redirection()) {
            target.invalidate(caches, &config, &head.headers);
        }
    }
    // The gateway's own 502 and 504 (the upstream unreachable, or too slow) are upstream errors
    // too; another answer made here (a refusal) is not.
    let upstream_error = match head.status.as_u16() {
        500 => from_upstream,
        502..=504 => true,
        _ => false,
    };
    if let (Some(entry), true) = (&stored, if_error && upstream_error) {
        // RFC 5861 §4: the stale response stands in for the error.
        return (Some(replace(head, entry, &key, response_time, CacheStatus::Stale)), CacheStatus::Stale);
    }
    if !from_upstream {
        return (None, status);
    }
    let exchange =
        Exchange { request_time, response_time, authorized: request_headers.contains_key(header::AUTHORIZATION) };
    if let (Some(entry), false, StatusCode::NOT_MODIFIED) = (stored, validators.is_empty(), head.status) {
        let Some(refreshed) = revalidate::refresh(entry, &head.headers, exchange, &config) else {
            // A 304 for another representation than the stored one: passed on as it is.
            mark(&mut head.headers, CacheStatus::Bypass, &key);
            return (None, CacheStatus::Bypass);
        };
        let filter = replace(head, &refreshed, &key, response_time, CacheStatus::Revalidated);
        if refreshed.kept(response_time) {
            let caches = caches.clone();
            tokio::spawn(async move {
                if let Err(e) = caches.put(&key, refreshed, redis).await {
                    tracing::debug!(error = %e, "revalidated response not stored");
                }
                drop(fill);
            });
        }
        return (Some(filter), CacheStatus::Revalidated);
    }
    let timing = match status {
        CacheStatus::Miss | CacheStatus::Refresh => storage(&config, head.status, &head.headers, exchange),
        _ => None,
    };
    let too_big = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|len| len > config.max_body_bytes);
    let filter = match timing {
        Some(timing) if !too_big => {
            let vary = vary_on(&config, &head.headers)
                .into_iter()
                .map(|name| {
                    let value = vary_value(&request_headers, &name);
                    (name, value)
                })
                .collect();
            let entry = Entry {
                status: head.status,
                headers: head.headers.iter().map(|(n, v)| (n.clone(), v.clone())).collect(),
                body: Bytes::new(),
                stored_at_ms: now_ms(response_time),
                ttl_ms: timing.lifetime.as_millis() as u64,
                initial_age_ms: timing.initial_age.as_millis() as u64,
                keep_ms: timing.keep.as_millis() as u64,
                vary,
                resource,
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

/// Makes `head` the stored response's, and returns the filter that puts its body in place.
fn replace(head: &mut response::Parts, entry: &Entry, key: &str, now: SystemTime, status: CacheStatus) -> BodyFilter {
    head.status = entry.status;
    head.headers = entry.header_map();
    head.headers.insert(header::AGE, crate::exchange::number_header(entry.age(now)));
    mark(&mut head.headers, status, key);
    let body = entry.body.clone();
    Box::new(move |_upstream| BoxBody::new(Full::new(body).map_err(|e| match e {})))
}
