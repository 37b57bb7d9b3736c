//! The `rate-limiting` plugin.
//!
//! A limit is compiled once per config ([`RateLimit`]): its windows, its algorithm, and an
//! identity made of where the config was set (consumer, route, service or global) and a digest
//! of the config, never of the node, so every node counts on the same Redis counters. Per request,
//! [`Limiters::decide`] asks Redis (the `redis` policy) or this node's memory (`local`). While
//! Redis does not answer, a `fault_tolerant` limit keeps applying on each node with its limits
//! divided by the live members; otherwise the request gets 503. No request waits on a dead Redis
//! longer than the Redis timeout, and none at all while the background probe says it is down.

use super::pipeline::{Access, BodyFilter, Ctx, Flow, Plugin, Refusal};
use crate::exchange::number_header;
use crate::telemetry::traces;
use config_sync::model::{LimitBy, RateLimitPolicy, RateLimitWindow, RateLimiting};
use http::{header, response, HeaderMap, HeaderName, HeaderValue, StatusCode};
use ratelimit::{per_member, Algorithm, Decision, Limiter, MemoryStore, RedisStore, Window};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::field::Empty;
use tracing::Instrument as _;

/// A compiled `rate-limiting` config.
pub struct RateLimit {
    config: RateLimiting,
    /// Where it was set and what it says, hashed: the counters' identity.
    identity: String,
    limits: Vec<(Window, u64)>,
    algorithm: Algorithm,
    limiters: Arc<Limiters>,
    members: Arc<Members>,
}

/// The cluster's members, once gossip has started: a limit falls back to its share of them
/// while Redis is out.
#[derive(Default)]
pub struct Members(OnceLock<watch::Receiver<Vec<cluster::Member>>>);

impl Members {
    /// Starts following `members` (once; later calls are ignored).
    pub fn follow(&self, members: watch::Receiver<Vec<cluster::Member>>) {
        let _ = self.0.set(members);
    }

    /// Live members of the cluster (1 without gossip).
    fn alive(&self) -> usize {
        self.0.get().map_or(1, |m| m.borrow().iter().filter(|m| m.state == cluster::MemberState::Alive).count().max(1))
    }
}

impl RateLimit {
    /// Compiles `config`, set at `scope` (`route:orders`, `service:orders`, `consumer:ann`,
    /// `global`).
    pub(crate) fn new(config: &RateLimiting, scope: &str, limiters: Arc<Limiters>, members: Arc<Members>) -> RateLimit {
        let digest = Sha256::digest(serde_json::to_vec(config).expect("configs serialize"));
        let identity = format!("{scope}:{}", &hex(&digest)[..16]);
        let limits = [
            (Window::Second, config.second),
            (Window::Minute, config.minute),
            (Window::Hour, config.hour),
            (Window::Day, config.day),
        ]
        .into_iter()
        .filter_map(|(w, l)| Some((w, l?)))
        .collect();
        let algorithm = match config.window {
            RateLimitWindow::Fixed => Algorithm::Fixed,
            RateLimitWindow::Sliding => Algorithm::Sliding,
        };
        RateLimit { config: config.clone(), identity, limits, algorithm, limiters, members }
    }

    /// What this request is counted by.
    fn value(&self, ctx: &Ctx<'_>) -> String {
        let ip = || ctx.client.ip_text().to_owned();
        // As Kong: without a consumer (or its credential), the client's address.
        let identity = ctx.identity.as_ref();
        match self.config.limit_by {
            LimitBy::Ip => ip(),
            LimitBy::Header => self
                .config
                .header_name
                .as_deref()
                .and_then(|h| ctx.request.headers.get(h))
                .and_then(|v| v.to_str().ok())
                .map_or_else(ip, str::to_owned),
            LimitBy::Service => ctx.service.to_owned(),
            LimitBy::Route => ctx.route.to_owned(),
            LimitBy::Path => ctx.path.to_owned(),
            LimitBy::Consumer => identity.map_or_else(ip, |i| format!("consumer:{}", i.consumer.username)),
            LimitBy::Credential => {
                identity.and_then(|i| i.credential.as_deref()).map_or_else(ip, |c| format!("credential:{c}"))
            }
        }
    }

