//! The chart's alerting rules (charts/recur/templates/prometheusrule.yaml): tests/alerts/check.sh
//! renders them as they ship and runs `promtool check rules` and the promtool unit tests of
//! tests/alerts/*.test.yaml (promtool is built from the pinned Prometheus module,
//! tests/cluster/prometheus). And the PrometheusRule is off by default, and its values work.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output, Stdio};

mod support;

use support::bin_dir;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template` of the chart with `args`, in a helm home of its own; the whole output.
fn template(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(bin_dir().join("helm"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env_remove("HELM_NAMESPACE")
        .args(["template", "recur", &format!("{REPO}/charts/recur")])
        .args(["--namespace", "recur-system"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn rendered(args: &[&str]) -> String {
    let out = template(args);
    assert!(
        out.status.success(),
        "helm template {args:?}: {}",
        show(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn prometheus_rules(yaml: &str) -> usize {
    yaml.lines()
        .filter(|l| *l == "kind: PrometheusRule")
        .count()
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let out = Command::new(format!("{REPO}/tests/alerts/check.sh"))
        .env("RECUR_BIN_DIR", bin_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // promtool's own report, in the test's output (shown with --nocapture or on failure).
    println!("{}", show(&out));
    assert!(
        out.status.success(),
        "tests/alerts/check.sh failed:\n{}",
        show(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("SUCCESS"),
        "promtool reported no SUCCESS:\n{stdout}"
    );
}

#[test]
fn no_prometheus_rule_unless_enabled() {
    assert_eq!(prometheus_rules(&rendered(&[])), 0, "rendered by default");
    // Not even with the ServiceMonitor on.
    assert_eq!(
        prometheus_rules(&rendered(&["--set", "serviceMonitor.enabled=true"])),
        0
    );
    assert_eq!(
        prometheus_rules(&rendered(&["--set", "prometheusRule.enabled=true"])),
        1
    );
}

#[test]
fn prometheus_rule_values_reach_the_rules() {
    let yaml = rendered(&[
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.labels.release=kube-prometheus",
        "--set",
        "prometheusRule.ruleLabels.team=platform",
        "--set-string",
        "prometheusRule.seriesSelector=job=\"ops-recur\"",
        "--set",
        "prometheusRule.runbookBaseUrl=https://wiki.example/recur",
        "--set",
        "prometheusRule.firingLagP99Seconds=120",
        "--set",
        "prometheusRule.breakerOpenMinutes=30",
        "--set",
        "prometheusRule.severities.RecurNoLeader=page",
        "--show-only",
        "templates/prometheusrule.yaml",
    ]);
    for want in [
        "    release: kube-prometheus\n",
        "            team: platform\n",
        "recur_shards_held{job=\"ops-recur\"}",
        "runbook_url: https://wiki.example/recur#recurnoleader\n",
        "              > 120\n",
        "          for: 30m\n",
        "            severity: page\n",
    ] {
        assert!(yaml.contains(want), "{want:?} not in\n{yaml}");
    }
    assert!(!yaml.contains("namespace=\"recur-system\""), "{yaml}");
    assert_eq!(yaml.matches("            team: platform\n").count(), 7);
    // With shards, every shard's Lease must have a holder.
    let sharded = rendered(&[
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "leaderElection.shards=4",
        "--show-only",
        "templates/prometheusrule.yaml",
    ]);
    assert!(
        sharded.contains("(recur_shards_held{job=\"recur\",namespace=\"recur-system\"}) < 4\n"),
        "{sharded}"
    );
}

#[test]
fn schema_refuses_wrong_prometheus_rule_values() {
    for (what, flag, set) in [
        (
            "a fractional breakerOpenMinutes",
            "--set",
            "prometheusRule.breakerOpenMinutes=2.5",
        ),
        (
            "a ratio above 1",
            "--set",
            "prometheusRule.occurrenceFailureRatio=2",
        ),
        (
            "a zero lag threshold",
            "--set",
            "prometheusRule.firingLagP99Seconds=0",
        ),
        ("an unknown key", "--set", "prometheusRule.nope=1"),
        (
            "an unknown alert",
            "--set",
            "prometheusRule.severities.RecurNope=page",
        ),
        (
            "a brace in the selector",
            "--set-string",
            "prometheusRule.seriesSelector=job=\"x\"}",
        ),
        (
            "an anchor in the runbook URL",
            "--set",
            "prometheusRule.runbookBaseUrl=https://x/r.md#a",
        ),
    ] {
        let out = template(&["--set", "prometheusRule.enabled=true", flag, set]);
        assert!(!out.status.success(), "{what} ({set}) was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "{what}: not a schema error:\n{stderr}"
        );
    }
}
