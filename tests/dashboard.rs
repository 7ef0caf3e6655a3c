//! The chart's Grafana dashboard (charts/recur/dashboards/recur.json, shipped by
//! templates/dashboard.yaml): its structure is what Grafana needs (ids, grid positions without
//! overlap, targets, the `${datasource}` variable everywhere), every query selects only series
//! recur exports (names compared with what `Metrics::encode` writes, suffixes included) and only
//! labels those series carry, and the ConfigMap renders only when enabled. No cluster needed
//! (helm renders offline).
//!
//! No JSON schema of Grafana dashboards is available offline (Grafana publishes none for the
//! classic dashboard model; its CUE kinds are not a JSON schema), so (a) checks the structure
//! itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

use recur::metrics::Metrics;
use serde_json::Value;

mod support;

use support::bin_dir;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Labels Prometheus adds to every series of a target (the chart's ServiceMonitor: `job` from
/// app.kubernetes.io/name, `namespace` the operator's, `instance` the pod's address).
const TARGET_LABELS: &[&str] = &["job", "instance", "namespace"];

/// PromQL functions and aggregations the dashboard may call.
const FUNCTIONS: &[&str] = &[
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "label_replace",
    "vector",
    "clamp_min",
    "topk",
];

/// Binary-operator keywords.
const KEYWORDS: &[&str] = &["and", "or", "unless", "offset", "bool"];

/// Keywords followed by a parenthesised list of label names.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn dashboard() -> Value {
    let path = Path::new(REPO).join("charts/recur/dashboards/recur.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

fn panels(dash: &Value) -> &Vec<Value> {
    dash["panels"].as_array().expect("panels is an array")
}

// ------------------------------------------------------------------------------------------------
// (a) Structure

#[test]
fn dashboard_has_the_structure_grafana_needs() {
    let dash = dashboard();
    assert!(
        dash["title"].as_str().is_some_and(|t| !t.is_empty()),
        "title"
    );
    let uid = dash["uid"].as_str().expect("uid");
    assert!(
        !uid.is_empty()
            && uid.len() <= 40
            && uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "uid {uid:?}: at most 40 of [A-Za-z0-9_-]"
    );
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(
        dash.get("id").is_none_or(Value::is_null),
        "a provisioned dashboard has no database id"
    );
    assert!(dash["time"]["from"].is_string() && dash["time"]["to"].is_string());

    // The variables: a Prometheus data source, and query variables that use it.
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names.first(), Some(&"datasource"), "{names:?}");
    assert_eq!(vars[0]["type"], "datasource");
    assert_eq!(vars[0]["query"], "prometheus");
    let unique: BTreeSet<_> = names.iter().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "variable names repeat: {names:?}"
    );
    for v in &vars[1..] {
        assert_eq!(v["type"], "query", "{v}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{v}");
    }

    // The panels: unique ids, known types, on the 24-column grid without overlap, with targets.
    let known = [
        "timeseries",
        "stat",
        "state-timeline",
        "gauge",
        "table",
        "bargauge",
    ];
    let mut ids = BTreeSet::new();
    let mut cells: Vec<(u64, [u64; 4])> = Vec::new();
    for p in panels(&dash) {
        let id = p["id"].as_u64().expect("panel id: a positive integer");
        assert!(id > 0 && ids.insert(id), "panel id {id} repeats or is 0");
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "panel {id} has no title");
        let kind = p["type"].as_str().unwrap_or_default();
        assert!(known.contains(&kind), "panel {id}: type {kind:?}");
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("panel {id}: gridPos.{k}"))
        });
        assert!(w > 0 && h > 0 && x + w <= 24, "panel {id}: gridPos {g}");
        for (other, [ox, oy, ow, oh]) in &cells {
            let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
            assert!(apart, "panels {id} and {other} overlap");
        }
        cells.push((id, [x, y, w, h]));
        assert_eq!(p["datasource"]["type"], "prometheus", "panel {id}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {id}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id} has no target");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "panel {id}: target without expr"
            );
            let r = t["refId"].as_str().expect("refId");
            assert!(refs.insert(r), "panel {id}: refId {r} repeats");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {id}");
        }
    }
    assert!(ids.len() >= 10, "only {} panels", ids.len());

    // No data source hard-coded anywhere (the sidecar substitutes no `${DS_...}` inputs).
    fn visit(at: &str, v: &Value) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    if k == "datasource" {
                        assert!(
                            child["uid"] == "${datasource}"
                                || child.as_str() == Some("${datasource}"),
                            "{at}.datasource is hard-coded: {child}"
                        );
                    }
                    visit(&format!("{at}.{k}"), child);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    visit(&format!("{at}[{i}]"), child);
                }
            }
            Value::String(s) => assert!(!s.contains("${DS_"), "{at}: {s}"),
            _ => {}
        }
    }
    visit("$", &dash);
    assert!(
        dash.get("__inputs").is_none(),
        "__inputs: for the import UI only"
    );
}

