//! The monitoring files of `deploy/` on their own: the alerting rules checked and unit-tested by
//! `promtool` (Debian's `prometheus` package, which scripts/test installs), and the Grafana
//! dashboard's JSON and PromQL. Both may name only metrics of docs/observability.md's table,
//! and a node may export only metrics that table lists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Runs `promtool args` in `dir`, panicking with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e}; install Debian's `prometheus` package (scripts/test does)"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_alerting_rules_are_valid() {
    let text = promtool(&deploy().join("prometheus"), &["check", "rules", "alerts.yml"]);
    assert!(text.contains("SUCCESS: 7 rules found"), "{text}");
}

#[test]
fn the_alerting_rules_pass_their_unit_tests() {
    let text = promtool(&deploy().join("prometheus"), &["test", "rules", "alerts.test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn every_alert_has_a_severity_a_summary_a_description_a_for_and_a_test() {
    let rules = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy().join("prometheus/alerts.test.yml")).unwrap();
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&rules).unwrap();
    let documented = documented_metrics();
    let mut names = Vec::new();
    for rule in rules["groups"][0]["rules"].as_sequence().unwrap() {
        let name = rule["alert"].as_str().unwrap();
        assert!(rule["for"].as_str().is_some_and(|f| !f.is_empty()), "{name}: for");
        assert!(rule["labels"]["severity"].as_str().is_some(), "{name}: severity");
        assert!(rule["annotations"]["summary"].as_str().is_some(), "{name}: summary");
        assert!(rule["annotations"]["description"].as_str().is_some(), "{name}: description");
        // Tested firing (an expected alert) and not firing (an empty expectation).
        let fires = tests.contains(&format!("alertname: {name}\n        exp_alerts:\n          - exp_labels"));
        let silent = tests.contains(&format!("alertname: {name}\n        exp_alerts: []"));
        assert!(fires && silent, "{name}: alerts.test.yml must test it firing and not firing");
        // Written against what a node really exports.
        for metric in metrics_in(rule["expr"].as_str().unwrap()) {
            assert!(
                metric == "up" || documented.contains(&metric),
                "{name}: {metric} is not a metric the gateway exports"
            );
        }
        names.push(name.to_owned());
    }
    let contract = [
        "GatewayHighErrorRate",
        "GatewayHealthyTargetsLow",
        "GatewayClusterMemberDown",
        "GatewayConfigDiverged",
        "GatewayEtcdDisconnected",
        "GatewayRedisDown",
        "GatewayRateLimitFallback",
    ];
    assert_eq!(names, contract);
}

/// The metric names of docs/observability.md's table, which lists everything a node exports.
fn documented_metrics() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/observability.md"))
        .expect("docs/observability.md");
    let mut names = BTreeSet::new();
    for line in doc.lines() {
        let Some(first) = line.strip_prefix("| `").and_then(|rest| rest.split(" |").next()) else {
            continue;
        };
        for name in format!("`{first}").split('`').skip(1).step_by(2) {
            names.insert(name.to_owned());
        }
    }
    assert!(names.contains("gateway_http_requests_total"), "the metrics table of docs/observability.md");
    names
}

/// The metric names `expr` reads: identifiers that name a node's series, or Prometheus's `up`.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        // A label name (`code=`, `by (le`) is followed by `=`/`!`/`~` or sits in a grouping;
        // metric names here all start with these prefixes, label names never do.
        if word.starts_with("gateway_") || word.starts_with("process_") || word == "up" {
            names.push(std::mem::take(&mut word));
        }
        word.clear();
    }
    names
}

#[test]
fn the_dashboard_parses_and_queries_only_metrics_the_gateway_exports() {
    let text = std::fs::read_to_string(deploy().join("grafana/gateway.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("gateway.json is JSON");
    assert_eq!(dashboard["uid"], "gateway");
    let documented = documented_metrics();
    let histograms: Vec<&String> = documented.iter().filter(|n| n.ends_with("_ms")).collect();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{title}: gridPos");
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        for target in targets.unwrap_or_else(|| panic!("{title}: no query")) {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("{title}: a target without expr"));
            for name in metrics_in(expr) {
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| histograms.iter().any(|h| h == b)))
                    .unwrap_or(&name);
                assert!(
                    base == "up" || documented.contains(base),
                    "{title}: {name} is not a metric the gateway exports"
                );
            }
            exprs.push((title.to_owned(), expr.to_owned()));
        }
    }
    assert!(exprs.len() >= 20, "{} queries", exprs.len());

    // Each query as a recording rule, so that `promtool check rules` parses its PromQL, with
    // Grafana's variables given values.
    let dir = tests::TempDir::new();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "5m").replace("$job", "gateway");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    std::fs::write(dir.path().join("dashboard.rules.yml"), rules).unwrap();
    let text = promtool(dir.path(), &["check", "rules", "dashboard.rules.yml"]);
    assert!(text.contains(&format!("SUCCESS: {} rules found", exprs.len())), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_a_node_exports_is_documented() {
    let echo = tests::Upstream::start("a").await;
    let yaml = format!(
        "services: [{{ name: s, url: \"http://up\", routes: [{{ name: r, paths: [/] }}] }}]\n\
         upstreams: [{{ name: up, targets: [{{ target: \"{}\" }}] }}]",
        echo.addr
    );
    let gw = tests::Gateway::start(&yaml).await;
    let c = tests::http::HttpClient::new();
    c.get(&gw.url("/")).await;
    let reply = c.get_with(&gw.admin_url("/metrics"), &[("accept", "text/plain")]).await;
    let documented = documented_metrics();
    for line in String::from_utf8_lossy(&reply.body).lines() {
        if let Some(name) = line.strip_prefix("# TYPE ").and_then(|t| t.split(' ').next()) {
            assert!(documented.contains(name), "{name} is exported but not in docs/observability.md's table");
        }
    }
}
