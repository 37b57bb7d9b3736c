//! RFC 9111 and RFC 5861 for a shared cache, without I/O: `Cache-Control` directives, the
//! freshness lifetime and age of a response, and whether a stored response may answer a
//! request (fresh, stale with leave, or only after revalidation). Times come in as arguments,
//! so the tests drive a virtual clock.

use http::header::{self, HeaderName};
use http::{HeaderMap, StatusCode};
use std::time::{Duration, SystemTime};

/// The greatest delta-seconds a cache keeps (RFC 9111 §1.2.2).
const DELTA_MAX: u64 = 2_147_483_648;
/// Heuristic freshness: this fraction of the time since `Last-Modified` (RFC 9111 §4.2.2).
const HEURISTIC_DIVISOR: u32 = 10;

/// A directive's delta-seconds argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Delta {
    #[default]
    Absent,
    Valid(u64),
    /// Present without a number, with a bad one, or more than once.
    Invalid,
}

impl Delta {
    fn present(self) -> bool {
        self != Delta::Absent
    }

    fn record(&mut self, value: Option<&str>) {
        *self = match (*self, value.and_then(parse_delta)) {
            (Delta::Absent, Some(n)) => Delta::Valid(n),
            _ => Delta::Invalid,
        };
    }
}

/// The `Cache-Control` directives the cache acts on, of a request or a response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) immutable: bool,
    pub(crate) only_if_cached: bool,
    pub(crate) max_age: Delta,
    pub(crate) s_maxage: Delta,
    pub(crate) min_fresh: Delta,
    /// `max-stale` without a value: any staleness (`Some(None)`).
    pub(crate) max_stale: Option<Option<u64>>,
    pub(crate) stale_while_revalidate: Delta,
    pub(crate) stale_if_error: Delta,
}

impl Directives {
    /// The directives of every `name` line of `headers` (`Cache-Control`, or `CDN-Cache-Control`).
    /// Names are case-insensitive; unknown ones are ignored (RFC 9111 §5.2.3).
    pub(crate) fn of(headers: &HeaderMap, name: &HeaderName) -> Directives {
        let mut d = Directives::default();
        for line in headers.get_all(name).iter().filter_map(|v| v.to_str().ok()) {
            for item in split_list(line) {
                let (key, value) = match item.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                    None => (item, None),
                };
                match key.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "immutable" => d.immutable = true,
                    "only-if-cached" => d.only_if_cached = true,
                    "max-age" => d.max_age.record(value),
                    "s-maxage" => d.s_maxage.record(value),
                    "min-fresh" => d.min_fresh.record(value),
                    "max-stale" => {
                        d.max_stale = match (d.max_stale, value.map(parse_delta)) {
                            // A bad value allows no staleness; a repeated one, the smaller.
                            (_, Some(None)) => Some(Some(0)),
                            (None, Some(Some(n))) => Some(Some(n)),
                            (Some(Some(m)), Some(Some(n))) => Some(Some(m.min(n))),
                            (Some(old), None) => Some(old),
                            (Some(None), Some(Some(n))) => Some(Some(n)),
                            (None, None) => Some(None),
                        }
                    }
                    "stale-while-revalidate" => d.stale_while_revalidate.record(value),
                    "stale-if-error" => d.stale_if_error.record(value),
                    _ => {}
                }
            }
        }
        d
    }

    /// Whether a stale response may never be served without revalidation: `must-revalidate`,
    /// `proxy-revalidate` and `s-maxage` (RFC 9111 §5.2.2.2, §5.2.2.8, §5.2.2.10), and
    /// `no-cache` (§5.2.2.4).
    fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.present() || self.no_cache
    }
}

fn split_list(line: &str) -> impl Iterator<Item = &str> {
    line.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// delta-seconds: digits only; past 2^31 it is 2^31 (RFC 9111 §1.2.2).
fn parse_delta(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().map_or(DELTA_MAX, |n| n.min(DELTA_MAX)))
}

/// The one value of a date header; `Err` when it is repeated or not an HTTP date.
fn date_of(headers: &HeaderMap, name: &HeaderName) -> Option<Result<SystemTime, ()>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(Err(()));
    }
    Some(first.to_str().ok().and_then(|v| httpdate::parse_http_date(v.trim()).ok()).ok_or(()))
}