#[test]
fn dashboard_shows_what_the_issue_asks_for() {
    let dash = dashboard();
    let exprs: Vec<String> = panels(&dash)
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    let all = exprs.join("\n");
    for needle in [
        "recur_occurrences_total",
        "histogram_quantile(0.5, sum by (kind, le) (rate(recur_firing_lag_seconds_bucket",
        "histogram_quantile(0.9, sum by (kind, le) (rate(recur_firing_lag_seconds_bucket",
        "histogram_quantile(0.99, sum by (kind, le) (rate(recur_firing_lag_seconds_bucket",
        "recur_backend_call_duration_seconds_bucket",
        "recur_backend_call_duration_seconds_count",
        "recur_circuit_breaker_state",
        "recur_leader",
        "recur_work_queue_waiting",
        "recur_pending_occurrences",
        "recur_status_writes_total",
        "recur_reconcile_errors_total",
        "recur_objects",
        "recur_ready",
    ] {
        assert!(all.contains(needle), "no query uses {needle}");
    }
}

// ------------------------------------------------------------------------------------------------
// (b), (c) Series and labels

/// Every series name `Metrics::encode` writes, with its label names, once every family has a
/// sample.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let m = Metrics::new();
    m.reconciled("RecurringTask");
    m.reconcile_failed("RecurringTask", "Invalid");
    m.reconcile_duration("RecurringTask", 0.01);
    m.occurrence("RecurringTask", "delivered");
    m.firing_lag("RecurringTask", 0.2);
    m.backend_call("team-a", "billing", "delivered", 0.04);
    m.breaker_state("team-a", "billing", 2);
    m.set_leader(true);
    m.lease_slack_wait();
    m.watch_error("RecurringTask");
    m.set_pending("RecurringTask", 3);
    m.status_write("RecurringTask", "ok");
    m.event_suppressed("DeliveryFailed");
    m.task_suspended("TooManyFailures");
    m.set_clock_skew(0.5);
    m.set_work_queue_waiting("RecurringTask", "team-a", 2);
    m.completion("accepted");
    m.completion_seconds(30.0);
    m.set_ready(true);
    m.set_objects("RecurringTask", 5, 1);
    let text = m.encode();

    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut families = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap();
        let name = line[..end].to_string();
        let mut labels = BTreeSet::new();
        if line[end..].starts_with('{') {
            let close = line.find('}').unwrap();
            for pair in line[end + 1..close].split(',') {
                labels.insert(pair.split('=').next().unwrap().to_string());
            }
        }
        series.entry(name).or_default().extend(labels);
    }
    // A family without a sample is not written at all: compare with the registered ones.
    for family in m.families() {
        assert!(
            families.contains(family),
            "family {family} has no sample: exercise it above\n{text}"
        );
    }
    for family in &families {
        assert!(
            series.keys().any(|s| s.starts_with(family.as_str())),
            "family {family} has no sample: exercise it above\n{text}"
        );
    }
    assert!(series.keys().all(|s| s.starts_with("recur_")), "{series:?}");
    series
}

