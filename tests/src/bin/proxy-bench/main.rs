//! `proxy-bench [SECONDS] [CONNECTIONS] [ROUNDS]`: this gateway beside nginx and HAProxy, in one
//! run on one machine, in front of one fixed-body upstream, with a small body and a 64 KiB one.
//!
//! Every proxy gets one worker (thread or process), logging off, pinned to CPU 0; the load
//! generators, the upstream and Redis share CPU 1. For each contender: the most it serves (wrk,
//! keep-alive), then p50 and p99 at a fixed rate of 70% of the slowest of direct, gateway, nginx
//! and HAProxy (oha, open loop, corrected for coordinated omission), the CPU seconds it spent per
//! 100k requests at full load, and its peak resident memory. Extra rows: the gateway with rate
//! limiting (redis and local policy, a limit never reached; redis, a client always over its limit,
//! answered 429), with cache hits (redis strategy, from its memory level; memory strategy; redis
//! strategy revalidated on every hit, the upstream answering 304), with key-auth and jwt, and with 10,000 routes. The `plugins` case: the plain gateway
//! beside the same with cors + request-transformer + correlation-id on its route, and with an
//! access log file (`PROXY_BENCH_ONLY=plugins` runs only those). HTTPS rows: the gateway, nginx and
//! HAProxy terminating TLS with one ECDSA P-256 certificate, on kept-alive connections and with a
//! new connection (a full handshake) for every request; `PROXY_BENCH_ONLY=https` runs only
//! those. Each measurement runs ROUNDS times, the contenders taking
//! turns so that a slow spell of the machine hits them all, and the table shows the medians.
//! Prints a Markdown table and the targets it checks.
//!
//! Run with `scripts/bench` (installs nginx, HAProxy, wrk and oha, builds in release).

mod contender;
mod load;
mod procs;
mod upstream;

use contender::{BenchCertificate, Contender};
use load::{Expect, Latency, Throughput};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;
use tests::Redis;

const PROXY_CPU: usize = 0;
const LOAD_CPU: usize = 1;
/// Share of the slowest contender's maximum at which latency is measured.
const FIXED_RATE_SHARE: f64 = 0.7;

/// One line of the table: a contender on one body size.
struct Row {
    case: &'static str,
    name: &'static str,
    url: String,
    /// None for the upstream hit directly.
    contender: Option<Contender>,
    /// Whether it sets the fixed rate (the four main contenders do; the gateway's variants don't).
    main: bool,
    /// What its answers should be.
    expect: Expect,
    /// A new connection for every request.
    fresh: bool,
    throughput: Vec<Throughput>,
    cpu_per_100k: Vec<f64>,
    latency: Vec<Latency>,
}

impl Row {
    /// A row not measured yet, for `path` at `addr`.
    fn new(
        case: &'static str,
        name: &'static str,
        addr: SocketAddr,
        path: &str,
        contender: Option<Contender>,
        main: bool,
    ) -> Row {
        let scheme = if case.starts_with("https") { "https" } else { "http" };
        let url = format!("{scheme}://{addr}{path}");
        let (throughput, cpu_per_100k, latency) = (Vec::new(), Vec::new(), Vec::new());
        let fresh = case == NEW_CONNECTIONS;
        Row { case, name, url, contender, main, expect: Expect::Ok, fresh, throughput, cpu_per_100k, latency }
    }

    /// The median requests per second over the rounds.
    fn per_second(&self) -> f64 {
        median(self.throughput.iter().map(|t| t.per_second))
    }

    fn cpu_per_100k(&self) -> Option<f64> {
        (!self.cpu_per_100k.is_empty()).then(|| median(self.cpu_per_100k.iter().copied()))
    }

    fn p50(&self) -> Duration {
        Duration::from_secs_f64(median(self.latency.iter().map(|l| l.p50.as_secs_f64())))
    }

    fn p99(&self) -> Duration {
        Duration::from_secs_f64(median(self.latency.iter().map(|l| l.p99.as_secs_f64())))
    }