/// Whether a status is cacheable by heuristic freshness (RFC 9110 §15.1).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// What the cache keeps of a response's timing, once it is received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// The freshness lifetime (RFC 9111 §4.2.1).
    pub(crate) lifetime: Duration,
    /// The `corrected_initial_age` (RFC 9111 §4.2.3).
    pub(crate) initial_age: Duration,
    /// How long past its freshness the entry is kept: for revalidation and RFC 5861's leave.
    pub(crate) keep: Duration,
}

/// The exchange a response came from: when the request went and the response came, and
/// whether the request carried `Authorization`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    pub(crate) request_time: SystemTime,
    pub(crate) response_time: SystemTime,
    pub(crate) authorized: bool,
}

/// `CDN-Cache-Control` (RFC 9213).
static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The directives a response gives this cache: with `cdn`, its `CDN-Cache-Control` when it has
/// one, and then `Cache-Control` and `Expires` are ignored (RFC 9213 §2.1); else its
/// `Cache-Control`. Also whether `Expires` counts.
pub(crate) fn response_directives(headers: &HeaderMap, cdn: bool) -> (Directives, bool) {
    if cdn && headers.contains_key(&CDN_CACHE_CONTROL) {
        (Directives::of(headers, &CDN_CACHE_CONTROL), false)
    } else {
        (Directives::of(headers, &header::CACHE_CONTROL), true)
    }
}

/// How a shared cache may store a response (status and content type already allowed), or
/// None when it may not (RFC 9111 §3, §3.5, §4.2). `heuristic_max` caps heuristic freshness;
/// `keep_for_revalidation` is how long a stale entry with a validator is kept; `cdn` reads
/// `CDN-Cache-Control` first.
pub(crate) fn timing(
    status: StatusCode,
    headers: &HeaderMap,
    exchange: Exchange,
    (heuristic_max, keep_for_revalidation): (Duration, Duration),
    cdn: bool,
) -> Option<Timing> {
    let (cc, expires_counts) = response_directives(headers, cdn);
    if cc.no_store || cc.private || varies_on_everything(headers) {
        return None;
    }
    if exchange.authorized && !(cc.public || cc.must_revalidate || cc.s_maxage.present()) {
        return None;
    }
    let date = match date_of(headers, &header::DATE) {
        Some(Ok(date)) => date,
        _ => exchange.response_time,
    };
    let lifetime = if cc.no_cache {
        Duration::ZERO
    } else {
        match (cc.s_maxage, cc.max_age) {
            (Delta::Valid(n), _) | (Delta::Absent, Delta::Valid(n)) => Duration::from_secs(n),
            (Delta::Invalid, _) | (Delta::Absent, Delta::Invalid) => Duration::ZERO,
            (Delta::Absent, Delta::Absent) => match date_of(headers, &header::EXPIRES).filter(|_| expires_counts) {
                // An invalid or repeated Expires is in the past (RFC 9111 §5.3, §4.2.1).
                Some(Ok(expires)) => expires.duration_since(date).unwrap_or(Duration::ZERO),
                Some(Err(())) => Duration::ZERO,
                None => heuristic(status, headers, &cc, date, heuristic_max),
            },
        }
    };
    let initial_age = initial_age(headers, date, exchange);
    let validator = headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    let mut keep = Duration::ZERO;
    if !cc.forbids_stale() {
        for leave in [cc.stale_while_revalidate, cc.stale_if_error] {
            if let Delta::Valid(n) = leave {
                keep = keep.max(Duration::from_secs(n));
            }
        }
    }
    if validator {
        keep = keep.max(keep_for_revalidation);
    }
    if lifetime <= initial_age && keep.is_zero() {
        return None;
    }
    Some(Timing { lifetime, initial_age, keep })
}

/// `Vary: *`: the response can never be matched (RFC 9111 §4.1).
pub(crate) fn varies_on_everything(headers: &HeaderMap) -> bool {
    headers.get_all(header::VARY).iter().filter_map(|v| v.to_str().ok()).flat_map(split_list).any(|h| h == "*")
}