/// What one PromQL expression uses.
#[derive(Debug, Default)]
struct Uses {
    /// Series names, each with the label names of its selector.
    selectors: Vec<(String, Vec<String>)>,
    /// Label names of `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
    grouping: Vec<String>,
    /// label_replace's destination labels (made) and source labels (read).
    made: Vec<String>,
    read: Vec<String>,
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A small PromQL scanner: enough for the dashboard's expressions, and strict, so whatever it
/// does not know fails the test rather than slipping through.
fn scan(expr: &str) -> Uses {
    let chars: Vec<char> = expr.chars().collect();
    let mut uses = Uses::default();
    let mut i = 0;
    // label_replace(v, "dst", "repl", "src", "regex"): its string arguments, in order.
    let mut strings: Vec<String> = Vec::new();
    let mut last_series: Option<usize> = None;
    let read_string = |i: &mut usize| -> String {
        let quote = chars[*i];
        let mut s = String::new();
        *i += 1;
        while chars[*i] != quote {
            if chars[*i] == '\\' {
                *i += 1;
            }
            s.push(chars[*i]);
            *i += 1;
        }
        *i += 1;
        s
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            strings.push(read_string(&mut i));
        } else if c == '[' {
            // A range or subquery duration.
            while chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // A selector: name op "value", ...
            let mut labels = Vec::new();
            i += 1;
            loop {
                while chars[i].is_whitespace() || chars[i] == ',' {
                    i += 1;
                }
                if chars[i] == '}' {
                    i += 1;
                    break;
                }
                let start = i;
                while ident_char(chars[i]) {
                    i += 1;
                }
                labels.push(chars[start..i].iter().collect::<String>());
                while matches!(chars[i], '=' | '!' | '~' | ' ') {
                    i += 1;
                }
                read_string(&mut i);
            }
            let at = last_series.unwrap_or_else(|| panic!("selector without a name in {expr}"));
            uses.selectors[at].1.extend(labels);
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = j < chars.len() && chars[j] == '(';
            if GROUPING.contains(&word.as_str()) {
                assert!(call, "{word} without a label list in {expr}");
                let close = j + chars[j..].iter().position(|&c| c == ')').unwrap();
                let list: String = chars[j + 1..close].iter().collect();
                uses.grouping.extend(
                    list.split(',')
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from),
                );
                i = close + 1;
            } else if FUNCTIONS.contains(&word.as_str()) {
                // An aggregation may put its `by (...)` before the parenthesis.
            } else if call {
                panic!("unknown function {word} in {expr}");
            } else if !KEYWORDS.contains(&word.as_str()) {
                uses.selectors.push((word, Vec::new()));
                last_series = Some(uses.selectors.len() - 1);
            }
        } else {
            assert!("()+-*/%^=!<>,".contains(c), "unexpected {c:?} in {expr}");
            i += 1;
        }
    }
    if expr.contains("label_replace") {
        assert_eq!(
            strings.len() % 4,
            0,
            "label_replace takes four strings: {expr}"
        );
        for args in strings.chunks(4) {
            uses.made.push(args[0].clone());
            uses.read.push(args[2].clone());
        }
    }
    uses
}

