//! Failover against real upstreams under a bounded load: retries on a status, a per-try
//! timeout, what is never retried (a POST, a body already streamed), and the failover settings
//! the config refuses.

use bytes::Bytes;
use http::Method;
use http_body_util::Full;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::http::HttpClient;
use tests::{eventually, validate_config, Gateway, Upstream};

/// One upstream `up` over `targets`, behind service `s` on `/` with `service` (YAML flow
/// fields, e.g. `retry_on_statuses: [503]`), and service `plain` on `/plain` without them. The
/// retry budget's floor is above the tests' concurrency (4 clients), as an operator sizes it
/// for a load that must see no error; the budget's own tests use [`budget_config`].
fn config(targets: &[&Upstream], service: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("{{ target: \"{}\" }}", t.addr)).collect();
    format!(
        r#"
services:
  - {{ name: s, url: "http://up", {service}, routes: [{{ name: r, paths: [/] }}] }}
  - {{ name: plain, url: "http://up", routes: [{{ name: plain, paths: [/plain] }}] }}
upstreams:
  - name: up
    retry_budget: {{ min_retries: 4 }}
    targets: [{targets}]
"#,
        targets = targets.join(", "),
    )
}

type Make = dyn Fn(usize) -> http::Request<Full<Bytes>> + Send + Sync;

/// A bounded load: `clients` concurrent clients each sending `each` requests.
struct Load {
    sent: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<u16>>>,
}

impl Load {
    fn start(clients: usize, each: usize, request: Arc<Make>) -> Load {
        let sent = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (request, sent) = (request.clone(), sent.clone());
                tokio::spawn(async move {
                    let c = HttpClient::new();
                    let mut statuses = Vec::with_capacity(each);
                    for _ in 0..each {
                        let n = sent.fetch_add(1, Ordering::Relaxed) as usize;
                        statuses.push(c.try_send(request(n)).await.map_or(0, |r| r.status.as_u16()));
                    }
                    statuses
                })
            })
            .collect();
        Load { sent, tasks }
    }

    /// Waits until `n` requests have been sent.
    async fn reached(&self, n: u64) {
        eventually(Duration::from_secs(20), &format!("{n} requests sent"), || async {
            (self.sent.load(Ordering::Relaxed) >= n).then_some(())
        })
        .await;
    }

    /// The status of every answer (0 for a request that got none).
    async fn statuses(self) -> Vec<u16> {
        let mut statuses = Vec::new();
        for task in self.tasks {
            statuses.extend(task.await.expect("a load task"));
        }
        statuses
    }
}

async fn load(clients: usize, each: usize, request: Arc<Make>) -> Vec<u16> {
    Load::start(clients, each, request).statuses().await
}

fn get(url: String) -> Arc<Make> {
    Arc::new(move |_| http::Request::get(&url).body(Full::default()).expect("a request"))
}