fn heuristic(status: StatusCode, headers: &HeaderMap, cc: &Directives, date: SystemTime, max: Duration) -> Duration {
    if !(heuristically_cacheable(status) || cc.public) {
        return Duration::ZERO;
    }
    match date_of(headers, &header::LAST_MODIFIED) {
        Some(Ok(modified)) => (date.duration_since(modified).unwrap_or(Duration::ZERO) / HEURISTIC_DIVISOR).min(max),
        _ => Duration::ZERO,
    }
}

/// `corrected_initial_age` (RFC 9111 §4.2.3): the larger of the apparent age (by `Date`) and
/// `Age` plus the time the response took to come.
fn initial_age(headers: &HeaderMap, date: SystemTime, exchange: Exchange) -> Duration {
    let apparent_age = exchange.response_time.duration_since(date).unwrap_or(Duration::ZERO);
    let mut ages = headers.get_all(header::AGE).iter();
    // An invalid or repeated Age is ignored.
    let age_value = match (ages.next(), ages.next()) {
        (Some(v), None) => v.to_str().ok().and_then(|v| parse_delta(v.trim())).unwrap_or(0),
        _ => 0,
    };
    let response_delay = exchange.response_time.duration_since(exchange.request_time).unwrap_or(Duration::ZERO);
    apparent_age.max(Duration::from_secs(age_value) + response_delay)
}

/// A stored response's timing and directives, as a lookup judges it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored<'a> {
    pub(crate) headers: &'a HeaderMap,
    pub(crate) response_time: SystemTime,
    pub(crate) timing: Timing,
    /// Read `CDN-Cache-Control` first.
    pub(crate) cdn: bool,
}

impl Stored<'_> {
    /// `current_age` at `now` (RFC 9111 §4.2.3).
    pub(crate) fn age(&self, now: SystemTime) -> Duration {
        self.timing.initial_age + now.duration_since(self.response_time).unwrap_or(Duration::ZERO)
    }
}

/// Whether a stored response may answer a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Serve {
    /// Fresh, and fresh enough for the request.
    Fresh,
    /// Stale, within the request's `max-stale` (RFC 9111 §5.2.1.2).
    Stale,
    /// Stale, within the response's `stale-while-revalidate` (RFC 5861 §3): served while one
    /// request revalidates.
    WhileRevalidating,
    /// Only after revalidation (or a new fetch).
    No,
}

/// The verdict on a stored response for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) serve: Serve,
    /// It may stand in for an upstream error (RFC 5861 §4, `stale-if-error`).
    pub(crate) if_error: bool,
}

/// Judges `stored` for a request with directives `request` at `now` (RFC 9111 §4, §5.2.1).
pub(crate) fn judge(stored: &Stored<'_>, request: &Directives, now: SystemTime) -> Verdict {
    let (cc, _) = response_directives(stored.headers, stored.cdn);
    let age = stored.age(now);
    let lifetime = stored.timing.lifetime;
    let fresh = age < lifetime;
    let staleness = age.saturating_sub(lifetime);
    let within = |delta: Delta| matches!(delta, Delta::Valid(n) if staleness <= Duration::from_secs(n));
    let if_error = !fresh && !cc.forbids_stale() && within(cc.stale_if_error);
    // A fresh immutable response needs no revalidation for a client's reload (RFC 8246).
    if fresh && cc.immutable && !cc.no_cache {
        return Verdict { serve: Serve::Fresh, if_error };
    }
    let acceptable = !request.no_cache
        && match request.max_age {
            Delta::Valid(n) => age <= Duration::from_secs(n),
            Delta::Invalid => false,
            Delta::Absent => true,
        }
        && match request.min_fresh {
            Delta::Valid(n) => lifetime.saturating_sub(age) >= Duration::from_secs(n),
            Delta::Invalid => false,
            Delta::Absent => true,
        };
    let serve = if fresh && acceptable {
        Serve::Fresh
    } else if fresh || request.no_cache || cc.forbids_stale() {
        Serve::No
    } else {
        match request.max_stale {
            Some(None) => Serve::Stale,
            Some(Some(n)) if staleness <= Duration::from_secs(n) => Serve::Stale,
            _ if within(cc.stale_while_revalidate) && request.max_age == Delta::Absent => Serve::WhileRevalidating,
            _ => Serve::No,
        }
    };
    Verdict { serve, if_error }
}

#[cfg(test)]
mod tests;