/// Every `expr` of the panels, with the panel's id and the target's legend.
fn queries(dash: &Value) -> Vec<(u64, String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                p["id"].as_u64().unwrap(),
                t["expr"].as_str().unwrap().to_string(),
                t["legendFormat"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

/// Grafana's variables in an expression, as the values they stand for in the scan.
fn expand(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
}

/// What is wrong with one query (empty: nothing), and the series it uses.
fn problems(
    expr: &str,
    legend: &str,
    series: &BTreeMap<String, BTreeSet<String>>,
) -> (Vec<String>, Vec<String>) {
    let mut found = Vec::new();
    let mut used = Vec::new();
    let uses = scan(&expand(expr));
    if uses.selectors.is_empty() {
        found.push("no series".to_string());
    }
    let mut available: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
    for (name, labels) in &uses.selectors {
        if !name.starts_with("recur_") {
            found.push(format!("{name} is not a recur series"));
        }
        let Some(own) = series.get(name) else {
            found.push(format!("recur does not export {name}"));
            continue;
        };
        for l in labels {
            if !own.contains(l) && !TARGET_LABELS.contains(&l.as_str()) {
                found.push(format!("{name} has no label {l} (it has {own:?})"));
            }
        }
        // A series' own `namespace` (the tenant) is `exported_namespace` once the target's
        // namespace wins (the ServiceMonitor's default).
        if own.contains("namespace") {
            available.insert("exported_namespace".to_string());
        }
        available.extend(own.iter().cloned());
        used.push(name.clone());
    }
    for l in &uses.read {
        if !available.contains(l) {
            found.push(format!("label_replace reads {l}, which no series has"));
        }
    }
    available.extend(uses.made.iter().cloned());
    for l in &uses.grouping {
        if !available.contains(l) {
            found.push(format!("no series has label {l}"));
        }
    }
    // The legend names only labels the result keeps.
    let mut rest = legend;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}").map(|e| e + start) else {
            found.push(format!("legend {legend:?} is not closed"));
            break;
        };
        let label = rest[start + 2..end].trim();
        if !uses.grouping.iter().any(|g| g == label) {
            found.push(format!(
                "legend {legend:?} names {label}, which the query does not keep"
            ));
        }
        rest = &rest[end + 2..];
    }
    (found, used)
}

#[test]
fn every_query_uses_only_series_and_labels_recur_exports() {
    let series = exported();
    let dash = dashboard();
    let mut used = BTreeSet::new();
    for (id, expr, legend) in queries(&dash) {
        let (found, names) = problems(&expr, &legend, &series);
        assert!(found.is_empty(), "panel {id}: {}\n{expr}", found.join("\n"));
        used.extend(names);
    }
    assert!(used.len() >= 9, "{used:?}");

    // The query variables too: label_values(<series>, <label>).
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().expect("query.query");
        assert_eq!(v["definition"].as_str(), Some(q), "{v}");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {q}"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let uses = scan(selector);
        assert_eq!(uses.selectors.len(), 1, "{q}");
        let (name, labels) = &uses.selectors[0];
        let own = series
            .get(name)
            .unwrap_or_else(|| panic!("{q}: no series {name}"));
        for l in labels.iter().map(String::as_str).chain([label.trim()]) {
            assert!(
                own.contains(l) || TARGET_LABELS.contains(&l),
                "{q}: {name} has no label {l}"
            );
        }
    }
}

#[test]
fn the_scanner_rejects_what_recur_does_not_export() {
    let series = exported();
    let uses = scan("sum by (instance) (up{job=\"recur\"}) or vector(0)");
    assert_eq!(uses.selectors[0].0, "up");
    assert!(!series.contains_key("up"));
    let uses = scan("rate(recur_occurrences_total{outcome=\"x\"}[5m])");
    assert_eq!(
        uses.selectors,
        vec![(
            "recur_occurrences_total".to_string(),
            vec!["outcome".to_string()]
        )]
    );
    assert!(series.contains_key("recur_occurrences_total"));
    assert!(!series.contains_key("recur_occurrences"));
    assert!(series["recur_firing_lag_seconds_bucket"].contains("le"));
    assert!(!series["recur_occurrences_total"].contains("namespace"));

    // What the dashboard's test refuses.
    for (expr, legend) in [
        ("sum(up{job=\"recur\"})", ""),
        ("rate(recur_occurrences[5m])", ""),
        ("sum by (app_id) (rate(recur_occurrences_total[5m]))", ""),
        ("recur_occurrences_total{app_id=\"x\"}", ""),
        ("sum by (kind) (recur_pending_occurrences)", "{{outcome}}"),
        (
            "label_replace(recur_leader, \"t\", \"$1\", \"exported_namespace\", \"(.+)\")",
            "",
        ),
    ] {
        let (found, _) = problems(expr, legend, &series);
        assert!(!found.is_empty(), "{expr} {legend} passes");
    }
    let (found, _) = problems(
        "sum by (tenant) (label_replace(recur_work_queue_waiting, \"tenant\", \"$1\", \"exported_namespace\", \"(.+)\"))",
        "{{tenant}}",
        &series,
    );
    assert!(found.is_empty(), "{found:?}");
}