    async fn decide(&self, ctx: &mut Ctx<'_>) -> Flow {
        let value = self.value(ctx);
        let span = if traces::enabled() {
            tracing::info_span!(target: traces::TARGET, "rate limit", outcome = Empty, store = Empty)
        } else {
            tracing::Span::none()
        };
        let deciding = self.limiters.decide(self, &value, self.members.alive());
        let (verdict, how) = if span.is_none() { deciding.await } else { deciding.instrument(span.clone()).await };
        let outcome = match &verdict {
            Verdict::Allowed(_) => "allowed",
            Verdict::Limited(_) => "limited",
            Verdict::Unavailable => "unavailable",
        };
        span.record("outcome", outcome);
        span.record("store", how.as_str());
        ctx.metrics.rate_limit(outcome, how.as_str());
        match verdict {
            Verdict::Allowed(decision) => {
                if !self.config.hide_client_headers {
                    ctx.keep(decision);
                }
                Flow::Continue
            }
            Verdict::Limited(decision) => {
                let mut refusal = Refusal::new(StatusCode::TOO_MANY_REQUESTS, "API rate limit exceeded");
                if !self.config.hide_client_headers {
                    headers(&decision, &mut refusal.headers);
                }
                refusal.headers.insert(header::RETRY_AFTER, retry_after(&decision));
                refusal.into()
            }
            Verdict::Unavailable => {
                tracing::warn!(route = ctx.route, "rate limit undecided: Redis is out and fault_tolerant is false");
                Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "rate limiting is unavailable").into()
            }
        }
    }
}

impl Plugin for RateLimit {
    fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
        // Boxed: a Redis call's future is large, and held inline it would be moved with every
        // request, limited or not.
        Access::Later(Box::pin(self.decide(ctx)))
    }

    fn response(&self, ctx: &mut Ctx<'_>, head: &mut response::Parts) -> Option<BodyFilter> {
        if let Some(decision) = ctx.take::<Decision>() {
            headers(&decision, &mut head.headers);
        }
        None
    }
}

/// What a limit said.
pub(crate) enum Verdict {
    /// Go on; add these headers to the response.
    Allowed(Decision),
    /// 429 with these headers.
    Limited(Decision),
    /// Redis is out and the limit is not fault tolerant: 503.
    Unavailable,
}

/// How a decision was made, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// By Redis, for the whole cluster.
    Shared,
    /// By this node alone, as configured.
    Local,
    /// By this node alone, because Redis is out.
    Fallback,
}

impl Path {
    /// Its name in metrics and traces.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Shared => "shared",
            Path::Local => "local",
            Path::Fallback => "fallback",
        }
    }
}

/// The stores limits are counted in, and what is known of Redis.
pub struct Limiters {
    local: Limiter<MemoryStore>,
    /// For the fallback: separate counters, so that a Redis outage starts from zero locally.
    fallback: Limiter<MemoryStore>,
    redis: Option<Limiter<RedisStore>>,
    redis_up: AtomicBool,
}

impl Limiters {
    /// Stores for a node; `redis` when it has `redis_url`.
    pub fn new(redis: Option<RedisStore>) -> Limiters {
        Limiters {
            local: Limiter::new(MemoryStore::new()),
            fallback: Limiter::new(MemoryStore::new()),
            redis_up: AtomicBool::new(redis.is_some()),
            redis: redis.map(Limiter::new),
        }
    }

    /// Whether the node has Redis, and whether it answers.
    pub fn redis_state(&self) -> Option<bool> {
        self.redis.as_ref().map(|_| self.redis_up.load(Ordering::Relaxed))
    }

