//! The load: wrk for the most a contender serves (closed loop, keep-alive), oha for latency at a
//! fixed rate (open loop, each latency counted from when the request was due, so a stall is not
//! hidden by the requests it held back).

use std::process::Command;
use std::time::Duration;

/// What wrk measured.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub requests: u64,
    pub per_second: f64,
    /// Answers that were not 2xx or 3xx (unless refusals were expected), plus connect, read,
    /// write and timeout errors.
    pub failures: u64,
}

/// What a contender should answer: 2xx, or 429 for every request (a client over its limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Ok,
    Refused,
}

/// Keeps `connections` keep-alive connections busy on `url` for `duration` from one wrk thread.
/// wrk cannot tell a 429 from a 5xx: with [`Expect::Refused`] only socket errors count as
/// failures here (the fixed-rate run checks the statuses).
/// With `fresh`, every request asks for its connection to close: a new connection (and TLS
/// handshake) each.
pub fn max_throughput(url: &str, connections: usize, duration: Duration, expect: Expect, fresh: bool) -> Throughput {
    let mut wrk = Command::new("wrk");
    wrk.args(["-t1", &format!("-c{connections}"), &format!("-d{}s", duration.as_secs().max(1)), "--timeout", "5s"]);
    if fresh {
        wrk.args(["-H", "Connection: close"]);
    }
    let out = run(wrk.arg(url));
    let number_after = |label: &str| -> Option<f64> {
        let at = out.find(label)? + label.len();
        out[at..].split_whitespace().next()?.trim_end_matches(',').parse().ok()
    };
    let requests = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{out}"));
    let per_second = number_after("Requests/sec:").unwrap_or_else(|| panic!("no rate in wrk's output:\n{out}"));
    let non_2xx = number_after("Non-2xx or 3xx responses:").unwrap_or(0.0) as u64;
    let socket_errors: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|l| l.split(',').filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    let failures = socket_errors + if expect == Expect::Refused { 0 } else { non_2xx };
    if failures > 0 {
        let detail: Vec<&str> = out.lines().filter(|l| l.contains("Non-2xx") || l.contains("Socket errors")).collect();
        eprintln!("  wrk on {url}: {}", detail.join("; ").trim());
    }
    Throughput { requests, per_second, failures }
}

/// What oha measured at a fixed rate.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    /// Requests that did not get the expected answer (2xx, or 429).
    pub failures: u64,
}

/// Sends `rate` requests a second to `url` for `duration`, over at most `connections` keep-alive
/// connections, and reports latency corrected for coordinated omission.
pub fn fixed_rate(
    url: &str,
    rate: u64,
    connections: usize,
    duration: Duration,
    expect: Expect,
    fresh: bool,
) -> Latency {
    let mut oha = Command::new("oha");
    if fresh {
        oha.arg("--disable-keepalive");
    }
    // The contenders' certificate is the bench's own.
    if url.starts_with("https://") {
        oha.arg("--insecure");
    }
    let out = run(oha.args([
        "--no-tui",
        "--output-format",
        "json",
        "--latency-correction",
        "-q",
        &rate.to_string(),
        "-c",
        &connections.to_string(),
        "-z",
        &format!("{}s", duration.as_secs().max(1)),
        url,
    ]));
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("oha's output is not JSON ({e}):\n{out}"));
    let percentile = |name: &str| {
        let seconds =
            report["latencyPercentiles"][name].as_f64().unwrap_or_else(|| panic!("no {name} in oha's report:\n{out}"));
        Duration::from_secs_f64(seconds)
    };
    let statuses = report["statusCodeDistribution"].as_object().cloned().unwrap_or_default();
    let answered: u64 = statuses.values().filter_map(|n| n.as_u64()).sum();
    let expected = |code: &str| match expect {
        Expect::Ok => code.starts_with('2'),
        Expect::Refused => code == "429",
    };
    let ok: u64 = statuses.iter().filter(|(code, _)| expected(code)).filter_map(|(_, n)| n.as_u64()).sum();
    // Requests still in flight when the time is up are cut by oha itself: not a failure.
    let errors: u64 = report["errorDistribution"]
        .as_object()
        .map(|e| e.iter().filter(|(kind, _)| *kind != "aborted due to deadline").filter_map(|(_, n)| n.as_u64()).sum())
        .unwrap_or(0);
    if answered - ok + errors > 0 {
        eprintln!(
            "  oha on {url}: statuses {}, errors {}",
            report["statusCodeDistribution"], report["errorDistribution"]
        );
    }
    Latency { p50: percentile("p50"), p99: percentile("p99"), failures: answered - ok + errors }
}

/// Runs a load generator to its end and returns what it printed.
fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{command:?} failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    text
}
