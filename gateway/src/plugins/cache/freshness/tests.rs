use super::*;
use http::HeaderValue;
use std::time::UNIX_EPOCH;

/// The virtual clock: seconds since an arbitrary start.
fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

fn http_date(seconds: u64) -> String {
    httpdate::fmt_http_date(at(seconds))
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(HeaderName::try_from(*k).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

/// A response requested at 100 s and received at `received`.
fn exchange(received: u64) -> Exchange {
    Exchange { request_time: at(100), response_time: at(received), authorized: false }
}

const HEURISTIC_MAX: Duration = Duration::from_secs(300);
const KEEP: Duration = Duration::from_secs(600);

fn time(h: &HeaderMap, exchange: Exchange) -> Option<Timing> {
    timing(StatusCode::OK, h, exchange, (HEURISTIC_MAX, KEEP), false)
}

fn lifetime(pairs: &[(&str, &str)]) -> Option<u64> {
    time(&headers(pairs), exchange(100)).map(|t| t.lifetime.as_secs())
}

#[test]
fn directives_are_case_insensitive_and_repeats_are_invalid() {
    let d = Directives::of(
        &headers(&[("cache-control", "Max-Age=60, PUBLIC"), ("cache-control", "x-ext=1")]),
        &header::CACHE_CONTROL,
    );
    assert_eq!((d.max_age, d.public), (Delta::Valid(60), true));
    let twice = Directives::of(&headers(&[("cache-control", "max-age=60, max-age=60")]), &header::CACHE_CONTROL);
    assert_eq!(twice.max_age, Delta::Invalid);
    for bad in ["max-age", "max-age=", "max-age=-1", "max-age=1.5", "max-age=ten"] {
        let d = Directives::of(&headers(&[("cache-control", bad)]), &header::CACHE_CONTROL);
        assert_eq!(d.max_age, Delta::Invalid, "{bad}");
    }
    let huge =
        Directives::of(&headers(&[("cache-control", "max-age=99999999999999999999999")]), &header::CACHE_CONTROL);
    assert_eq!(huge.max_age, Delta::Valid(DELTA_MAX));
    let quoted = Directives::of(&headers(&[("cache-control", "max-age=\"30\"")]), &header::CACHE_CONTROL);
    assert_eq!(quoted.max_age, Delta::Valid(30));
    let any = Directives::of(&headers(&[("cache-control", "max-stale")]), &header::CACHE_CONTROL);
    assert_eq!(any.max_stale, Some(None));
    let bad_stale = Directives::of(&headers(&[("cache-control", "max-stale=x")]), &header::CACHE_CONTROL);
    assert_eq!(bad_stale.max_stale, Some(Some(0)));
}

#[test]
fn lifetime_is_s_maxage_then_max_age_then_expires_minus_date() {
    let date = http_date(100);
    assert_eq!(lifetime(&[("cache-control", "max-age=60, s-maxage=30")]), Some(30));
    assert_eq!(lifetime(&[("cache-control", "max-age=60"), ("expires", &http_date(1000))]), Some(60));
    assert_eq!(lifetime(&[("date", &date), ("expires", &http_date(190))]), Some(90));
    // Expires against the origin's Date, not the cache's clock; the Date 60 s back is also an
    // apparent age of 60 s: stale on arrival, kept only for revalidation.
    let early = headers(&[("date", &http_date(40)), ("expires", &http_date(100)), ("etag", "\"a\"")]);
    let t = time(&early, exchange(100)).unwrap();
    assert_eq!((t.lifetime.as_secs(), t.initial_age.as_secs()), (60, 60));
}

#[test]
fn invalid_repeated_and_past_dates_are_expired() {
    let date = http_date(100);
    let with_etag = |expires: &[&str]| {
        let mut pairs = vec![("date", date.as_str()), ("etag", "\"v1\"")];
        pairs.extend(expires.iter().map(|e| ("expires", *e)));
        lifetime(&pairs)
    };
    assert_eq!(with_etag(&["0"]), Some(0), "invalid Expires is in the past");
    assert_eq!(with_etag(&["tomorrow"]), Some(0));
    assert_eq!(with_etag(&[&http_date(50)]), Some(0), "a past Expires");
    let later = http_date(400);
    assert_eq!(with_etag(&[&later, &later]), Some(0), "two Expires");
    // Without a validator nor leave, an expired response is not stored at all.
    assert_eq!(lifetime(&[("date", &date), ("expires", "0")]), None);
    assert_eq!(lifetime(&[("cache-control", "max-age=10, max-age=20")]), None, "repeated max-age: stale");
    // An invalid Date is the time the response came.
    assert_eq!(lifetime(&[("date", "yesterday"), ("expires", &http_date(130))]), Some(30));
}

#[test]
fn heuristic_only_with_last_modified_and_a_heuristic_status() {
    let date = http_date(10_000);
    let modified = http_date(8_000);
    let at10k = Exchange { request_time: at(10_000), response_time: at(10_000), authorized: false };
    let h = headers(&[("date", &date), ("last-modified", &modified)]);
    assert_eq!(time(&h, at10k).unwrap().lifetime, Duration::from_secs(200), "10% of 2000 s");
    let old = headers(&[("date", &date), ("last-modified", &http_date(0))]);
    assert_eq!(time(&old, at10k).unwrap().lifetime, HEURISTIC_MAX, "capped");
    assert_eq!(time(&headers(&[("date", &date)]), at10k), None, "no Last-Modified: no freshness, no validator");
    let created = timing(StatusCode::CREATED, &h, at10k, (HEURISTIC_MAX, KEEP), false).unwrap();
    assert_eq!(created.lifetime, Duration::ZERO, "201 is not heuristically cacheable; kept for revalidation");
    let public = headers(&[("date", &date), ("last-modified", &modified), ("cache-control", "public")]);
    assert_eq!(
        timing(StatusCode::CREATED, &public, at10k, (HEURISTIC_MAX, KEEP), false).unwrap().lifetime.as_secs(),
        200
    );
    let explicit = headers(&[("date", &date), ("last-modified", &modified), ("cache-control", "max-age=5")]);
    assert_eq!(time(&explicit, at10k).unwrap().lifetime.as_secs(), 5, "explicit beats heuristic");
}

#[test]
fn not_stored_no_store_private_vary_star_and_authorization() {
    assert_eq!(lifetime(&[("cache-control", "no-store, max-age=60")]), None);
    assert_eq!(lifetime(&[("cache-control", "private, max-age=60")]), None);
    assert_eq!(lifetime(&[("cache-control", "max-age=60"), ("vary", "Accept, *")]), None);
    let authorized = Exchange { authorized: true, ..exchange(100) };
    let plain = headers(&[("cache-control", "max-age=60")]);
    assert_eq!(time(&plain, authorized), None, "RFC 9111 §3.5");
    for allowed in ["public, max-age=60", "s-maxage=60", "must-revalidate, max-age=60"] {
        assert!(time(&headers(&[("cache-control", allowed)]), authorized).is_some(), "{allowed}");
    }
    let no_cache = time(&headers(&[("cache-control", "no-cache, max-age=60"), ("etag", "\"a\"")]), exchange(100));
    assert_eq!(no_cache.map(|t| t.lifetime), Some(Duration::ZERO), "stored, always revalidated");
}

#[test]
fn age_is_corrected_initial_age_plus_resident_time() {
    // Requested at 100, received at 104: 4 s of response delay.
    let h = headers(&[("date", &http_date(103)), ("age", "10"), ("cache-control", "max-age=60")]);
    let t = time(&h, exchange(104)).unwrap();
    assert_eq!(t.initial_age, Duration::from_secs(14), "Age + response_delay beats apparent age 1");
    let skewed = headers(&[("date", &http_date(50)), ("age", "2"), ("cache-control", "max-age=600")]);
    assert_eq!(time(&skewed, exchange(104)).unwrap().initial_age, Duration::from_secs(54), "apparent age 54");
    let bad = headers(&[("age", "ten"), ("cache-control", "max-age=60")]);
    assert_eq!(time(&bad, exchange(104)).unwrap().initial_age, Duration::from_secs(4), "invalid Age ignored");
    let stored = Stored { headers: &h, response_time: at(104), timing: t, cdn: false };
    assert_eq!(stored.age(at(130)), Duration::from_secs(40));
    let old = headers(&[("age", "100"), ("cache-control", "max-age=60")]);
    assert_eq!(time(&old, exchange(100)), None, "already stale on arrival, nothing to revalidate with");
}

fn verdict(response: &[(&str, &str)], request: &str, now: u64) -> Verdict {
    let h = headers(response);
    let t = time(&h, exchange(100)).expect("storable");
    let stored = Stored { headers: &h, response_time: at(100), timing: t, cdn: false };
    let request = Directives::of(&headers(&[("cache-control", request)]), &header::CACHE_CONTROL);
    judge(&stored, &request, at(now))
}

fn serve(response: &[(&str, &str)], request: &str, now: u64) -> Serve {
    verdict(response, request, now).serve
}

#[test]
fn fresh_then_stale_never_served_without_leave() {
    let r = [("cache-control", "max-age=60"), ("etag", "\"a\"")];
    assert_eq!(serve(&r, "", 159), Serve::Fresh);
    assert_eq!(serve(&r, "", 160), Serve::No, "stale at its lifetime");
    assert!(!verdict(&r, "", 160).if_error);
}

#[test]
fn request_max_age_min_fresh_max_stale_no_cache() {
    let r = [("cache-control", "max-age=60"), ("etag", "\"a\"")];
    assert_eq!(serve(&r, "max-age=10", 110), Serve::Fresh);
    assert_eq!(serve(&r, "max-age=10", 111), Serve::No);
    assert_eq!(serve(&r, "max-age=0", 100), Serve::Fresh, "age 0");
    assert_eq!(serve(&r, "min-fresh=20", 140), Serve::Fresh);
    assert_eq!(serve(&r, "min-fresh=20", 141), Serve::No);
    assert_eq!(serve(&r, "max-stale=30", 190), Serve::Stale);
    assert_eq!(serve(&r, "max-stale=30", 191), Serve::No);
    assert_eq!(serve(&r, "max-stale", 600), Serve::Stale);
    assert_eq!(serve(&r, "no-cache", 101), Serve::No);
    let strict = [("cache-control", "max-age=60, must-revalidate"), ("etag", "\"a\"")];
    assert_eq!(serve(&strict, "max-stale", 161), Serve::No, "must-revalidate beats max-stale");
    let proxy = [("cache-control", "max-age=60, proxy-revalidate"), ("etag", "\"a\"")];
    assert_eq!(serve(&proxy, "max-stale", 161), Serve::No);
    let shared = [("cache-control", "s-maxage=60"), ("etag", "\"a\"")];
    assert_eq!(serve(&shared, "max-stale", 161), Serve::No, "s-maxage implies proxy-revalidate");
}

#[test]
fn stale_while_revalidate_and_stale_if_error_windows() {
    let r = [("cache-control", "max-age=60, stale-while-revalidate=30, stale-if-error=100")];
    assert_eq!(serve(&r, "", 150), Serve::Fresh);
    assert_eq!(serve(&r, "", 190), Serve::WhileRevalidating);
    assert_eq!(serve(&r, "", 191), Serve::No);
    assert!(verdict(&r, "", 260).if_error && !verdict(&r, "", 261).if_error);
    assert!(!verdict(&r, "", 150).if_error, "fresh: no need");
    let strict = [
        ("cache-control", "max-age=60, stale-while-revalidate=30, stale-if-error=100, must-revalidate"),
        ("etag", "\"a\""),
    ];
    assert_eq!(serve(&strict, "", 170), Serve::No);
    assert!(!verdict(&strict, "", 170).if_error);
    let h = headers(&r);
    assert_eq!(time(&h, exchange(100)).unwrap().keep, Duration::from_secs(100), "kept for the longer leave");
}

#[test]
fn immutable_survives_a_reload_while_fresh() {
    let r = [("cache-control", "max-age=60, immutable")];
    assert_eq!(serve(&r, "no-cache", 120), Serve::Fresh);
    assert_eq!(serve(&r, "max-age=0", 120), Serve::Fresh);
    assert_eq!(serve(&r, "", 160), Serve::No, "not once stale");
}

#[test]
fn cdn_cache_control_replaces_cache_control_and_expires_when_chosen() {
    let h = headers(&[("cache-control", "no-store"), ("expires", "0"), ("cdn-cache-control", "max-age=120")]);
    let cdn = timing(StatusCode::OK, &h, exchange(100), (HEURISTIC_MAX, KEEP), true).unwrap();
    assert_eq!(cdn.lifetime, Duration::from_secs(120));
    assert_eq!(timing(StatusCode::OK, &h, exchange(100), (HEURISTIC_MAX, KEEP), false), None, "off: no-store");
    let stored = Stored { headers: &h, response_time: at(100), timing: cdn, cdn: true };
    assert_eq!(judge(&stored, &Directives::default(), at(219)).serve, Serve::Fresh);
    let plain = headers(&[("cache-control", "max-age=30")]);
    let t = timing(StatusCode::OK, &plain, exchange(100), (HEURISTIC_MAX, KEEP), true).unwrap();
    assert_eq!(t.lifetime, Duration::from_secs(30), "without the field, Cache-Control as before");
}