    /// Decides one request to `limit` counted by `value`; `members` is the number of live
    /// members, for the fallback.
    pub(crate) async fn decide(&self, limit: &RateLimit, value: &str, members: usize) -> (Verdict, Path) {
        let now = SystemTime::now();
        let shared = match limit.config.policy {
            Some(RateLimitPolicy::Local) => None,
            Some(RateLimitPolicy::Redis) | None => self.redis.as_ref(),
        };
        let Some(redis) = shared else {
            return (self.local_verdict(&self.local, limit, value, &limit.limits, now).await, Path::Local);
        };
        if self.redis_up.load(Ordering::Relaxed) {
            match redis.check(&limit.identity, value, &limit.limits, limit.algorithm, now).await {
                Ok(decision) => return (verdict(decision), Path::Shared),
                Err(e) => {
                    if self.redis_up.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "redis: not answering; rate limits fall back");
                    }
                }
            }
        }
        if !limit.config.fault_tolerant {
            return (Verdict::Unavailable, Path::Fallback);
        }
        let split = per_member(&limit.limits, members.max(1));
        (self.local_verdict(&self.fallback, limit, value, &split, now).await, Path::Fallback)
    }

    async fn local_verdict(
        &self,
        store: &Limiter<MemoryStore>,
        limit: &RateLimit,
        value: &str,
        limits: &[(Window, u64)],
        now: SystemTime,
    ) -> Verdict {
        match store.check(&limit.identity, value, limits, limit.algorithm, now).await {
            Ok(decision) => verdict(decision),
            // The memory store cannot fail; if it ever did, letting the request through is the
            // fault-tolerant answer.
            Err(_) => Verdict::Unavailable,
        }
    }

    /// Pings Redis every `every` (faster while it is down) until `stopped`, keeping
    /// [`Limiters::redis_state`] true.
    pub async fn probe(self: Arc<Self>, stopped: impl std::future::Future<Output = ()>) {
        let Some(redis) = &self.redis else { return };
        tokio::pin!(stopped);
        loop {
            let up = redis.ping().await.is_ok();
            if up != self.redis_up.swap(up, Ordering::Relaxed) {
                if up {
                    tracing::info!("redis: answering; rate limits are shared again");
                } else {
                    tracing::warn!("redis: not answering; rate limits fall back");
                }
            }
            let wait = if up { Duration::from_secs(1) } else { Duration::from_millis(250) };
            tokio::select! {
                () = &mut stopped => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

fn verdict(decision: Decision) -> Verdict {
    if decision.allowed {
        Verdict::Allowed(decision)
    } else {
        Verdict::Limited(decision)
    }
}

/// The rate-limit headers of `decision`: `X-RateLimit-Limit-<Window>` and
/// `X-RateLimit-Remaining-<Window>` per window, and `RateLimit-Limit`, `RateLimit-Remaining`,
/// `RateLimit-Reset` (seconds) for the most restrictive one.
fn headers(decision: &Decision, into: &mut HeaderMap) {
    into.reserve(2 * decision.windows.len() + 3);
    for w in &decision.windows {
        let (limit, remaining) = names(w.window);
        into.insert(limit.clone(), number_header(w.limit));
        into.insert(remaining.clone(), number_header(w.remaining));
    }
    if let Some(w) = decision.most_restrictive() {
        into.insert(RATELIMIT_LIMIT.clone(), number_header(w.limit));
        into.insert(RATELIMIT_REMAINING.clone(), number_header(w.remaining));
        into.insert(RATELIMIT_RESET.clone(), number_header(w.reset.as_secs_f64().ceil() as u64));
    }
}

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The `X-RateLimit-Limit-<Window>` and `X-RateLimit-Remaining-<Window>` names.
fn names(window: Window) -> &'static (HeaderName, HeaderName) {
    static SECOND: (HeaderName, HeaderName) =
        (HeaderName::from_static("x-ratelimit-limit-second"), HeaderName::from_static("x-ratelimit-remaining-second"));
    static MINUTE: (HeaderName, HeaderName) =
        (HeaderName::from_static("x-ratelimit-limit-minute"), HeaderName::from_static("x-ratelimit-remaining-minute"));
    static HOUR: (HeaderName, HeaderName) =
        (HeaderName::from_static("x-ratelimit-limit-hour"), HeaderName::from_static("x-ratelimit-remaining-hour"));
    static DAY: (HeaderName, HeaderName) =
        (HeaderName::from_static("x-ratelimit-limit-day"), HeaderName::from_static("x-ratelimit-remaining-day"));
    match window {
        Window::Second => &SECOND,
        Window::Minute => &MINUTE,
        Window::Hour => &HOUR,
        Window::Day => &DAY,
    }
}

/// `Retry-After` for a refusal, whole seconds, at least 1.
fn retry_after(decision: &Decision) -> HeaderValue {
    let wait = decision.retry_after.unwrap_or(Duration::from_secs(1));
    number_header((wait.as_secs_f64().ceil() as u64).max(1))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