fn errors(statuses: &[u16]) -> Vec<u16> {
    statuses.iter().copied().filter(|s| *s != 200).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_answering_503_half_the_time_costs_no_client_errors() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    a.flaky_status(503);
    b.flaky_status(503);
    // Each try fails half the time: 16 retries leave a request one chance in 2^17 to fail them all.
    let service = "retries: 16, retry_on_statuses: [502, 503, 504], retry_backoff: { base: 1, max: 5 }";
    let gw = Gateway::start(&config(&[&a, &b], service)).await;
    let statuses = load(4, 50, get(gw.url("/"))).await;
    assert_eq!(errors(&statuses), Vec::<u16>::new(), "every 503 retried away");
    assert!(a.flaked() + b.flaked() >= 50, "the targets failed half the time: {} and {}", a.flaked(), b.flaked());

    // The same targets without `retry_on_statuses`: their 503s reach the clients.
    let statuses = load(2, 20, get(gw.url("/plain"))).await;
    assert!(statuses.contains(&503), "without retry_on_statuses a 503 is the client's: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_killed_mid_load_costs_no_get_errors() {
    let (a, b, mut c) = (Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await);
    let gw = Gateway::start(&config(&[&a, &b, &c], "retry_on_statuses: [502, 503]")).await;
    let load = Load::start(4, 60, get(gw.url("/")));
    load.reached(80).await;
    let served_before = c.requests();
    // In-flight exchanges are cut, and the port refuses from now on.
    c.drop_requests(true);
    c.stop().await;
    let statuses = load.statuses().await;
    assert_eq!(statuses.len(), 240);
    assert_eq!(errors(&statuses), Vec::<u16>::new(), "a GET is retried past a killed target");
    assert!(served_before > 0, "c took traffic before it was killed");
    assert!(a.requests() + b.requests() > 150, "the others took the rest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_not_retried_on_a_status_unless_allowed_and_a_streamed_body_never_is() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    a.force_status(503);
    let gw = Gateway::start(&config(&[&a, &b], "retry_on_statuses: [503], retry_backoff: { base: 0, max: 0 }")).await;
    let c = HttpClient::new();
    let (mut got_503, sent) = (0, 20);
    for _ in 0..sent {
        let reply = c.call(Method::POST, &gw.url("/"), "").await;
        assert!(reply.status == 200 || reply.status == 503, "{}", reply.status);
        got_503 += u64::from(reply.status == 503);
    }
    assert_eq!(a.requests() + b.requests(), sent, "each POST went to one target only");
    assert_eq!(got_503, a.requests(), "a's 503s went to the clients");
    assert!(got_503 > 0);

    // A GET on the same targets is retried.
    for _ in 0..10 {
        assert_eq!(c.get(&gw.url("/")).await.status, 200);
    }

    // `retry_non_idempotent` extends it to a POST without a body...
    let gw = Gateway::start(&config(
        &[&a, &b],
        "retry_on_statuses: [503], retry_non_idempotent: true, retry_backoff: { base: 0, max: 0 }",
    ))
    .await;
    for _ in 0..10 {
        assert_eq!(c.call(Method::POST, &gw.url("/"), "").await.status, 200, "an empty POST is retried");
    }
    // ...but a body that went upstream is never sent again: the answer is the client's.
    let (before_a, before_b) = (a.requests(), b.requests());
    let mut got_503 = 0;
    for _ in 0..20 {
        let reply = c.call(Method::POST, &gw.url("/"), "a body").await;
        got_503 += u64::from(reply.status == 503);
    }
    assert_eq!(a.requests() - before_a + b.requests() - before_b, 20, "no POST with a body was sent twice");
    assert_eq!(got_503, a.requests() - before_a);
    assert!(got_503 > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_past_per_try_timeout_is_retried_on_another_target() {
    let slow = Upstream::start_with_delay("slow", Duration::from_secs(5)).await;
    let fast = Upstream::start("fast").await;
    let gw = Gateway::start(&config(&[&slow, &fast], "per_try_timeout: 200, read_timeout: 10000")).await;
    let c = HttpClient::new();
    for _ in 0..6 {
        let started = Instant::now();
        let reply = c.get(&gw.url("/")).await;
        assert_eq!((reply.status.as_u16(), reply.instance()), (200, "fast".to_owned()));
        assert!(started.elapsed() < Duration::from_secs(3), "the slow try was cut: {:?}", started.elapsed());
    }
    assert!(slow.requests() > 0, "the slow target was tried");

    // Without it, the slow target's answer is awaited: the read timeout ends the request.
    let gw = Gateway::start(&config(&[&slow], "read_timeout: 300")).await;
    assert_eq!(c.get(&gw.url("/")).await.status, 504);
}

#[test]
fn bad_retry_settings_and_budgets_are_refused_with_their_path() {
    let up = "upstreams: [{ name: up, targets: [{ target: \"127.0.0.1:1\" }] }]";
    for (service, error) in [
        ("retry_on_statuses: [503, 200]", "services/s.retry_on_statuses: 200 is not a status from 400 to 599"),
        ("retry_backoff: { base: 100, max: 10 }", "services/s.retry_backoff.max: 10 ms is less than base (100 ms)"),
        (
            "read_timeout: 1000, retry_backoff: { max: 5000 }",
            "services/s.retry_backoff.max: 5000 ms is longer than the service's read_timeout (1000 ms)",
        ),
        ("per_try_timeout: 0", "services/s.per_try_timeout: must be 1 ms or more"),
        ("read_timeout: 1000, per_try_timeout: 2000", "services/s.per_try_timeout: 2000 ms is longer"),
        ("retry_backoff: { base: 1, ceiling: 2 }", "unknown field `ceiling`"),
    ] {
        let yaml = format!("services: [{{ name: s, url: \"http://up\", {service} }}]\n{up}\n");
        let (code, stderr) = validate_config(&yaml);
        assert_eq!(code, Some(1), "{service}: {stderr}");
        assert!(stderr.contains(error), "{service}: wanted {error:?} in {stderr}");
    }
    for (upstream, error) in [
        ("retry_budget: { percent: 101 }", "upstreams/up.retry_budget.percent: must be 0 to 100"),
        ("retry_budget: { percent: -1 }", "upstreams/up.retry_budget.percent"),
        ("retry_budget: { share: 5 }", "unknown field `share`"),
    ] {
        let yaml = format!("services: [{{ name: s, url: \"http://up\" }}]\nupstreams: [{{ name: up, {upstream} }}]\n");
        let (code, stderr) = validate_config(&yaml);
        assert_eq!(code, Some(1), "{upstream}: {stderr}");
        assert!(stderr.contains(error), "{upstream}: wanted {error:?} in {stderr}");
    }
    let (code, stderr) = validate_config(&format!(
        "services: [{{ name: s, url: \"http://up\", retry_on_statuses: [502, 503, 504], per_try_timeout: 500 }}]\n{up}\n"
    ));
    assert_eq!(code, Some(0), "{stderr}");
}

/// Two targets behind service `s`, with the upstream's `retry_budget` (YAML flow).
fn budget_config(targets: &[&Upstream], budget: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("{{ target: \"{}\" }}", t.addr)).collect();
    format!(
        r#"
services:
  - {{ name: s, url: "http://up", retries: 5, retry_on_statuses: [503], retry_backoff: {{ base: 0, max: 0 }},
       routes: [{{ name: r, paths: [/] }}] }}
upstreams:
  - {{ name: up, retry_budget: {budget}, targets: [{targets}] }}
"#,
        targets = targets.join(", "),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_target_failing_the_upstream_gets_at_most_the_budgets_share_more() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    a.force_status(503);
    b.force_status(503);
    let gw = Gateway::start(&budget_config(&[&a, &b], "{ percent: 20, min_retries: 0 }")).await;
    let sent = 10 * 30;
    let statuses = load(10, 30, get(gw.url("/"))).await;
    assert_eq!(statuses.len(), sent);
    assert!(statuses.iter().all(|s| *s == 503), "the last answer is the client's");
    let received = a.requests() + b.requests();
    let sent = sent as u64;
    // Without the budget, 5 retries each: 6 times what the clients sent.
    assert!(received <= sent + sent * 20 / 100, "the upstream received {received} for {sent} requests");
    assert!(received > sent, "some retries fit the budget: {received}");
    let series = r#"gateway_upstream_retries_total{service="s",reason="status""#;
    assert!(gw.metric(&format!(r#"{series},outcome="budget_exhausted"}}"#)).await > 0.0);
    let retried = gw.metric(&format!(r#"{series},outcome="retried"}}"#)).await;
    assert_eq!(retried as u64, received - sent, "each retry made is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_of_zero_makes_no_retries() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    a.force_status(503);
    let gw = Gateway::start(&budget_config(&[&a, &b], "{ percent: 0, min_retries: 0 }")).await;
    let c = HttpClient::new();
    let mut got_503 = 0;
    for _ in 0..20 {
        got_503 += u64::from(c.get(&gw.url("/")).await.status == 503);
    }
    assert_eq!(a.requests() + b.requests(), 20, "every request tried once");
    assert_eq!(got_503, a.requests(), "a's answers went to the clients");
    let refused = r#"gateway_upstream_retries_total{service="s",reason="status",outcome="budget_exhausted"}"#;
    assert_eq!(gw.metric(refused).await as u64, got_503);

    // The default budget (20%, at least 3) lets a lone client's retries through.
    let gw = Gateway::start(&budget_config(&[&a, &b], "{ percent: 20 }")).await;
    for _ in 0..20 {
        assert_eq!(c.get(&gw.url("/")).await.status, 200);
    }
}