// ------------------------------------------------------------------------------------------------
// (d) The ConfigMap

/// The documents `helm template` renders with `args`, as JSON.
fn render(args: &[&str]) -> Vec<Value> {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(bin_dir().join("helm"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env_remove("HELM_KUBECONTEXT")
        .env_remove("HELM_NAMESPACE")
        .args(["template", "dash"])
        .arg(Path::new(REPO).join("charts/recur"))
        .args(["--namespace", "ops"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml)
        .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{yaml}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn dashboards(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter(|d| d["kind"] == "ConfigMap" && d["data"].get("recur.json").is_some())
        .collect()
}

#[test]
fn the_dashboard_configmap_renders_only_when_enabled() {
    assert!(dashboards(&render(&[])).is_empty(), "rendered by default");

    let docs = render(&["--set", "dashboard.enabled=true"]);
    let maps = dashboards(&docs);
    assert_eq!(maps.len(), 1);
    let cm = maps[0];
    assert_eq!(cm["metadata"]["name"], "dash-recur-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "ops");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["labels"]["app.kubernetes.io/name"], "recur");
    assert!(cm["metadata"].get("annotations").is_none(), "{cm}");
    let shipped: Value = serde_json::from_str(cm["data"]["recur.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        shipped,
        dashboard(),
        "the ConfigMap carries dashboards/recur.json as it is"
    );

    // The sidecar's label, folder annotation and namespace are the user's to choose.
    let docs = render(&[
        "--set",
        "dashboard.enabled=true",
        "--set",
        "dashboard.labels.grafana_dashboard=null",
        "--set",
        "dashboard.labels.dashboards=recur",
        "--set",
        "dashboard.annotations.grafana_folder=Operators",
        "--set",
        "dashboard.namespace=monitoring",
        "--set",
        "commonAnnotations.team=platform",
    ]);
    let cm = dashboards(&docs)[0];
    let meta = &cm["metadata"];
    assert_eq!(meta["namespace"], "monitoring");
    assert_eq!(meta["labels"]["dashboards"], "recur");
    assert!(meta["labels"].get("grafana_dashboard").is_none(), "{meta}");
    assert_eq!(meta["annotations"]["grafana_folder"], "Operators");
    assert_eq!(meta["annotations"]["team"], "platform");
}

/// Every query, its Grafana variables replaced, is PromQL that Prometheus' own parser accepts
/// (`promtool check rules` on a rules file with one alert per query).
#[test]
fn every_query_parses_as_promql() {
    let dash = dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, (id, expr, _)) in queries(&dash).into_iter().enumerate() {
        let expr = expand(&expr)
            .replace("$job", ".+")
            .replace("$namespace", ".+");
        assert!(
            !expr.contains('$') || expr.contains("\"$1\""),
            "panel {id}: {expr}"
        );
        let quoted = serde_json::to_string(&expr).unwrap();
        rules.push_str(&format!(
            "      - alert: Panel{id}Query{n}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.rules.yaml");
    std::fs::write(&file, &rules).unwrap();
    let out = Command::new(bin_dir().join("promtool"))
        .args(["check", "rules"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