    fn failures(&self) -> u64 {
        self.throughput.iter().map(|t| t.failures).sum::<u64>() + self.latency.iter().map(|l| l.failures).sum::<u64>()
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(5);
    let connections: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(64);
    let rounds: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let duration = Duration::from_secs(seconds);
    if std::env::var_os("GATEWAY_TEST_LOG_LEVEL").is_none() {
        // Logging off but for the line that tells the harness the ports. Set before any thread
        // but this one exists.
        std::env::set_var("GATEWAY_TEST_LOG_LEVEL", "warn,gateway::node=info");
    }
    // Everything this process starts (upstream thread, wrk, oha, Redis) runs on the load CPU.
    procs::pin(&[std::process::id()], LOAD_CPU);
    let upstream = upstream::start();
    let redis = Redis::start().await;

    let mut rows = Vec::new();
    for (case, path) in [("small", "/small"), ("64 KiB", "/64k")] {
        rows.extend(main_rows(case, path, upstream).await);
    }
    rows.extend(gateway_variants(upstream, &redis.url()).await);
    let logs = tests::TempDir::new();
    rows.extend(traffic_plugin_rows(upstream, logs.path()).await);
    let certificate = BenchCertificate::new();
    for case in [HTTPS, NEW_CONNECTIONS] {
        rows.extend(https_rows(case, upstream, &certificate).await);
    }
    // PROXY_BENCH_ONLY=https: only the rows of the cases that start so.
    if let Ok(only) = std::env::var("PROXY_BENCH_ONLY") {
        rows.retain(|r| r.case.starts_with(&only));
    }

    eprintln!("{connections} connections, {seconds} s per measurement, {rounds} rounds");
    for round in 1..=rounds {
        for row in &mut rows {
            let _ = load::max_throughput(&row.url, connections, Duration::from_secs(1), row.expect, row.fresh); // warm-up
            let pids = row.contender.as_ref().map(Contender::pids).unwrap_or_default();
            let before = procs::cpu_seconds(&pids);
            let measured = load::max_throughput(&row.url, connections, duration, row.expect, row.fresh);
            if row.contender.is_some() {
                row.cpu_per_100k.push((procs::cpu_seconds(&pids) - before) / measured.requests as f64 * 100_000.0);
            }
            eprintln!("round {round} {:<7} {:<31} {:>9.0} req/s", row.case, row.name, measured.per_second);
            row.throughput.push(measured);
        }
    }
    let mut rates = Vec::new();
    let mut cases: Vec<&str> = Vec::new();
    for row in &rows {
        if !cases.contains(&row.case) {
            cases.push(row.case);
        }
    }
    for case in cases {
        let of_case = || rows.iter().filter(move |r| r.case == case);
        // A case without the main contenders (the plugins') is measured at its own slowest's rate.
        let main = of_case().any(|r| r.main);
        let slowest = of_case().filter(|r| r.main || !main).map(Row::per_second).fold(f64::INFINITY, f64::min);
        rates.push((case, (slowest * FIXED_RATE_SHARE) as u64));
    }
    for round in 1..=rounds {
        for row in &mut rows {
            let rate =
                rates.iter().find(|(case, _)| *case == row.case).map(|(_, rate)| *rate).expect("a rate per case");
            let latency = load::fixed_rate(&row.url, rate, connections, duration, row.expect, row.fresh);
            eprintln!(
                "round {round} {:<7} {:<31} p50 {:?} p99 {:?} at {rate}/s",
                row.case, row.name, latency.p50, latency.p99
            );
            row.latency.push(latency);
        }
    }
    print!("{}", report(&rows, &rates, connections, seconds, rounds));
}

/// The upstream hit directly, the gateway, nginx and HAProxy, for one body size.
async fn main_rows(case: &'static str, path: &str, upstream: SocketAddr) -> Vec<Row> {
    let gateway =
        Contender::gateway(&service_yaml(upstream, "{ name: all, paths: [/], strip_path: false }"), None, PROXY_CPU)
            .await;
    let nginx = Contender::nginx(upstream, PROXY_CPU, None).await;
    let haproxy = Contender::haproxy(upstream, PROXY_CPU, None).await;
    let row = |name, addr, contender| Row::new(case, name, addr, path, contender, true);
    vec![
        row("direct", upstream, None),
        row("gateway", gateway.addr, Some(gateway)),
        row("nginx", nginx.addr, Some(nginx)),
        row("HAProxy", haproxy.addr, Some(haproxy)),
    ]
}

/// The small body over HTTPS (`HTTPS`: kept-alive connections; `NEW_CONNECTIONS`: a TLS
/// handshake for every request), the gateway, nginx and HAProxy terminating TLS with the same
/// ECDSA P-256 certificate.
async fn https_rows(case: &'static str, upstream: SocketAddr, certificate: &BenchCertificate) -> Vec<Row> {
    let yaml = service_yaml(upstream, "{ name: all, paths: [/], strip_path: false }") + &certificate.entity();
    let gateway = Contender::gateway_tls(&yaml, PROXY_CPU).await;
    let nginx = Contender::nginx(upstream, PROXY_CPU, Some(certificate)).await;
    let haproxy = Contender::haproxy(upstream, PROXY_CPU, Some(certificate)).await;
    let row = |name, addr, contender| Row::new(case, name, addr, "/small", Some(contender), true);
    vec![row("gateway", gateway.addr, gateway), row("nginx", nginx.addr, nginx), row("HAProxy", haproxy.addr, haproxy)]
}

/// The HTTPS cases.
const HTTPS: &str = "https";
const NEW_CONNECTIONS: &str = "https, a handshake a request";

/// The gateway with a plugin on its one route, or with 10,000 routes, small body.
async fn gateway_variants(upstream: SocketAddr, redis_url: &str) -> Vec<Row> {
    let variants = [
        ("gateway, rate limiting (redis)", "rate-limiting: { second: 1000000000, policy: redis }"),
        ("gateway, rate limiting (local)", "rate-limiting: { second: 1000000000, policy: local }"),
        // One request an hour: the first is allowed, every other one is a 429.
        (OVER_THE_LIMIT, "rate-limiting: { hour: 1, window: fixed, policy: redis }"),
        ("gateway, cache hits (redis)", "proxy-cache: { strategy: redis, cache_ttl: 3600 }"),
        ("gateway, cache hits (memory)", "proxy-cache: { strategy: memory, cache_ttl: 3600 }"),
        (REVALIDATED, "proxy-cache: { strategy: redis, cache_control: true, cache_ttl: 3600 }"),
    ];
    let mut rows = Vec::new();
    for (name, plugin) in variants {
        let route = format!("{{ name: all, paths: [/], strip_path: false, plugins: {{ {plugin} }} }}");
        let gateway = Contender::gateway(&service_yaml(upstream, &route), Some(redis_url), PROXY_CPU).await;
        let path = if name == REVALIDATED { "/small/revalidate" } else { "/small" };
        let mut row = variant_row(name, gateway, path);
        if name == OVER_THE_LIMIT {
            row.expect = Expect::Refused;
        }
        rows.push(row);
    }
    // Each request authenticated by a credential in its query string (the load tools send one
    // URL): a key, and an HS256 token of `iss: bench` that expires in 2100, signed with
    // `bench-secret`.
    let authenticated = [
        (KEY_AUTH, "key-auth: {}", "/small?apikey=bench-key"),
        (
            JWT,
            "jwt: {}",
            "/small?jwt=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJiZW5jaCIsImV4cCI6NDEwMjQ0NDgwMH0.\
             aUtJQRVeWOzE5NhZylzOA6tIzGsNuZE9GGPXaF2pEpM",
        ),
    ];
    for (name, plugin, path) in authenticated {
        let route = format!("{{ name: all, paths: [/], strip_path: false, plugins: {{ {plugin} }} }}");
        let yaml = service_yaml(upstream, &route) + CONSUMER;
        let gateway = Contender::gateway(&yaml, None, PROXY_CPU).await;
        rows.push(variant_row(name, gateway, path));
    }
    let gateway = Contender::gateway(&ten_thousand_routes(upstream), None, PROXY_CPU).await;
    rows.push(variant_row("gateway, 10,000 routes", gateway, "/small"));
    rows
}

/// The traffic plugins' case: the plain gateway, the same with cors, request-transformer and
/// correlation-id on its route, and with every request written to an access log file.
const PLUGINS: &str = "plugins";
const PLAIN: &str = "gateway, no plugin";
const TRAFFIC_PLUGINS: &str = "gateway, cors + request-transformer + correlation-id";
const ACCESS_LOG: &str = "gateway, access_log to a file";

async fn traffic_plugin_rows(upstream: SocketAddr, dir: &std::path::Path) -> Vec<Row> {
    let plain = service_yaml(upstream, "{ name: all, paths: [/], strip_path: false }");
    let plugins = "cors: { origins: [\"https://app.example\"] }, correlation-id: {}, \
                   request-transformer: { add: { headers: [\"x-bench:1\"] }, remove: { headers: [x-unused] } }";
    let with_plugins =
        service_yaml(upstream, &format!("{{ name: all, paths: [/], strip_path: false, plugins: {{ {plugins} }} }}"));
    let log = dir.join("access.log");
    let log = log.to_str().expect("a UTF-8 path");
    let contenders = [
        (PLAIN, Contender::gateway(&plain, None, PROXY_CPU).await),
        (TRAFFIC_PLUGINS, Contender::gateway(&with_plugins, None, PROXY_CPU).await),
        (ACCESS_LOG, Contender::gateway_with(&plain, &["--access-log", log], PROXY_CPU).await),
    ];
    contenders.into_iter().map(|(name, c)| Row::new(PLUGINS, name, c.addr, "/small", Some(c), false)).collect()
}

/// The cached row whose entry is revalidated on every hit (`no-cache`, answered `304`).
const REVALIDATED: &str = "gateway, cache hits revalidated (304 from the upstream)";
/// The rate-limited row whose client is always over its limit (every answer a 429).
const OVER_THE_LIMIT: &str = "gateway, rate limiting (redis), all over the limit (429)";
const KEY_AUTH: &str = "gateway, key-auth";
const JWT: &str = "gateway, jwt (HS256)";

/// The consumer the authenticated rows' requests identify.
const CONSUMER: &str = "consumers:
  - username: bench
    keyauth_credentials: [{ key: bench-key }]
    jwt_secrets: [{ key: bench, algorithm: HS256, secret: bench-secret }]
";

fn variant_row(name: &'static str, gateway: Contender, path: &str) -> Row {
    Row::new("small", name, gateway.addr, path, Some(gateway), false)
}

/// One service on the upstream with the routes given (YAML flow mappings).
fn service_yaml(upstream: SocketAddr, routes: &str) -> String {
    format!("services:\n  - name: bench\n    url: http://{upstream}\n    routes:\n      - {routes}\n")
}

/// 9,999 routes that the request does not take (unique prefixes under hosts and without, one
/// regex in twenty), then the one it takes.
fn ten_thousand_routes(upstream: SocketAddr) -> String {
    let mut routes = String::new();
    for i in 0..9_999 {
        let _ = match i {
            i if i % 20 == 0 => writeln!(routes, "      - {{ name: r{i}, paths: ['~/api/r{i}/[0-9]+$'] }}"),
            i if i % 3 == 0 => {
                writeln!(routes, "      - {{ name: r{i}, hosts: [h{}.example.com], paths: [/api/r{i}] }}", i % 100)
            }
            i => writeln!(routes, "      - {{ name: r{i}, paths: [/api/r{i}] }}"),
        };
    }
    routes.push_str("      - { name: bench, paths: [/small], strip_path: false }\n");
    format!("services:\n  - name: bench\n    url: http://{upstream}\n    routes:\n{routes}")
}

/// The Markdown table, the conditions it was measured in, and the targets.
fn report(rows: &[Row], rates: &[(&str, u64)], connections: usize, seconds: u64, rounds: usize) -> String {
    let mut out = String::new();
    let find = |case: &str, name: &str| rows.iter().find(|r| r.case == case && r.name == name);
    let _ = writeln!(out, "{}\n", machine());
    let _ = writeln!(
        out,
        "Load: wrk, 1 thread, {connections} keep-alive connections, {seconds} s; latency: oha at {}, {connections} \
         connections, {seconds} s, corrected for coordinated omission. Proxies pinned to CPU {PROXY_CPU} with one \
         worker; load, upstream and Redis on CPU {LOAD_CPU}. Medians of {rounds} rounds.\n",
        rates.iter().map(|(case, rate)| format!("{rate} req/s ({case})")).collect::<Vec<_>>().join(" and "),
    );
    let _ = writeln!(
        out,
        "| body | contender | req/s | ÷ direct | ÷ nginx | ÷ HAProxy | p50 | p99 | CPU s / 100k req | peak RSS | failed |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let ratio = |name: &str| {
            find(row.case, name).map_or("—".into(), |base| format!("{:.2}", row.per_second() / base.per_second()))
        };
        let rss = row.contender.as_ref().map_or("—".into(), |c| mib(procs::peak_rss_kib(&c.pids())));
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.case,
            row.name,
            row.per_second(),
            ratio("direct"),
            ratio("nginx"),
            ratio("HAProxy"),
            ms(row.p50()),
            ms(row.p99()),
            row.cpu_per_100k().map_or("—".into(), |c| format!("{c:.2}")),
            rss,
            row.failures(),
        );
    }
    for case in [HTTPS, NEW_CONNECTIONS] {
        if let (Some(gateway), Some(nginx)) = (find(case, "gateway"), find(case, "nginx")) {
            let ratio = gateway.per_second() / nginx.per_second();
            let _ = writeln!(
                out,
                "\n{case}: the gateway {ratio:.2}× nginx (≥ 1.0; {}): {}",
                by_round(gateway, nginx),
                if ratio >= 1.0 { "met" } else { "MISSED" }
            );
        }
    }
    if let Some(plain) = find(PLUGINS, PLAIN) {
        let _ = writeln!(out, "\nTraffic plugins, each against the plain gateway measured beside it:");
        for name in [TRAFFIC_PLUGINS, ACCESS_LOG] {
            let row = find(PLUGINS, name).expect("a row");
            let ratio = row.per_second() / plain.per_second();
            let verdict = if ratio >= 0.9 { "met" } else { "MISSED" };
            let _ = writeln!(out, "- {name}: {ratio:.2}× (≥ 0.9; {}): {verdict}", by_round(row, plain));
        }
    }
    if find("small", "gateway").is_none() {
        return out;
    }
    let _ = writeln!(out, "\nTargets (small body):");
    let small = |name: &str| find("small", name).expect("a row");
    let (gateway, nginx, haproxy) = (small("gateway"), small("nginx"), small("HAProxy"));
    let cpu = |r: &Row| r.cpu_per_100k().unwrap_or(f64::INFINITY);
    let mut target = |what: String, ok: bool| {
        let _ = writeln!(out, "- {what}: {}", if ok { "met" } else { "MISSED" });
    };
    let vs_nginx = gateway.per_second() / nginx.per_second();
    target(format!("throughput {vs_nginx:.2}× nginx (≥ 1.0; {})", by_round(gateway, nginx)), vs_nginx >= 1.0);
    let vs_haproxy = gateway.per_second() / haproxy.per_second();
    target(format!("throughput {vs_haproxy:.2}× HAProxy (≥ 0.9; {})", by_round(gateway, haproxy)), vs_haproxy >= 0.9);
    target(format!("p99 {} against nginx's {}", ms(gateway.p99()), ms(nginx.p99())), gateway.p99() <= nginx.p99());
    target(
        format!("CPU per 100k {:.2} s against nginx's {:.2} s", cpu(gateway), cpu(nginx)),
        cpu(gateway) <= cpu(nginx),
    );
    for (name, goal) in [(KEY_AUTH, 0.95), (JWT, 0.90)] {
        let row = small(name);
        let ratio = row.per_second() / gateway.per_second();
        target(format!("{name} {ratio:.2}× the gateway (≥ {goal}; {})", by_round(row, gateway)), ratio >= goal);
    }
    let redis = small("gateway, rate limiting (redis)");
    let limited = redis.per_second() / gateway.per_second();
    target(
        format!("rate limiting (redis) {limited:.2}× the gateway (≥ 0.8; {})", by_round(redis, gateway)),
        limited >= 0.8,
    );
    out
}

/// `row`'s throughput over `base`'s in each round. The rows of one round are measured within
/// minutes of each other, so these ratios are spared most of the drift of a shared machine that
/// separates the rounds (the table's ratios are of medians taken across rounds).
fn by_round(row: &Row, base: &Row) -> String {
    let ratios: Vec<String> = row
        .throughput
        .iter()
        .zip(&base.throughput)
        .map(|(a, b)| format!("{:.2}", a.per_second / b.per_second))
        .collect();
    format!("round by round {}", ratios.join(", "))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The CPU model, core count, kernel and the contenders' versions.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']));
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let version = |cmd: &str, arg: &str| {
        std::process::Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                let text = [o.stdout, o.stderr].concat();
                String::from_utf8_lossy(&text).lines().next().unwrap_or_default().trim().to_owned()
            })
            .unwrap_or_else(|| format!("{cmd}: not found"))
    };
    format!(
        "Machine: {} × {}, kernel {}. {}; {}; {}; {}.",
        cores,
        model.unwrap_or("unknown CPU"),
        version("uname", "-r"),
        version("/usr/sbin/nginx", "-v"),
        version("/usr/sbin/haproxy", "-v"),
        version("wrk", "-v"),
        version("oha", "--version"),
    )
}
