//! The monitoring files of `deploy/` on their own: the alerting rules checked and unit-tested by
//! `promtool` (Debian's `prometheus` package, which scripts/test installs), and the Grafana
//! dashboard's JSON and the metrics its queries name.

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
