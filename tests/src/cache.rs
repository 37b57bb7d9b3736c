//! What the proxy-cache tests share: a one-route config with the plugin, the `X-Cache-Status`
//! of a reply, and a wait for an entry to be stored.

use crate::http::{HttpClient, Reply};
use crate::{eventually, Gateway, Redis};
use std::time::Duration;

/// How long a cache test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(20);

/// One service at `upstream` with one route on `/` whose `proxy-cache` is `plugin` (YAML flow).
pub fn config(upstream: std::net::SocketAddr, plugin: &str) -> String {
    format!(
        "services: [{{ name: s, url: \"http://{upstream}\", routes: [{{ name: r, paths: [/], plugins: {{ proxy-cache: {plugin} }} }}] }}]"
    )
}

/// The reply's `X-Cache-Status`.
pub fn status(reply: &Reply) -> &str {
    reply.header("x-cache-status")
}

/// Waits until `gw` holds the entry `key` (a Miss stores it right after the body ends).
pub async fn stored(gw: &Gateway, key: &str) {
    eventually(WAIT, "the entry to be stored", || async {
        (HttpClient::new().get(&gw.admin_url(&format!("/proxy-cache/{key}"))).await.status == 200).then_some(())
    })
    .await;
}

/// Waits until `gw` no longer holds the entry `key` (in Redis nor in its memory level).
pub async fn gone(gw: &Gateway, key: &str) {
    eventually(WAIT, "the entry to be dropped", || async {
        (HttpClient::new().get(&gw.admin_url(&format!("/proxy-cache/{key}"))).await.status == 404).then_some(())
    })
    .await;
}

/// How many GET commands `redis` has run (`INFO commandstats`).
pub async fn redis_gets(redis: &Redis) -> u64 {
    let info = redis.cli(&["INFO", "commandstats"]).await;
    info.lines().find_map(|line| line.strip_prefix("cmdstat_get:calls=")?.split(',').next()?.parse().ok()).unwrap_or(0)
}

/// GETs every one of `urls` at once; the `X-Cache-Status` of each answer, which must be a 200.
pub async fn statuses_of_concurrent_gets(urls: Vec<String>) -> Vec<String> {
    let calls: Vec<_> =
        urls.into_iter().map(|url| tokio::spawn(async move { HttpClient::new().get(&url).await })).collect();
    let mut statuses = Vec::new();
    for call in calls {
        let reply = call.await.expect("the request task");
        assert_eq!(reply.status, 200);
        statuses.push(status(&reply).to_owned());
    }
    statuses
}
