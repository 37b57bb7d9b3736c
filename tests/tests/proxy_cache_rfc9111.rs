//! The proxy-cache plugin with `cache_control: true` as a shared cache by RFC 9111, through real
//! gateway processes, against a scripted origin that sets each caching header: freshness and
//! age, what is never stored, stale responses served only when allowed, revalidation with
//! conditional requests, invalidation by unsafe methods on every node (of every consumer's and
//! variant's entry), and responses to authenticated requests kept apart.

use http::Method;
use std::time::{Duration, SystemTime};
use tests::cache::{config, gone, status, stored, WAIT};
use tests::http::{HttpClient, Reply};
use tests::origin::{Origin, Script};
use tests::{eventually, pair, Gateway, Redis, Upstream};

const TEXT: (&str, &str) = ("content-type", "text/plain");

fn http_date(offset: i64) -> String {
    let now = SystemTime::now();
    let at = if offset >= 0 {
        now + Duration::from_secs(offset as u64)
    } else {
        now - Duration::from_secs(offset.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

/// GETs `path` until its reply is stored, from a Miss; the Miss.
async fn miss_then_stored(gw: &Gateway, path: &str) -> Reply {
    let miss = HttpClient::new().get(&gw.url(path)).await;
    assert_eq!(status(&miss), "Miss", "{path}: {:?}", miss.headers);
    stored(gw, miss.header("x-cache-key")).await;
    miss
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_and_age_come_from_the_origins_headers_on_every_node() {
    let origin = Origin::start().await;
    let redis = Redis::start().await;
    let (n1, n2) = pair(&config(origin.addr, "{ cache_control: true }"), Some(&redis)).await;
    let c = HttpClient::new();
    origin.answer("/aged", &[TEXT, ("cache-control", "max-age=600"), ("age", "100")], "aged");
    origin.answer("/expires", &[TEXT, ("date", &http_date(0)), ("expires", &http_date(600))], "expires");
    origin.answer("/shared", &[TEXT, ("cache-control", "max-age=0, s-maxage=600")], "shared");
    origin.answer("/heuristic", &[TEXT, ("date", &http_date(0)), ("last-modified", &http_date(-36_000))], "lm");
    for path in ["/aged", "/expires", "/shared", "/heuristic"] {
        let miss = miss_then_stored(&n1, path).await;
        let hit = c.get(&n2.url(path)).await;
        assert_eq!((hit.status.as_u16(), status(&hit)), (200, "Hit"), "{path}: {:?}", hit.headers);
        assert_eq!(hit.body, miss.body);
        assert_eq!(origin.count(path), 1, "{path}");
    }
    // RFC 9111 §4.2.3: the Age the origin sent, plus the time since, on the other node too.
    let age: u64 = c.get(&n2.url("/aged")).await.header("age").parse().unwrap();
    assert!((100..110).contains(&age), "{age}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_shared_cache_may_not_store_is_fetched_every_time() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&config(origin.addr, "{ cache_control: true, strategy: memory }")).await;
    let c = HttpClient::new();
    let cases: [(&str, Vec<(&str, String)>); 8] = [
        ("/no-store", vec![("cache-control", "no-store, max-age=600".into())]),
        ("/private", vec![("cache-control", "private, max-age=600".into())]),
        ("/vary-star", vec![("cache-control", "max-age=600".into()), ("vary", "*".into())]),
        ("/stale-on-arrival", vec![("cache-control", "max-age=60".into()), ("age", "120".into())]),
        ("/expires-invalid", vec![("expires", "0".into())]),
        ("/expires-past", vec![("date", http_date(0)), ("expires", http_date(-60))]),
        ("/expires-twice", vec![("expires", http_date(600)), ("expires", http_date(600))]),
        ("/no-freshness", vec![("date", http_date(0))]),
    ];
    for (path, headers) in &cases {
        let mut all: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.push(TEXT);
        origin.answer(path, &all, "body");
        for _ in 0..2 {
            let reply = c.get(&gw.url(path)).await;
            assert_eq!((reply.status.as_u16(), status(&reply)), (200, "Bypass"), "{path}");
        }
        assert_eq!(origin.count(path), 2, "{path}");
    }
    // RFC 9111 §3.5: a request with Authorization shares its response only when allowed.
    origin.answer("/mine", &[TEXT, ("cache-control", "max-age=600")], "mine");
    origin.answer("/everyones", &[TEXT, ("cache-control", "public, max-age=600")], "everyone's");
    let auth = [("authorization", "Bearer t1")];
    assert_eq!(status(&c.get_with(&gw.url("/mine"), &auth).await), "Bypass");
    assert_eq!(status(&c.get_with(&gw.url("/mine"), &auth).await), "Bypass");
    let key = c.get_with(&gw.url("/everyones"), &auth).await.header("x-cache-key").to_owned();
    stored(&gw, &key).await;
    assert_eq!(status(&c.get_with(&gw.url("/everyones"), &auth).await), "Hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_cache_control_is_honoured() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&config(origin.addr, "{ cache_control: true, strategy: memory }")).await;
    let c = HttpClient::new();
    origin.answer("/r", &[TEXT, ("cache-control", "max-age=600"), ("etag", "\"v1\"")], "r");
    miss_then_stored(&gw, "/r").await;
    let get = |cc: &'static str| {
        let url = gw.url("/r");
        async move { HttpClient::new().get_with(&url, &[("cache-control", cc)]).await }
    };
    assert_eq!(status(&get("max-age=300").await), "Hit");
    assert_eq!(status(&get("min-fresh=60").await), "Hit");
    assert_eq!(origin.count("/r"), 1);
    // Too old for the client: revalidated (the origin answers 304 to the stored ETag).
    let revalidated = get("max-age=0").await;
    assert_eq!((revalidated.status.as_u16(), status(&revalidated)), (200, "Revalidated"));
    assert_eq!(revalidated.body, "r");
    assert_eq!(origin.received("/r")[1].headers["if-none-match"], "\"v1\"");
    assert_eq!(status(&get("min-fresh=3600").await), "Revalidated", "not fresh enough: validated");
    assert_eq!(status(&get("no-cache").await), "Revalidated");
    origin.answer("/r", &[TEXT, ("cache-control", "max-age=600"), ("etag", "\"v2\"")], "r2");
    let changed = get("no-cache").await;
    assert_eq!((status(&changed), changed.body.as_ref()), ("Refresh", b"r2".as_ref()), "a new representation");
    assert_eq!(origin.count("/r"), 5);
    // only-if-cached: the stored response, or 504 (RFC 9111 §5.2.1.7).
    assert_eq!(status(&get("only-if-cached").await), "Hit");
    let none = c.get_with(&gw.url("/never"), &[("cache-control", "only-if-cached")]).await;
    assert_eq!(none.status, 504);
    assert_eq!(origin.count("/never"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_is_served_only_as_the_headers_allow() {
    let origin = Origin::start().await;
    let gw = Gateway::start(&config(origin.addr, "{ cache_control: true, strategy: memory }")).await;
    let c = HttpClient::new();
    origin.answer("/s", &[TEXT, ("cache-control", "max-age=1"), ("etag", "\"v1\"")], "s1");
    miss_then_stored(&gw, "/s").await;
    // Once stale, the client's max-stale allows it, without asking the origin.
    let stale = eventually(WAIT, "the entry to go stale", || async {
        let reply = c.get_with(&gw.url("/s"), &[("cache-control", "max-stale=600")]).await;
        (status(&reply) != "Hit").then_some(reply)
    })
    .await;
    assert_eq!((status(&stale), stale.body.as_ref()), ("Stale", b"s1".as_ref()));
    assert!(stale.header("age").parse::<u64>().unwrap() >= 1);
    assert_eq!(origin.count("/s"), 1);
    // Without it, never stale: the origin is asked.
    origin.answer("/s", &[TEXT, ("cache-control", "max-age=1"), ("etag", "\"v2\"")], "s2");
    let fetched = c.get(&gw.url("/s")).await;
    assert_eq!((status(&fetched), fetched.body.as_ref()), ("Miss", b"s2".as_ref()));

    // stale-if-error (RFC 5861 §4): the origin fails, the stale response answers.
    origin.answer("/e", &[TEXT, ("cache-control", "max-age=1, stale-if-error=600")], "e1");
    origin.answer("/strict", &[TEXT, ("cache-control", "max-age=1, stale-if-error=600, must-revalidate")], "x");
    miss_then_stored(&gw, "/e").await;
    miss_then_stored(&gw, "/strict").await;
    let failing = |body: &str| Script {
        status: 500,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: body.into(),
        honour_conditionals: false,
    };
    origin.script("/e", failing("boom"));
    origin.script("/strict", failing("boom"));
    let covered = eventually(WAIT, "the entry to go stale", || async {
        let reply = c.get(&gw.url("/e")).await;
        (status(&reply) != "Hit").then_some(reply)
    })
    .await;
    assert_eq!((covered.status.as_u16(), status(&covered), covered.body.as_ref()), (200, "Stale", b"e1".as_ref()));
    // must-revalidate: the error goes through once the entry is stale.
    let failed = eventually(WAIT, "the strict entry to go stale", || async {
        let reply = c.get(&gw.url("/strict")).await;
        (status(&reply) != "Hit").then_some(reply)
    })
    .await;
    assert_eq!((failed.status.as_u16(), failed.body.as_ref()), (500, b"boom".as_ref()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_are_revalidated_and_a_304_refreshes_them() {
    let origin = Origin::start().await;
    let redis = Redis::start().await;
    let (n1, n2) = pair(&config(origin.addr, "{ cache_control: true }"), Some(&redis)).await;
    let c = HttpClient::new();
    let modified = http_date(-3600);
    origin.answer(
        "/v",
        &[TEXT, ("cache-control", "no-cache"), ("etag", "\"v1\""), ("last-modified", &modified), ("x-version", "1")],
        "the body",
    );
    let miss = miss_then_stored(&n1, "/v").await;
    // no-cache: stored, but validated on each use; the 304 updates the stored headers.
    origin.answer("/v", &[TEXT, ("cache-control", "max-age=600"), ("etag", "\"v1\""), ("x-version", "2")], "unused");
    let revalidated = c.get(&n2.url("/v")).await;
    assert_eq!((revalidated.status.as_u16(), status(&revalidated)), (200, "Revalidated"));
    assert_eq!(revalidated.body, miss.body, "the stored body");
    assert_eq!(revalidated.header("x-version"), "2", "RFC 9111 §3.2: headers from the 304");
    assert_eq!(revalidated.header("content-length"), "8");
    let asked = &origin.received("/v")[1];
    assert_eq!(asked.headers["if-none-match"], "\"v1\"");
    assert_eq!(asked.headers["if-modified-since"], modified.as_str());
    // The refreshed entry is fresh for max-age=600, on both nodes.
    let refreshed = eventually(WAIT, "the refreshed entry", || async {
        let reply = c.get(&n1.url("/v")).await;
        (status(&reply) == "Hit").then_some(reply)
    })
    .await;
    assert_eq!((refreshed.header("x-version"), refreshed.body.as_ref()), ("2", b"the body".as_ref()));
    assert_eq!(origin.count("/v"), 2);
    // A client's own conditional request is answered 304 from the fresh entry.
    for (name, value) in [("if-none-match", "\"v0\", \"v1\""), ("if-modified-since", http_date(0).as_str())] {
        let reply = c.get_with(&n2.url("/v"), &[(name, value)]).await;
        assert_eq!((reply.status.as_u16(), status(&reply)), (304, "Hit"), "{name}");
        assert!(reply.body.is_empty());
        assert_eq!(reply.header("etag"), "\"v1\"");
    }
    let other = c.get_with(&n2.url("/v"), &[("if-none-match", "\"v9\"")]).await;
    assert_eq!((other.status.as_u16(), other.body.as_ref()), (200, b"the body".as_ref()));
    assert_eq!(origin.count("/v"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_on_every_node() {
    let origin = Origin::start().await;
    let redis = Redis::start().await;
    let (n1, n2) = pair(&config(origin.addr, "{ cache_control: true }"), Some(&redis)).await;
    let c = HttpClient::new();
    let fresh = [TEXT, ("cache-control", "max-age=600")];
    for path in ["/items", "/items/7", "/other"] {
        origin.answer(path, &fresh, path);
        miss_then_stored(&n1, path).await;
        assert_eq!(status(&c.get(&n2.url(path)).await), "Hit", "{path}");
    }
    // A failed POST invalidates nothing.
    origin.script("/other", Script { status: 500, headers: vec![], body: "no".into(), honour_conditionals: false });
    assert_eq!(c.call(Method::POST, &n1.url("/other"), "x").await.status, 500);
    origin.answer("/other", &fresh, "/other");
    assert_eq!(status(&c.get(&n2.url("/other")).await), "Hit");
    // A POST to /items creating /items/7 drops both, through the other node too.
    origin.answer("/items", &[TEXT, ("cache-control", "max-age=600"), ("location", "/items/7")], "/items");
    assert_eq!(c.call(Method::POST, &n1.url("/items"), "new").await.status, 200);
    for path in ["/items", "/items/7"] {
        eventually(WAIT, "the invalidation", || async {
            (status(&c.get(&n2.url(path)).await) == "Miss").then_some(())
        })
        .await;
    }
    assert_eq!(status(&c.get(&n2.url("/other")).await), "Hit", "another URI is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_invalidation_reaches_every_node_by_gossip() {
    let origin = Origin::start().await;
    let (n1, n2) = pair(&config(origin.addr, "{ cache_control: true, strategy: memory }"), None).await;
    let c = HttpClient::new();
    origin.answer("/m", &[TEXT, ("cache-control", "max-age=600")], "m");
    let key = miss_then_stored(&n1, "/m").await.header("x-cache-key").to_owned();
    miss_then_stored(&n2, "/m").await;
    assert_eq!(c.call(Method::DELETE, &n1.url("/m"), "").await.status, 200);
    for gw in [&n1, &n2] {
        eventually(WAIT, "the invalidation to reach the node", || async {
            (c.get(&gw.admin_url(&format!("/proxy-cache/{key}"))).await.status == 404).then_some(())
        })
        .await;
    }
    assert_eq!(status(&c.get(&n2.url("/m")).await), "Miss");
}

/// One route on `upstream` with key-auth and the `proxy-cache` `plugin` (YAML flow), and two
/// consumers: ann (key `ann-key`) and bob (`bob-key`).
fn two_consumers(upstream: std::net::SocketAddr, plugin: &str) -> String {
    format!(
        r#"
services:
  - name: s
    url: "http://{upstream}"
    routes:
      - name: r
        paths: [/]
        plugins:
          key-auth: {{}}
          proxy-cache: {plugin}
consumers:
  - username: ann
    keyauth_credentials: [{{ key: ann-key }}]
  - username: bob
    keyauth_credentials: [{{ key: bob-key }}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_consumer_never_gets_anothers_response() {
    let echo = Upstream::start("a").await;
    let yaml = two_consumers(echo.addr, "{ strategy: memory }");
    let gw = Gateway::start(&yaml).await;
    let c = HttpClient::new();
    let ann = c.get_with(&gw.url("/me"), &[("apikey", "ann-key")]).await;
    assert_eq!((ann.status.as_u16(), status(&ann)), (200, "Miss"));
    stored(&gw, ann.header("x-cache-key")).await;
    let bob = c.get_with(&gw.url("/me"), &[("apikey", "bob-key")]).await;
    assert_eq!(status(&bob), "Miss", "bob's own entry");
    assert_ne!(bob.header("x-cache-key"), ann.header("x-cache-key"));
    assert!(String::from_utf8_lossy(&bob.body).contains("bob"), "{:?}", bob.body);
    stored(&gw, bob.header("x-cache-key")).await;
    for (key, name) in [("ann-key", "ann"), ("bob-key", "bob")] {
        let reply = c.get_with(&gw.url("/me"), &[("apikey", key)]).await;
        assert_eq!(status(&reply), "Hit");
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        assert!(body.contains(name) && !body.contains(if name == "ann" { "bob" } else { "ann" }), "{body}");
    }
    assert_eq!(echo.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_drops_the_entries_of_every_consumer_and_variant_on_every_node() {
    let origin = Origin::start().await;
    let redis = Redis::start().await;
    let yaml = two_consumers(origin.addr, "{ cache_control: true, vary_headers: [accept-language] }");
    let (n1, n2) = pair(&yaml, Some(&redis)).await;
    let c = HttpClient::new();
    origin.answer("/items", &[TEXT, ("cache-control", "max-age=600")], "the list");
    let variants = [("ann-key", "fr"), ("ann-key", "de"), ("bob-key", "de")];
    let mut keys = Vec::new();
    for (apikey, language) in variants {
        let ask = [("apikey", apikey), ("accept-language", language)];
        let miss = c.get_with(&n1.url("/items"), &ask).await;
        assert_eq!(status(&miss), "Miss", "{apikey} {language}");
        stored(&n1, miss.header("x-cache-key")).await;
        // Read through n2 too, so that both nodes' memory levels hold a copy.
        assert_eq!(status(&c.get_with(&n2.url("/items"), &ask).await), "Hit");
        keys.push(miss.header("x-cache-key").to_owned());
    }
    keys.dedup();
    assert_eq!(keys.len(), 3, "a key each");
    let post = c.send(http::Request::post(n2.url("/items")).header("apikey", "ann-key").body("new".into()).unwrap());
    assert_eq!(post.await.status, 200);
    for gw in [&n1, &n2] {
        for key in &keys {
            gone(gw, key).await;
        }
    }
    for (apikey, language) in variants {
        let reply = c.get_with(&n1.url("/items"), &[("apikey", apikey), ("accept-language", language)]).await;
        assert_eq!(status(&reply), "Miss", "{apikey} {language}: dropped with the others");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_cache_control_decides_when_chosen() {
    let origin = Origin::start().await;
    let plugin = "{ cache_control: true, cdn_cache_control: true, strategy: memory }";
    let gw = Gateway::start(&config(origin.addr, plugin)).await;
    let c = HttpClient::new();
    // Browsers are told not to keep it; this cache keeps it (RFC 9213).
    origin.answer("/cdn", &[TEXT, ("cache-control", "no-store"), ("cdn-cache-control", "max-age=600")], "cdn");
    miss_then_stored(&gw, "/cdn").await;
    let hit = c.get(&gw.url("/cdn")).await;
    assert_eq!((status(&hit), hit.header("cache-control")), ("Hit", "no-store"), "passed on as it was");
    // And the other way round: CDN-Cache-Control forbids what Cache-Control allows.
    origin.answer("/not-here", &[TEXT, ("cache-control", "max-age=600"), ("cdn-cache-control", "no-store")], "x");
    for _ in 0..2 {
        assert_eq!(status(&c.get(&gw.url("/not-here")).await), "Bypass");
    }
    assert_eq!((origin.count("/cdn"), origin.count("/not-here")), (1, 2));
}
